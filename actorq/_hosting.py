"""Hosting a runtime inside a program: ``actorq.start`` and its handle.

``actorq.run(main)`` blocks until ``main`` returns; a web server, a test or a
script that already has its own main loop needs a runtime that starts, stays
up beside it, and stops when told. ``start`` runs the supervisor in a
background thread of this process (its workers and the optional ``main``
still run in processes of their own) and returns once every worker is up::

    with actorq.start(workers=2) as rt:          # or: async with actorq.start(...)
        client = rt.connect()
        hits = client.spawn(Counter, name="hits")
        hits.add(5)
    # leaving the block stops the runtime in order and waits for it

A hosted runtime leaves signals to the host program (stop it with
``rt.stop()``); its children die with the hosting thread if the host is
killed.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, overload

from .client import AsyncClient, Client

_READY_WAIT = 60.0  # seconds start() waits for every worker to say hello


class HostedRuntime:
    """A runtime running in a background thread (see the module docstring)."""

    def __init__(self, sup: Any, thread: threading.Thread, outcome: dict[str, Any]) -> None:
        self._sup = sup
        self._thread = thread
        self._outcome = outcome

    @property
    def address(self) -> str:
        """The control address for ``actorq.connect`` (from any process)."""
        return str(self._sup.address)

    @property
    def runtime_dir(self) -> Path:
        return Path(self._sup.runtime_dir)

    @property
    def workers(self) -> list[int]:
        """The CPU of each worker, in worker order."""
        return list(self._sup.worker_cpus)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @overload
    def connect(
        self, *, asyncio: Literal[False] = False, timeout: float | None = ..., direct: bool = ...
    ) -> Client: ...

    @overload
    def connect(
        self, *, asyncio: Literal[True], timeout: float | None = ..., direct: bool = ...
    ) -> AsyncClient: ...

    def connect(
        self, *, asyncio: bool = False, timeout: float | None = 30.0, direct: bool = True
    ) -> Any:
        """A client of this runtime (blocking, or asyncio with ``asyncio=True``);
        see ``actorq.connect``."""
        if asyncio:
            return AsyncClient(self.address, timeout, direct=direct)
        return Client(self.address, timeout, direct=direct)

    def request_stop(self) -> None:
        """Begin an orderly stop without waiting for it (from any thread)."""
        if self._thread.is_alive():
            self._sup.request_stop()

    def stop(self, timeout: float | None = None) -> Any:
        """Stop in order (like SIGTERM) and wait; returns ``main``'s value if there was one."""
        if self._thread.is_alive():
            self._sup.request_stop()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> Any:
        """Wait for the runtime to end (``main`` returned, or a stop); its result."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the runtime at {self.address} did not stop within {timeout} s")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome.get("value")

    def __enter__(self) -> HostedRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> HostedRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<HostedRuntime {state} at {self._sup.runtime_dir}, workers on {self.workers}>"


def start(
    main: Callable[[Any], Awaitable[Any]] | None = None,
    *,
    workers: int | None = None,
    cpus: Any = None,
    config: str | None = None,
    cwd: str = ".",
    **options: Any,
) -> HostedRuntime:
    """Start a runtime in the background and return once every worker is up.

    Options as in ``actorq.run``. With ``main``, it runs in its own process as
    under ``actorq.run`` and ``join()`` returns its value (the runtime stops
    when it returns); without, the runtime serves until ``stop()``.
    """
    from ._api import check_main
    from ._runtime.supervisor import Supervisor, make_config

    if main is not None:
        why = check_main(main)
        if why is not None:
            raise TypeError(why)
    sup = Supervisor(make_config(workers, cpus, config, cwd, options), main, handle_signals=False)
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            sup.start()
        except BaseException as exc:
            sup.abort_start()
            outcome["error"] = exc
            sup.ready_event.set()
            return
        try:
            outcome["value"] = sup.run()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, name="actorq-supervisor", daemon=True)
    thread.start()
    if not sup.ready_event.wait(_READY_WAIT):
        sup.request_stop()
        thread.join(_READY_WAIT)
        raise RuntimeError(f"the runtime did not come up within {_READY_WAIT:.0f} s")
    if not sup.up:  # it failed to start: the thread ends with the reason
        thread.join(_READY_WAIT)
        raise outcome.get("error") or RuntimeError("the runtime stopped before it was up")
    return HostedRuntime(sup, thread, outcome)
