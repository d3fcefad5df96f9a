"""asyncio's event-loop interface on actorq's loop core, so asyncio libraries
run unchanged on the worker's loop (and any asyncio program on ours).

Why a face and not a subclass
=============================
:class:`AsyncioLoop` wraps a :class:`~actorq.loop.core.Loop` (its *core*) and
shares its ready queue, timer buckets and epoll set; ``run_forever`` on the
face runs the core's one turn function. The core keeps its own API and its
contracts, which differ from asyncio's under the same names:

- ``core.add_reader`` is *edge-triggered*: the callback must drain the fd, or
  return ``True`` to be called again. asyncio promises its callers
  *level-triggered* readiness (a callback that reads one record of many is
  called again), and libraries rely on it, so the face's ``add_reader`` and
  ``add_writer`` register the fd level-triggered. Transports this module
  makes (``_transports.py``) are our own code and stay edge-triggered,
  following the drain rules in ``core.py``.
- ``core.call_soon`` runs a callback as is; asyncio's runs it in a
  ``contextvars`` context (copied at the call, or the one given).
- ``core.create_future`` is an actorq ``Future``; the face's is an asyncio one.

Keeping the names apart means the runtime (rings, node, actors) runs on the
core at its own speed, and asyncio code sees exactly asyncio's contract. The
two meet in three places: an actorq ``Future`` reports the face as its loop and
carries asyncio's await flag, so an asyncio Task can await it (an actor ask);
an actorq ``Task`` can await an asyncio future of the face; and with a face
attached, ``core.spawn`` makes asyncio Tasks, so ``asyncio.current_task()``,
``TaskGroup`` and ``asyncio.timeout`` work inside actor methods.
``actorq.Cancelled`` is ``asyncio.CancelledError``: one cancellation.

Not supported (each raises NotImplementedError naming the method): subprocess
transports and ``loop.sendfile`` on transports.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import errno
import functools
import logging
import os
import signal
import socket
import sys
import threading
import warnings
import weakref
from asyncio import events
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._aio_net import NetworkMixin
from ._pipes import ReadPipeTransport, WritePipeTransport
from .core import EPOLLIN, EPOLLOUT, Handle, Loop, TimerHandle, _describe

__all__ = ["AsyncioLoop", "EventLoopPolicy", "install", "new_event_loop", "run"]

T = TypeVar("T")
logger = logging.getLogger("asyncio")  # asyncio's: users configure its logging once

# Threads of the default executor (getaddrinfo, run_in_executor): the bound
# asyncio uses, so a flood of blocking calls queues instead of forking threads.
_EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)


class AioHandle(Handle):
    """A callback with asyncio's ``Handle`` interface. Made as
    ``AioHandle(context.run, (callback, *args))``: the core runs
    ``_fn(*_args)`` as for any handle, and the context is ``_fn.__self__``
    (no more fields: a handle is made per callback)."""

    __slots__ = ()

    def get_context(self) -> contextvars.Context:
        return self._fn.__self__  # type: ignore[attr-defined]

    def _run(self) -> None:
        """Zero-argument form for fd registrations (the core calls it per event)."""
        if not self._cancelled:
            self._fn(*self._args)

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<Handle {_describe(self._args[0])}{state}>"


class AioTimerHandle(TimerHandle):
    """A ``call_later``/``call_at`` handle with asyncio's ``when()`` method."""

    __slots__ = ("_context",)

    def __init__(
        self,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        core: Loop,
        when: float,
        context: contextvars.Context | None,
    ) -> None:
        if context is None:
            context = contextvars.copy_context()
        self._fn = context.run
        self._args = (callback, *args)
        self._cancelled = False
        self._loop = core
        self._when = when
        self._fired = False
        self._context = context

    def when(self) -> float:  # type: ignore[override]
        """The loop time it is (or was) due at (asyncio: a method)."""
        return self._when

    def get_context(self) -> contextvars.Context:
        return self._context

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<TimerHandle when={self._when:.6f} {_describe(self._args[0])}{state}>"


_new_handle = object.__new__


def _handle(callback: Callable[..., Any], args: tuple[Any, ...]) -> AioHandle:
    """A handle that runs in a copy of the current context (asyncio's default)."""
    return AioHandle(contextvars.copy_context().run, (callback, *args))


