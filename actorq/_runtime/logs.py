"""Logging that never blocks a loop: records go through a bounded queue to a writer thread.

Why: if whoever reads the runtime's stderr stops reading, the pipe fills and
every ``write`` to it blocks. With a plain ``StreamHandler`` that write happens
on the loop thread, so clients stop being served and even SIGTERM (read from a
signalfd on that loop) is never looked at. Here a record is handed to a
bounded queue with ``put_nowait``; a daemon thread formats it and writes it
with ``os.write`` on fd 2. A stuck sink stalls only that thread. Records that
find the queue full are dropped and counted, and once a write gets through
again one line says how many were lost.

The writer writes with ``os.write``, not through ``sys.stderr``, so a thread
stuck in ``write`` holds no Python-level lock (``sys.stderr``'s buffer lock)
that the main thread or interpreter shutdown might need. It starts with every
signal blocked: a process-directed signal must reach the main thread (the
supervisor reads SIGINT/SIGTERM from a signalfd, which only sees signals that
no thread accepts).

Threads do not survive fork. A child gets a fresh queue and writer from an
``os.register_at_fork`` hook, before any of its own code can log (the
parent's queue may have been locked by its writer at the instant of fork, so
it is never touched); ``setup_after_fork`` then names the process.

If the host program configured logging itself (the root logger already has
handlers), its handlers are left alone and only the ``actorq`` logger's level
is set.
"""

from __future__ import annotations

import atexit
import ctypes
import io
import logging
import logging.handlers
import os
import queue
import select
import signal
import sys
import threading
import time
from typing import Any

CAPACITY = 1024  # records waiting for the writer; more are dropped
STOP_TIMEOUT = 0.5  # seconds shutdown waits for the writer to drain

_STOP = object()  # queue sentinel: the writer returns
_PR_SET_NAME = 15


def _format(role: str) -> str:
    tag = f" {role.replace('%', '%%')}" if role else ""
    return f"actorq[%(process)d{tag}] %(levelname)s %(name)s: %(message)s"


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler whose enqueue never waits: a full queue drops the record and counts it."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def handleError(self, record: logging.LogRecord) -> None:
        # The default prints a traceback to sys.stderr, which is the very write
        # that may block; say what went wrong through the queue instead.
        exc = sys.exc_info()[1]
        note = logging.LogRecord(
            "actorq.logs",
            logging.ERROR,
            record.pathname,
            record.lineno,
            "could not log a record from %s (%s:%d): %s: %s; msg=%r",
            (record.name, record.pathname, record.lineno, type(exc).__name__, exc, record.msg),
            None,
        )
        self.enqueue(note)


