"""asyncio pipe transports (``connect_read_pipe``/``connect_write_pipe``) on
the actorq loop core, edge-triggered like the socket transports.

A pipe (or pty, or stream socket given as a pipe) follows the stream rule: a
read shorter than asked for has drained it, unless the edge carried a hang-up
(the writer closed: the end of file is there and raises no later edge), then
we read on to EOF. A pty master reads ``EIO`` once its slave is closed: that
is its end of file. The write end watches for the reader going away: a pipe
whose read end closed reports ``EPOLLERR`` on the write end.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import warnings
from typing import Any

from ._transports import (
    _HUNG_UP,
    _MAX_READ,
    _READ_BITS,
    _announce,
    _FlowControl,
    _report,
    _TransportBase,
)
from .core import EPOLLIN, EPOLLOUT, Handle, _again

logger = logging.getLogger("asyncio")

_READS_PER_EDGE = 16


class _PipeBase(_TransportBase):
    """What both ends of a pipe share: the pipe, errors and closing."""

    _fileno: int
    _pipe: Any

    def _init(self, face: Any, pipe: Any, protocol: Any, extra: Any) -> None:
        self._init_base(face, protocol, extra)
        self._extra["pipe"] = pipe
        self._pipe = pipe
        self._fileno = pipe.fileno()

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def _unregister(self) -> None:
        if not self._core._closed:
            self._core._unwatch(self._fileno, "reader", _READ_BITS)
            self._core._unwatch(self._fileno, "writer", EPOLLOUT)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            _report(self, message, exc)
        self._close(exc)

    def _close(self, exc: BaseException | None) -> None:
        self._closing = True
        self._unregister()
        self._face.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            if self._pipe is not None:
                self._unregister()  # before close
                self._pipe.close()
                self._pipe = None
            self._protocol = None

    def __repr__(self) -> str:
        state = "closed" if self._pipe is None else ("closing" if self._closing else "open")
        return f"<{type(self).__name__} fd={self._fileno} {state}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_pipe", None) is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()


class ReadPipeTransport(_PipeBase, asyncio.ReadTransport):
    """The read end of a pipe, a pty master, or a stream socket."""

    def __init__(
        self, face: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        self._init(face, pipe, protocol, extra)
        self._paused = False
        mode = os.fstat(self._fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            self._pipe = None
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(self._fileno, False)
        _announce(face, self, protocol, self._start_reading, waiter)

    def _start_reading(self) -> None:
        if not self._closing and self._pipe is not None:
            self._core._watch(self._fileno, "reader", _READ_BITS, self._on_readable)
            self._entry = self._core._fds[self._fileno]

    def _on_readable(self) -> bool | None:
        for _ in range(_READS_PER_EDGE):
            if self._paused or self._closing:
                return None
            try:
                data = os.read(self._fileno, _MAX_READ)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                if exc.errno == errno.EIO:  # a pty whose other side closed: its EOF
                    data = b""
                else:
                    self._fatal_error(exc, "Fatal read error on pipe transport")
                    return None
            if not data:
                self._closing = True
                self._core._unwatch(self._fileno, "reader", _READ_BITS)
                self._face.call_soon(self._protocol.eof_received)
                self._face.call_soon(self._call_connection_lost, None)
                return None
            self._protocol.data_received(data)
            if len(data) < _MAX_READ and not self._entry.ev & _HUNG_UP:
                return None
        return True

    def pause_reading(self) -> None:
        if not self._closing and not self._paused:
            self._paused = True

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._face._ready.append(Handle(_again, (self._core, self._on_readable)))

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def close(self) -> None:
        if not self._closing:
            self._close(None)


class WritePipeTransport(_PipeBase, _FlowControl, asyncio.WriteTransport):
    """The write end of a pipe, a pty, or a stream socket."""

    def __init__(
        self, face: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        self._init(face, pipe, protocol, extra)
        self._buffer = bytearray()
        self._conn_lost = 0
        mode = os.fstat(self._fileno).st_mode
        is_socket, is_fifo = stat.S_ISSOCK(mode), stat.S_ISFIFO(mode)
        if not (is_socket or is_fifo or stat.S_ISCHR(mode)):
            self._pipe = None
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        os.set_blocking(self._fileno, False)
        # the reader going away shows as an error (hang-up) edge on our end
        # (a socket's or a fifo's: a character device has no such edge)
        _announce(face, self, protocol, self._watch_peer if is_socket or is_fifo else None, waiter)

    def _watch_peer(self) -> None:
        if self._pipe is not None and not self._core._closed:
            self._core._watch(self._fileno, "reader", EPOLLIN, self._peer_gone)

    def _peer_gone(self) -> None:
        if self._pipe is None:
            return
        self._close(BrokenPipeError() if self._buffer else None)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def write(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        data = bytes(data) if isinstance(data, memoryview) else data
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= 5:
                logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                n = os.write(self._fileno, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._conn_lost += 1
                self._fatal_error(exc, "Fatal write error on pipe transport")
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
            self._core._watch(self._fileno, "writer", EPOLLOUT, self._on_writable)
        self._buffer += data
        self._maybe_pause_protocol()

    def _on_writable(self) -> None:
        buf = self._buffer
        if self._pipe is None:
            return
        if buf:
            try:
                n = os.write(self._fileno, buf)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                buf.clear()
                self._conn_lost += 1
                self._core._unwatch(self._fileno, "writer", EPOLLOUT)
                self._fatal_error(exc, "Fatal write error on pipe transport")
                return
            del buf[:n]
            if buf:
                return
        self._core._unwatch(self._fileno, "writer", EPOLLOUT)
        self._maybe_resume_protocol()
        if not self._buffer and self._closing:
            self._core._unwatch(self._fileno, "reader", EPOLLIN)
            self._call_connection_lost(None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._core._unwatch(self._fileno, "reader", EPOLLIN)
            self._face.call_soon(self._call_connection_lost, None)

    def close(self) -> None:
        if self._pipe is not None and not self._closing:
            self.write_eof()

    def abort(self) -> None:
        self._close(None)

    def _close(self, exc: BaseException | None) -> None:
        self._buffer.clear()
        super()._close(exc)
