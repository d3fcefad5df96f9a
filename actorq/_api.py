"""The runtime handle users write against: ``Runtime``, ``run``, and helpers.

``main(rt)`` and actors reach the runtime through a ``Runtime``; spawn,
lookup and stats travel to the supervisor over the control plane. Actors and
refs themselves live in ``_actor`` (which the runtime processes import
without importing this module).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._actor import ActorRef, ctx, spawn_body

if TYPE_CHECKING:
    from ._runtime.node import Node

T = TypeVar("T")


def runtime() -> Runtime:
    """The Runtime of this process (inside an actor or the main coroutine)."""
    if ctx.runtime is None:
        if ctx.node is None:
            raise RuntimeError("actorq.runtime(): not inside an actorq worker or actorq.run()")
        ctx.runtime = Runtime(ctx.node)
    return ctx.runtime


def self_ref() -> ActorRef:
    """The ref of the actor whose method is running now."""
    if ctx.actor is None:
        raise RuntimeError("actorq.self_ref(): no actor method is running")
    return ctx.actor


def current_loop() -> Any:
    """This worker's event loop (add listening sockets to it with add_reader/add_source)."""
    from .loop import current_loop as _cl

    return _cl()


def sleep(delay: float) -> Awaitable[None]:
    """Suspend the calling coroutine for ``delay`` seconds without blocking the worker."""
    from .loop import sleep as _sleep

    return _sleep(delay)


async def serve_forever() -> None:
    """Wait until the runtime stops: the last line of a ``main`` that only sets
    up actors for others to use (web workers, scripts, ``actorq.connect``)::

        async def main(rt):
            await rt.spawn(Counter, name="hits")
            await actorq.serve_forever()   # until SIGTERM/SIGINT or rt.shutdown()

    It returns never; the runtime cancels it when it stops (an orderly stop
    then ends with exit code 0)."""
    from .loop import current_loop as _cl

    await _cl().create_future()


# --- the runtime handle ----------------------------------------------------------


class Runtime:
    """What ``main(rt)`` and actors use to spawn, find and inspect actors.

    The same object shape exists in the supervisor (where ``main`` runs) and in
    each worker (``actorq.runtime()`` inside an actor); requests from a worker
    travel to the supervisor over the control socket.
    """

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def workers(self) -> list[int]:
        """The CPU of each worker, in worker order (worker i+1 runs on ``workers[i]``)."""
        return list(self._node.worker_cpus)

    @property
    def address(self) -> str:
        """The control address outside processes pass to ``actorq.connect``."""
        return self._node.address

    async def spawn(
        self,
        cls: type,
        *args: Any,
        name: str | None = None,
        kwargs: dict[str, Any] | None = None,
        **hints: Any,
    ) -> ActorRef:
        """Create an actor on a worker chosen by placement; returns its ref.

        ``args``/``kwargs`` go to ``__init__`` (copied through msgpack); keyword
        options are placement hints (``cpu=3`` pins it to the worker on CPU 3).
        """
        body = spawn_body(cls, args, name, kwargs, hints)
        reply = await self._node.control_request("spawn", body)
        return ActorRef(reply["id"], body["cls"], name)

    async def lookup(self, name: str) -> ActorRef:
        """The ref of the actor registered under ``name``; ActorNotFound if none."""
        reply = await self._node.control_request("lookup", {"name": name})
        return ActorRef(reply["id"], reply["cls"], name)

    async def stats(self) -> dict[str, Any]:
        """Where every actor lives, message counters, dead letters, per worker."""
        # the supervisor's answer: decoded from msgpack (or its own dict, in main), so Any
        return cast(dict[str, Any], await self._node.control_request("stats", {}))

    def shutdown(self) -> None:
        """Begin an orderly shutdown of the whole runtime (like SIGTERM)."""
        self._node.request_shutdown()


def run(main: Callable[[Runtime], Awaitable[T]], workers: int | None = None, **options: Any) -> T:
    """Run ``main(rt)`` under a fresh runtime in this process; returns what main returns.

    Options as in ``actorq run``: ``workers``, ``cpus`` (list or "0-3"),
    ``log_level``, ``runtime_dir``, ``explain``, ``stop_timeout``, ``ask_timeout``,
    ``config``.
    """
    from ._runtime.supervisor import run_main

    why = check_main(main)
    if why is not None:
        raise TypeError(why)
    if threading.current_thread() is not threading.main_thread():
        return _run_in_thread(main, workers, options)
    # main's value comes back through the supervisor, which keeps it as Any
    return cast(T, run_main(main, workers=workers, **options))


def _run_in_thread(
    main: Callable[[Runtime], Awaitable[T]], workers: int | None, options: dict[str, Any]
) -> T:
    """``run`` from a thread other than the main one. When the program ends,
    the interpreter joins its non-daemon threads, and this one would wait for a
    ``main`` that may never return: so the runtime is asked to stop first, as
    on SIGTERM (signals reach only the main thread)."""
    from ._hosting import start

    rt = start(main, workers=workers, **options)
    stop_at_exit = getattr(threading, "_register_atexit", None)  # CPython >= 3.9
    if stop_at_exit is not None:
        try:
            stop_at_exit(rt.request_stop)
        except RuntimeError:  # the interpreter is shutting down already
            rt.request_stop()
    return cast(T, rt.join())


def check_main(main: Any) -> str | None:
    """Why ``main`` cannot be a runtime's main coroutine function, or None if it can."""
    if not callable(main):
        return f"{main!r} is not callable"
    if not inspect.iscoroutinefunction(main):
        return (
            f"{getattr(main, '__qualname__', main)} must be an async function: async def main(rt)"
        )
    try:
        inspect.signature(main).bind(object())
    except TypeError:
        return (
            f"{main.__qualname__} must take exactly one argument, the runtime: async def main(rt)"
        )
    return None
