"""asyncio transports and servers on the actorq loop core, edge-triggered.

A socket transport registers its fd with the core (not through the face's
level-triggered ``add_reader``), so it follows the drain rules in ``core.py``:

- *stream sockets*: read until a read returns fewer bytes than asked for (the
  buffer was empty at that instant; later bytes raise a new edge), or EOF, or
  EAGAIN. Except when the edge carried ``EPOLLRDHUP``: then the peer's FIN
  came with (or before) the data, raises no later edge, and a short read
  has not seen it, so we read on to the end of file. (Registered for
  ``EPOLLIN | EPOLLRDHUP``; the core keeps each fd's last event flags.)
  After ``_READS_PER_EDGE`` full reads it returns True: "not drained, call
  me again after the others" (a fast peer cannot starve the loop).
- *paused reading* registers nothing new: an edge that comes while paused is
  ignored, and ``resume_reading`` queues one read attempt, because the data
  that arrived while paused raised its edge already.
- *writes* go straight to the socket while nothing is buffered; what the
  kernel refuses is buffered and the fd gets a writer, removed once the
  buffer is empty (so a readable edge never also runs a writer).
- *listening sockets* and *datagram sockets*: one accept / one datagram per
  call, so they read until EAGAIN (with a budget, as above).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import select
import socket
import warnings
from asyncio import trsock
from typing import Any

from .core import EPOLLIN, EPOLLOUT, Handle, _again

_READ_BITS = EPOLLIN | select.EPOLLRDHUP
_HUNG_UP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR

logger = logging.getLogger("asyncio")

_MAX_READ = 256 * 1024  # bytes asked of one recv (asyncio's max_size)
_READS_PER_EDGE = 16  # full reads before yielding the loop (then: call me again)
_ACCEPTS_PER_EDGE = 100  # accepts per edge before yielding (asyncio's backlog)
_DATAGRAMS_PER_EDGE = 64
_HIGH_WATER = 64 * 1024  # asyncio's default write buffer limits
_DATAGRAM_QUEUE = 1024  # datagrams queued for sending at most; beyond: dropped, counted


def _set_result_unless_cancelled(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


def _report(transport: Any, message: str, exc: BaseException) -> None:
    """Hand an error of ``transport`` or its protocol to the loop's exception handler."""
    transport._face.call_exception_handler(
        {
            "message": message,
            "exception": exc,
            "transport": transport,
            "protocol": transport._protocol,
        }
    )


def _announce(face: Any, transport: Any, protocol: Any, then: Any, waiter: Any) -> None:
    """Queue what follows a transport's creation, in asyncio's order: the
    protocol's ``connection_made``, ``then`` (e.g. start reading), the waiter."""
    face.call_soon(protocol.connection_made, transport)
    if then is not None:
        face.call_soon(then)
    if waiter is not None:
        face.call_soon(_set_result_unless_cancelled, waiter, None)


class _FlowControl:
    """Write buffer limits and pause_writing/resume_writing, shared by transports."""

    _protocol: Any
    _face: Any
    _high = _HIGH_WATER
    _low = _HIGH_WATER // 4
    _protocol_paused = False

    def get_write_buffer_size(self) -> int:
        raise NotImplementedError

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def _maybe_pause_protocol(self) -> None:
        if self._protocol_paused or self.get_write_buffer_size() <= self._high:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            _report(self, "protocol.pause_writing() failed", exc)

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self.get_write_buffer_size() <= self._low:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                _report(self, "protocol.resume_writing() failed", exc)


class _TransportBase:
    """What socket and pipe transports share: the loop, the protocol, extra
    info and whether it is closing."""

    def _init_base(self, face: Any, protocol: Any, extra: Any) -> None:
        self._extra = dict(extra) if extra else {}
        self._face = face
        self._core = face._core
        self._protocol = protocol
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> Any:
        return self._protocol