def _fd_of(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def _noop_signal_handler(signum: int, frame: Any) -> None:
    """Python's C handler writes the signal number to the wakeup fd; the
    loop dispatches it from there (see ``_read_signals``)."""


def _debug_from_env() -> bool:
    return bool(sys.flags.dev_mode) or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


class AsyncioLoop(NetworkMixin, asyncio.AbstractEventLoop):  # type: ignore[misc]
    """An ``asyncio.AbstractEventLoop`` running on an actorq ``Loop`` (see the
    module docstring). ``AsyncioLoop()`` makes its own core; ``AsyncioLoop(loop)``
    gives an existing core (a worker's) its asyncio face."""

    def __init__(self, core: Loop | None = None) -> None:
        if core is None:
            core = Loop()
        if core._facade is not None:
            raise RuntimeError(f"{core!r} already has an asyncio face: {core._facade!r}")
        self._core = core
        core._facade = self
        core._exception_handler = self._core_raised
        self._ready = core._ready
        self._debug = False
        self.set_debug(_debug_from_env())
        self._thread_id: int | None = None
        self._handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None
        self._task_factory: Any = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet[Any] = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._signal_handlers: dict[int, AioHandle] = {}
        self._sig_socks: tuple[socket.socket, socket.socket] | None = None
        self._old_wakeup_fd = -1
        NetworkMixin.__init__(self)

    @property
    def core(self) -> Loop:
        """The actorq loop underneath (its native API: sources, hooks, stats)."""
        return self._core

    def __repr__(self) -> str:
        return (
            f"<AsyncioLoop running={self.is_running()} closed={self.is_closed()} "
            f"debug={self._debug}>"
        )

    # --- running and stopping ------------------------------------------------
    def _check_closed(self) -> None:
        if self._core._closed:
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self._core._running:
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self) -> None:
        self._check_closed()
        self._check_running()
        core = self._core
        old_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        if self._debug:
            sys.set_coroutine_origin_tracking_depth(10)
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
        )
        events._set_running_loop(self)
        if core._stopping:
            # stop() before run_forever(): asyncio runs one turn, then returns
            core._stopping = False
            self._ready.append(Handle(core.stop, ()))
        try:
            core.run_forever()
        finally:
            events._set_running_loop(None)
            self._thread_id = None
            if self._debug:
                sys.set_coroutine_origin_tracking_depth(0)
            sys.set_asyncgen_hooks(*old_hooks)

    def run_until_complete(self, future: Awaitable[T]) -> T:  # type: ignore[override]
        self._check_closed()
        self._check_running()
        new_task = not asyncio.isfuture(future)
        fut: Any = asyncio.ensure_future(future, loop=self)
        if new_task:
            fut._log_destroy_pending = False  # an exception here is re-raised below
        fut.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: we raise it, don't log it as lost
            raise
        finally:
            fut.remove_done_callback(_stop_when_done)
        if not fut.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return fut.result()

    def stop(self) -> None:
        self._core.stop()

    def is_running(self) -> bool:
        return self._core._running

    def is_closed(self) -> bool:
        return self._core._closed

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._core._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        self._close_signal_socks()
        executor, self._default_executor = self._default_executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        self._core.close()

    async def shutdown_asyncgens(self) -> None:
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await asyncio.gather(*[ag.aclose() for ag in agens], return_exceptions=True)
        for result, agen in zip(results, agens, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    def _asyncgen_firstiter_hook(self, agen: Any) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                "loop.shutdown_asyncgens() call",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_default_executor(self) -> None:
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        done = self.create_future()
        thread = threading.Thread(target=self._shut_executor, args=(executor, done))
        thread.start()
        try:
            await done
        finally:
            thread.join()

    def _shut_executor(self, executor: concurrent.futures.Executor, done: Any) -> None:
        try:
            executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_done, done, None)
        except Exception as exc:
            if not self.is_closed():
                self.call_soon_threadsafe(done.set_exception, exc)

    # --- time and callbacks --------------------------------------------------
    def time(self) -> float:
        return self._core._clock()

    def _check_callback(self, callback: Any, method: str) -> None:
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def _check_thread(self) -> None:
        if self._thread_id is not None and self._thread_id != threading.get_ident():
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> AioHandle:
        if self._core._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_soon")
        if context is None:
            context = contextvars.copy_context()
        # (the fields set here, not in an __init__: one Python frame less per callback)
        h = _new_handle(AioHandle)
        h._fn = context.run
        h._args = (callback, *args)
        h._cancelled = False
        self._ready.append(h)
        return h

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> AioHandle:
        if self._core._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_callback(callback, "call_soon_threadsafe")
        if context is None:
            context = contextvars.copy_context()
        h = AioHandle(context.run, (callback, *args))
        self._ready.append(h)  # deque.append is atomic under the GIL
        self._core.wake()
        return h

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> AioTimerHandle:
        if delay is None:
            raise TypeError("delay must not be None")
        return self.call_at(self._core._clock() + delay, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> AioTimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        core = self._core
        if core._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        h = AioTimerHandle(callback, args, core, when, context)
        core._schedule(h, when)
        return h

    # --- futures and tasks ----------------------------------------------------
    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, T] | Any,
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        self._check_closed()
        factory = self._task_factory
        if factory is None:
            task: Any = asyncio.Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        task = factory(self, coro) if context is None else factory(self, coro, context=context)
        if name is not None:
            try:
                task.set_name(name)
            except AttributeError:
                pass
        return task

    def set_task_factory(self, factory: Any) -> None:
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self) -> Any:
        return self._task_factory

    # --- file descriptors (asyncio's contract: level-triggered) ---------------
    def _watch_level(
        self, fd: Any, slot: str, bit: int, callback: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        """``add_reader``/``add_writer``: one level-triggered callback per fd and slot."""
        self._check_closed()
        fdn = _fd_of(fd)
        self._ensure_fd_no_transport(fdn)
        h = _handle(callback, args)
        core = self._core
        e = core._fds.get(fdn)
        if e is None:
            e = core._entry(fdn, "fd")
            e.et = 0
        old = getattr(e, slot)
        if old is not None and isinstance(getattr(old, "__self__", None), AioHandle):
            old.__self__.cancel()
        core._watch(fdn, slot, bit, h._run)

    def _unwatch_level(self, fd: Any, slot: str, bit: int) -> bool:
        """``remove_reader``/``remove_writer``: False when nothing was watched."""
        core = self._core
        if core._closed:
            return False
        fdn = _fd_of(fd)
        self._ensure_fd_no_transport(fdn)
        e = core._fds.get(fdn)
        if e is None:
            return False
        cb = getattr(e, slot)
        if isinstance(getattr(cb, "__self__", None), AioHandle):
            cb.__self__.cancel()
        return core._unwatch(fdn, slot, bit)

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]
        """Call ``callback(*args)`` while ``fd`` is readable (level-triggered, as asyncio)."""
        self._watch_level(fd, "reader", EPOLLIN, callback, args)

    def remove_reader(self, fd: Any) -> bool:
        return self._unwatch_level(fd, "reader", EPOLLIN)

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]
        """Call ``callback(*args)`` while ``fd`` is writable (level-triggered, as asyncio)."""
        self._watch_level(fd, "writer", EPOLLOUT, callback, args)

    def remove_writer(self, fd: Any) -> bool:
        return self._unwatch_level(fd, "writer", EPOLLOUT)

    # --- executor and name resolution ----------------------------------------
    def run_in_executor(  # type: ignore[override]
        self, executor: concurrent.futures.Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            if executor is None:
                if self._executor_shutdown_called:
                    raise RuntimeError("Executor shutdown has been called")
                executor = self._default_executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_EXECUTOR_THREADS, thread_name_prefix="actorq-aio"
                )
        return asyncio.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor: Any) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor")
        self._default_executor = executor

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        # A numeric host and port resolve without I/O: answer inline, no thread hop.
        try:
            return socket.getaddrinfo(
                host,
                port,
                family,
                type,
                proto,
                flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
        except (socket.gaierror, UnicodeError):
            pass
        return await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    # --- signals -----------------------------------------------------------------
    def _check_signal(self, sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]
        """Run ``callback(*args)`` on the loop when ``sig`` arrives (main thread
        only). Python's own handler writes the signal number to a wakeup
        socket the loop watches (``signal.set_wakeup_fd``)."""
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if self._sig_socks is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._sig_socks = (rsock, wsock)
            self._core._watch(rsock.fileno(), "reader", EPOLLIN, self._read_signals)
            self._core.label(rsock.fileno(), "signal")
        try:
            old = signal.set_wakeup_fd(self._sig_socks[1].fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        if old not in (-1, self._sig_socks[1].fileno()):
            self._old_wakeup_fd = old
        self._signal_handlers[sig] = _handle(callback, args)
        try:
            signal.signal(sig, _noop_signal_handler)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._restore_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def _read_signals(self) -> None:
        """Drain the wakeup socket (a stream: a short read has drained it)."""
        assert self._sig_socks is not None
        rsock = self._sig_socks[0]
        while True:
            try:
                data = rsock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            for signum in data:
                h = self._signal_handlers.get(signum)
                if h is not None and not h._cancelled:
                    self._ready.append(h)
            if len(data) < 4096:
                return

    def remove_signal_handler(self, sig: int) -> bool:
        self._check_signal(sig)
        if self._signal_handlers.pop(sig, None) is None:
            return False
        handler: Any = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not self._signal_handlers:
            self._restore_wakeup_fd()
        return True

    def _restore_wakeup_fd(self) -> None:
        try:
            signal.set_wakeup_fd(self._old_wakeup_fd)
        except (ValueError, OSError) as exc:
            logger.info("could not restore the signal wakeup fd: %s", exc)
        self._old_wakeup_fd = -1

    def _close_signal_socks(self) -> None:
        socks, self._sig_socks = self._sig_socks, None
        if socks is not None:
            self._core._unwatch(socks[0].fileno(), "reader", EPOLLIN)  # before close
            socks[0].close()
            socks[1].close()

    # --- errors and debugging ---------------------------------------------------
    def get_exception_handler(self) -> Any:
        return self._handler

    def set_exception_handler(self, handler: Any) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        message = context.get("message") or "Unhandled exception in event loop"
        exc = context.get("exception")
        exc_info: Any = (type(exc), exc, exc.__traceback__) if exc is not None else False
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            lines.append(f"{key}: {context[key]!r}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        handler = self._handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an "
                    "unexpected error in custom exception handler",
                    exc_info=True,
                )

    def _core_raised(self, exc: BaseException, what: Any) -> None:
        """A callback on the core raised: asyncio's exception handler hears of
        asyncio callbacks; the core's own (the runtime's) are logged as before."""
        h = what if isinstance(what, Handle) else getattr(what, "__self__", None)
        if not isinstance(h, (AioHandle, AioTimerHandle)):
            self._core._exception_handler = None
            try:
                self._core._callback_raised(exc, what)
            finally:
                self._core._exception_handler = self._core_raised
            return
        context: dict[str, Any] = {
            "message": f"Exception in callback {_describe(what)}",
            "exception": exc,
        }
        context["handle"] = h
        self.call_exception_handler(context)

    def get_debug(self) -> bool:
        return self._debug

    def set_debug(self, enabled: bool) -> None:
        self._debug = bool(enabled)
        if self._debug and self._core._slow > 0.1:
            self._core._slow = 0.1
        if self.is_running():
            sys.set_coroutine_origin_tracking_depth(10 if self._debug else 0)

    @property
    def slow_callback_duration(self) -> float:
        """Seconds after which a callback holding the loop is logged (the core's
        ``slow_callback``; unlike asyncio, logged outside debug mode too)."""
        return self._core._slow

    @slow_callback_duration.setter
    def slow_callback_duration(self, seconds: float) -> None:
        self._core._slow = seconds

    # --- pipes ----------------------------------------------------------------------
    async def connect_read_pipe(self, protocol_factory: Any, pipe: Any) -> tuple[Any, Any]:
        return await self._transport_made(
            protocol_factory, functools.partial(ReadPipeTransport, self, pipe)
        )

    async def connect_write_pipe(self, protocol_factory: Any, pipe: Any) -> tuple[Any, Any]:
        return await self._transport_made(
            protocol_factory, functools.partial(WritePipeTransport, self, pipe)
        )

    # --- not supported ------------------------------------------------------------
    def _unsupported(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"AsyncioLoop.{what} is not supported by actorq's loop")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unsupported("subprocess_shell")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unsupported("subprocess_exec")

    async def sendfile(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unsupported("sendfile")


def _stop_when_done(fut: Any) -> None:
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return  # run_forever re-raises it; stopping would hide it
    fut.get_loop().stop()


def _set_result_unless_done(fut: Any, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


# --- what uvloop offers ----------------------------------------------------------
def new_event_loop() -> AsyncioLoop:
    """A new asyncio event loop on a new actorq loop core."""
    return AsyncioLoop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making actorq loops: ``asyncio.set_event_loop_policy(
    actorq.loop.EventLoopPolicy())`` runs every ``asyncio.run`` on actorq's loop."""

    def new_event_loop(self) -> AsyncioLoop:
        return AsyncioLoop()


def install() -> None:
    """Make actorq's loop asyncio's default (sets the policy)."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on a new actorq loop."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
