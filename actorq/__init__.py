"""actorq: a NUMA-aware actor runtime for Linux multicore machines.

Public API only; everything is re-exported from the modules that own it.
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
from .errors import ForkedClient as ForkedClient
from .errors import NoRuntime as NoRuntime
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
    "serve_forever": "._api",
    "sleep": "._api",
    "connect": ".client",
    "connect_async": ".client",
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
    from ._api import serve_forever as serve_forever
    from ._api import sleep as sleep
    from ._hosting import HostedRuntime as HostedRuntime
    from ._hosting import start as start
    from .client import connect as connect
    from .client import connect_async as connect_async


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
    "ForkedClient",
    "HostedRuntime",
    "NoRuntime",
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
    "connect_async",
    "current_loop",
    "run",
    "runtime",
    "self_ref",
    "serve_forever",
    "sleep",
    "start",
]


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