class LogPipe:
    """A DroppingQueueHandler and the writer thread that drains its queue to ``fd``."""

    def __init__(self, fd: int = 2, role: str = "", capacity: int = CAPACITY) -> None:
        self.fd = fd
        self.capacity = capacity
        self.handler = DroppingQueueHandler(queue.Queue(capacity))
        self.formatter = logging.Formatter(_format(role))
        self.failed = 0  # records the writer could not write at all (EPIPE, EBADF)
        self.reported = 0  # drops already announced
        self.thread: threading.Thread | None = None
        self.start()

    def dropped(self) -> int:
        """Records lost in this process: queue full, or the sink refused them."""
        return self.handler.dropped + self.failed

    def set_role(self, role: str) -> None:
        self.formatter = logging.Formatter(_format(role))

    def start(self) -> None:
        """A fresh queue and writer thread (also after fork: the parent's are not ours)."""
        q: queue.Queue[Any] = queue.Queue(self.capacity)  # LogRecords, then _STOP
        self.handler.queue = q
        self._queue = q  # the same queue, typed: the handler's attribute is only a _QueueLike
        self.thread = threading.Thread(
            target=self._run, args=(q,), name="actorq-log-writer", daemon=True
        )
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self.thread.start()  # inherits the all-blocked mask
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def after_fork_in_child(self) -> None:
        self.handler.dropped = self.failed = self.reported = 0
        self.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Let the writer finish what is queued, waiting at most ``timeout``; True if it did."""
        thread = self.thread
        if thread is None or not thread.is_alive():
            return True
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return False  # the sink is stuck and the queue full: give up on it
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    # --- the writer thread -----------------------------------------------------------------
    def _run(self, q: queue.Queue[Any]) -> None:
        while True:
            record = q.get()
            if record is _STOP:
                return
            try:
                data = (self.formatter.format(record) + "\n").encode("utf-8", "backslashreplace")
            except Exception as exc:  # a record that cannot be formatted is dropped, not fatal
                text = f"actorq[{os.getpid()}] ERROR actorq.logs: unformattable record: {exc!r}\n"
                data = text.encode("utf-8", "backslashreplace")
            if self._write(data) and self.dropped() > self.reported:
                self._announce_drops()

    def _announce_drops(self) -> None:
        total = self.dropped()
        note = logging.LogRecord(
            "actorq.logs",
            logging.WARNING,
            __file__,
            0,
            "%d log records dropped: stderr was not read fast enough (or refused writes)",
            (total - self.reported,),
            None,
        )
        self.reported = total
        self._write((self.formatter.format(note) + "\n").encode())

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:  # someone made the shared fd non-blocking: wait for room
                select.select([], [self.fd], [])
                continue
            except OSError:  # closed or broken: this record is lost
                self.failed += 1
                return False
            view = view[n:]
        return True


_pipe: LogPipe | None = None
_atexit_registered = False


def _level(level: str | int) -> int | str:
    return level.upper() if isinstance(level, str) else level


def setup(level: str | int, *, process_name: str, fd: int = 2) -> None:
    """Configure logging for a runtime process (the supervisor, after reading its config).

    The root logger gets ``level`` and the non-blocking handler, so the app's
    own loggers follow ``--log-level`` too, unless the host program already
    configured logging; then only the ``actorq`` logger's level is set.
    """
    global _pipe, _atexit_registered
    root = logging.getLogger()
    actorq_logger = logging.getLogger("actorq")
    actorq_logger.setLevel(_level(level))
    if _pipe is not None and _pipe.handler in root.handlers:
        _pipe.set_role(process_name)
        if not _pipe.alive():
            _pipe.start()
    elif not root.handlers and not actorq_logger.handlers:
        _pipe = LogPipe(fd, process_name)
        root.addHandler(_pipe.handler)
        logging.captureWarnings(True)  # warnings.showwarning writes to sys.stderr directly
    else:
        return  # embedded: the host's logging setup is not ours to change
    root.setLevel(_level(level))
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(shutdown)


def setup_after_fork(level: str | int, process_name: str) -> None:
    """In a forked child (a worker, the main process): name it and set the levels.

    The log writer was already replaced by the at-fork hook; this sets the
    role shown in each line (``w1``, ``main``), the name ``ps`` shows
    (``actorq-w1``), and makes ``print`` line-buffered so an actor's output
    is not held back until the process exits.
    """
    set_process_name(f"actorq-{process_name}")
    if isinstance(sys.stdout, io.TextIOWrapper):
        try:
            sys.stdout.reconfigure(line_buffering=True)
        except (ValueError, OSError):
            pass
    logging.getLogger("actorq").setLevel(_level(level))
    if _pipe is not None and _pipe.handler in logging.getLogger().handlers:
        _pipe.set_role(process_name)
        logging.getLogger().setLevel(_level(level))


def set_process_name(name: str) -> None:
    """What ``ps``/``top`` show for this process (Linux keeps the first 15 bytes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def dropped() -> int:
    """Log records this process has dropped (0 when logging is the host's)."""
    return _pipe.dropped() if _pipe is not None else 0


def shutdown(timeout: float = STOP_TIMEOUT) -> bool:
    """Write out what is queued, waiting at most ``timeout``; never hangs on a stuck sink."""
    return _pipe.stop(timeout) if _pipe is not None else True


def _after_fork_in_child() -> None:
    if _pipe is not None:
        _pipe.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
