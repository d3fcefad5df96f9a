"""actorq: a NUMA-aware actor runtime for Linux multicore machines.

One pinned worker process per core, each with its own epoll loop; actor
messages travel between workers over shared-memory rings. A first program::

    import actorq

    @actorq.actor
    class Counter:
        def __init__(self, start: int = 0) -> None:
            self.value = start

        def add(self, n: int = 1) -> int:
            self.value += n
            return self.value

    async def main(rt: actorq.Runtime) -> None:
        c = await rt.spawn(Counter, 10, name="hits")
        print(await c.add(5))       # ask: awaits the reply (15)
        c.add.tell(1)               # tell: fire and forget

    actorq.run(main)                # or, from a shell: actorq run app:main

The API, by what you do with it:

- declare actors: ``actor`` (a class decorator; hints: restart, mailbox,
  reentrant, group, state ...); talk to one through an ``ActorRef``, whose
  attributes are its methods (``dir(ref)`` lists them, ``help(ref.add)``
  shows the method's docstring);
- run: ``run(main)`` starts a runtime, runs ``main(rt)`` and stops it;
  ``start()`` hosts one inside an existing program (``HostedRuntime``);
  ``Runtime`` is ``rt``: ``spawn``, ``lookup``, ``stats``, ``shutdown``;
- inside an actor: ``runtime()``, ``self_ref()``, ``sleep()``,
  ``current_loop()`` (the worker's epoll loop, to serve sockets);
- from another process: ``connect(address)`` (``rt.address``);
- errors: ``ActorqError`` and its subclasses (``RemoteError``, ``ActorDied``,
  ``Deadlock``, ``Overloaded`` ...).

The command line: ``actorq run``, ``actorq topology``, ``actorq place``,
``actorq stats`` (``actorq --help``). The runtime's names are imported on
first use, so ``import actorq`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import ActorDied as ActorDied
from .errors import ActorError as ActorError
from .errors import ActorNotFound as ActorNotFound
from .errors import ActorqError as ActorqError
from .errors import ActorqTopologyError as ActorqTopologyError
from .errors import Cancelled as Cancelled
from .errors import ConfigError as ConfigError
from .errors import Deadlock as Deadlock
from .errors import Overloaded as Overloaded
from .errors import PayloadTooLarge as PayloadTooLarge
from .errors import PlacementError as PlacementError
from .errors import RemoteError as RemoteError
from .errors import RingCorrupt as RingCorrupt
from .errors import RingFull as RingFull
from .errors import ShutdownTimeout as ShutdownTimeout

__version__ = "0.1.0"

# The runtime's names are imported on first use: they pull in zmq and the
# runtime (~60 ms), which `actorq topology` and `actorq place` never need.
_LAZY: dict[str, str] = {
    "ActorRef": "._actor",
    "Runtime": "._api",
    "actor": "._actor",
    "current_loop": "._api",
    "run": "._api",
    "runtime": "._api",
    "self_ref": "._api",
    "sleep": "._api",
    "connect": ".client",
    "start": "._hosting",
    "HostedRuntime": "._hosting",
}

if TYPE_CHECKING:
    from ._actor import ActorRef as ActorRef
    from ._actor import actor as actor
    from ._api import Runtime as Runtime
    from ._api import current_loop as current_loop
    from ._api import run as run
    from ._api import runtime as runtime
    from ._api import self_ref as self_ref
    from ._api import sleep as sleep
    from ._hosting import HostedRuntime as HostedRuntime
    from ._hosting import start as start
    from .client import connect as connect


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actorq' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "ActorDied",
    "ActorError",
    "ActorNotFound",
    "ActorRef",
    "ActorqError",
    "ActorqTopologyError",
    "Cancelled",
    "ConfigError",
    "Deadlock",
    "HostedRuntime",
    "Overloaded",
    "PayloadTooLarge",
    "PlacementError",
    "RemoteError",
    "RingCorrupt",
    "RingFull",
    "Runtime",
    "ShutdownTimeout",
    "actor",
    "connect",
    "current_loop",
    "run",
    "runtime",
    "self_ref",
    "sleep",
    "start",
]


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