class _SocketTransport(_TransportBase, _FlowControl):
    """What stream and datagram transports share: the socket, closing and the
    loss of the connection."""

    _sock: socket.socket | None

    def _setup(
        self, face: Any, sock: socket.socket, protocol: Any, extra: Any, server: Any
    ) -> None:
        self._init_base(face, protocol, extra)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol_connected = False
        self._server = server
        self._conn_lost = 0
        self._paused = False
        if server is not None:
            server._attach()
        face._transports[self._fd] = self

    def abort(self) -> None:
        self._force_close(None)

    def _unregister(self) -> None:
        core = self._core
        if not core._closed:
            core._unwatch(self._fd, "reader", _READ_BITS)
            core._unwatch(self._fd, "writer", EPOLLOUT)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):
            if self._face.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            _report(self, message, exc)
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._clear_buffer()
        self._closing = True
        self._unregister()
        self._conn_lost += 1
        self._face.call_soon(self._call_connection_lost, exc)

    def _clear_buffer(self) -> None:
        raise NotImplementedError

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            sock = self._sock
            if sock is not None:
                self._unregister()  # before close: see "dup, close and fork" in core.py
                if self._face._transports.get(self._fd) is self:
                    del self._face._transports[self._fd]
                sock.close()
                self._sock = None
            self._protocol = None
            server, self._server = self._server, None
            if server is not None:
                server._detach()

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return f"<{type(self).__name__} fd={self._fd} {state}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_sock", None) is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._unregister()
            self._sock.close()  # type: ignore[union-attr]


class StreamTransport(_SocketTransport, asyncio.Transport):
    """A TCP or Unix stream socket as an asyncio Transport (Protocol or
    BufferedProtocol), edge-triggered (see the module docstring)."""

    _start_tls_compatible = True

    def __init__(
        self,
        face: Any,
        sock: socket.socket,
        protocol: Any,
        waiter: asyncio.Future[Any] | None = None,
        extra: Any = None,
        server: Any = None,
    ) -> None:
        self._setup(face, sock, protocol, extra, server)
        self._buffer = bytearray()
        self._eof = False
        self.set_protocol(protocol)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        _announce(face, self, protocol, self._start_reading, waiter)

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol_connected = True

    # --- reading -----------------------------------------------------------------
    def _start_reading(self) -> None:
        if not self._closing and self._sock is not None:
            # Registering reports data that is already there: no edge is lost.
            self._core._watch(self._fd, "reader", _READ_BITS, self._on_readable)
            self._entry = self._core._fds[self._fd]

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        # Bytes that came while paused raised their edge then: look once now.
        self._face._ready.append(Handle(_again, (self._core, self._on_readable)))

    def _on_readable(self) -> bool | None:
        """Read and deliver until drained (see the module docstring); a
        BufferedProtocol is read into its own buffer, a Protocol gets bytes."""
        if self._paused or self._closing:
            return None
        sock, protocol, buffered = self._sock, self._protocol, self._buffered
        assert sock is not None
        size = _MAX_READ
        for _ in range(_READS_PER_EDGE):
            if buffered:
                try:
                    buf = protocol.get_buffer(-1)
                    size = len(buf)
                    if not size:
                        raise RuntimeError("get_buffer() returned an empty buffer")
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                    return None
            try:
                if buffered:
                    n = sock.recv_into(buf)
                else:
                    data = sock.recv(_MAX_READ)
                    n = len(data)
            except (BlockingIOError, InterruptedError):
                return None
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
                return None
            if not n:
                self._read_eof()
                return None
            try:
                if buffered:
                    protocol.buffer_updated(n)
                else:
                    protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                what = "buffer_updated" if buffered else "data_received"
                self._fatal_error(exc, f"Fatal error: protocol.{what}() call failed.")
                return None
            if self._paused or self._closing:
                return None
            if n < size and not self._entry.ev & _HUNG_UP:
                return None  # a short read drained it (see the module docstring)
        return True

    def _read_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            # half-closed: nothing more to read, writing goes on
            self._core._unwatch(self._fd, "reader", _READ_BITS)
        else:
            self.close()

    # --- writing -----------------------------------------------------------------
    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def write(self, data: Any) -> None:
        if type(data) is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= 5:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                n = self._sock.send(data)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            view = data if type(data) is bytes else memoryview(data).cast("B")
            if n == len(view):
                return
            data = memoryview(view)[n:]
            self._core._watch(self._fd, "writer", EPOLLOUT, self._on_writable)
        self._buffer += data
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _on_writable(self) -> None:
        buf = self._buffer
        if self._conn_lost or self._sock is None:
            return
        if buf:
            try:
                n = self._sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._core._unwatch(self._fd, "writer", EPOLLOUT)
                buf.clear()
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if n:
                del buf[:n]
            if buf:
                return  # short write: the socket is full, its next edge says when
        self._maybe_resume_protocol()  # may write more
        if not self._buffer:
            self._core._unwatch(self._fd, "writer", EPOLLOUT)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                self._sock.shutdown(socket.SHUT_WR)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer and self._sock is not None:
            self._sock.shutdown(socket.SHUT_WR)

    def _clear_buffer(self) -> None:
        self._buffer.clear()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._core._unwatch(self._fd, "reader", _READ_BITS)
        if not self._buffer:
            self._conn_lost += 1
            self._core._unwatch(self._fd, "writer", EPOLLOUT)
            self._face.call_soon(self._call_connection_lost, None)


class DatagramTransport(_SocketTransport, asyncio.Transport, asyncio.DatagramTransport):
    """A UDP (or Unix datagram) socket as an asyncio DatagramTransport. One
    read is one datagram whatever its size, so it reads until EAGAIN. At most
    ``_DATAGRAM_QUEUE`` datagrams wait for a full socket; beyond that they are
    dropped and counted in ``dropped`` (UDP may lose them anyway)."""

    def __init__(
        self,
        face: Any,
        sock: socket.socket,
        protocol: Any,
        address: Any = None,
        waiter: asyncio.Future[Any] | None = None,
        extra: Any = None,
    ) -> None:
        self._setup(face, sock, protocol, extra, None)
        self._address = address
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._queued = 0
        self.dropped = 0
        self._protocol_connected = True
        _announce(face, self, protocol, self._start_reading, waiter)

    def _start_reading(self) -> None:
        if not self._closing and self._sock is not None:
            self._core._watch(self._fd, "reader", EPOLLIN, self._on_readable)

    def get_write_buffer_size(self) -> int:
        return self._queued

    def _on_readable(self) -> bool | None:
        if self._closing:
            return None
        sock, protocol = self._sock, self._protocol
        assert sock is not None
        for _ in range(_DATAGRAMS_PER_EDGE):
            try:
                data, addr = sock.recvfrom(_MAX_READ)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                protocol.error_received(exc)
                continue
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on datagram transport")
                return None
            protocol.datagram_received(data, addr)
            if self._closing:
                return None
        return True

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost and self._address:
            if self._conn_lost >= 5:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        sock = self._sock
        if sock is None:
            return
        if not self._queue:
            try:
                if self._extra["peername"]:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._core._watch(self._fd, "writer", EPOLLOUT, self._on_writable)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        if len(self._queue) >= _DATAGRAM_QUEUE:
            self.dropped += 1
            return
        self._queue.append((bytes(data), addr))
        self._queued += len(data)
        self._maybe_pause_protocol()

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while self._queue:
            data, addr = self._queue[0]
            try:
                if self._extra["peername"]:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
            self._queue.popleft()
            self._queued -= len(data)
        self._maybe_resume_protocol()
        if not self._queue:
            self._core._unwatch(self._fd, "writer", EPOLLOUT)
            if self._closing:
                self._call_connection_lost(None)

    def _clear_buffer(self) -> None:
        self._queue.clear()
        self._queued = 0

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._core._unwatch(self._fd, "reader", EPOLLIN)
        if not self._queue:
            self._conn_lost += 1
            self._core._unwatch(self._fd, "writer", EPOLLOUT)
            self._face.call_soon(self._call_connection_lost, None)


class Server(asyncio.AbstractServer):
    """Listening sockets accepting into StreamTransports (asyncio's Server API)."""

    def __init__(
        self,
        face: Any,
        sockets: list[socket.socket],
        protocol_factory: Any,
        ssl_context: Any,
        backlog: int,
        ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
    ) -> None:
        self._loop = face
        self._sockets: list[socket.socket] | None = sockets
        self._active_count = 0
        self._waiters: list[asyncio.Future[Any]] | None = []
        self._protocol_factory = protocol_factory
        self._ssl_context = ssl_context
        self._backlog = backlog
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut: asyncio.Future[Any] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    def _attach(self) -> None:
        assert self._sockets is not None
        self._active_count += 1

    def _detach(self) -> None:
        self._active_count -= 1
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _start_serving(self) -> None:
        if self._serving or self._sockets is None:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_accepting(self, sock)

    def get_loop(self) -> Any:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[Any, ...]:
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self) -> None:
        sockets, self._sockets = self._sockets, None
        if sockets is None:
            return
        for sock in sockets:
            self._loop._stop_accepting(sock)
            sock.close()
        self._serving = False
        fut, self._serving_forever_fut = self._serving_forever_fut, None
        if fut is not None and not fut.done():
            fut.cancel()
        if self._active_count == 0:
            self._wakeup()

    async def start_serving(self) -> None:
        self._start_serving()
        await asyncio.sleep(0)

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        if self._sockets is None or self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


# errnos after which accept() is retried a second later rather than failing the server
ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
