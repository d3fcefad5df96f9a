"""The networking half of ``AsyncioLoop``: ``sock_*`` coroutines, connections,
servers, TLS, datagram endpoints (asyncio's signatures and errors).

``sock_*`` try the operation first and wait only on EAGAIN, through the
face's (level-triggered) ``add_reader``/``add_writer``, removed once done.
Transports and servers are in ``_transports.py``.
"""

from __future__ import annotations

import asyncio
import collections.abc
import errno
import functools
import logging
import os
import socket
import stat
import weakref
from asyncio import sslproto, trsock
from typing import TYPE_CHECKING, Any

from ._transports import (
    _ACCEPTS_PER_EDGE,
    ACCEPT_RESOURCE_ERRNOS,
    DatagramTransport,
    Server,
    StreamTransport,
)
from .core import EPOLLIN

try:
    import ssl as ssl_module
except ImportError:  # pragma: no cover - CPython without OpenSSL
    ssl_module = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .core import Loop

logger = logging.getLogger("asyncio")

_SENDFILE_CHUNK = 256 * 1024


def _check_nonblocking(sock: socket.socket) -> None:
    if ssl_module is not None and isinstance(sock, ssl_module.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    if sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


def _check_ssl_socket(sock: Any) -> None:
    if ssl_module is not None and isinstance(sock, ssl_module.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _check_ssl_args(
    ssl: Any, handshake_timeout: Any, shutdown_timeout: Any, server_hostname: Any = None
) -> None:
    if not ssl:
        if server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with ssl")
        if handshake_timeout is not None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if shutdown_timeout is not None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


class NetworkMixin:
    """Sockets, connections and servers for ``AsyncioLoop`` (see the module docstring)."""

    if TYPE_CHECKING:  # what it uses of AsyncioLoop
        _core: Loop
        _debug: bool

        def create_future(self) -> Any: ...
        def call_soon(self, callback: Callable[..., Any], *args: Any) -> Any: ...
        def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...
        def call_exception_handler(self, context: dict[str, Any]) -> None: ...
        def get_debug(self) -> bool: ...
        def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None: ...
        def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None: ...
        def remove_reader(self, fd: Any) -> bool: ...
        def remove_writer(self, fd: Any) -> bool: ...
        def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any: ...

        getaddrinfo: Callable[..., Awaitable[list[Any]]]  # AsyncioLoop.getaddrinfo

    def __init__(self) -> None:
        # fd -> the transport using it (add_reader on it is refused, as asyncio does)
        self._transports: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def _ensure_fd_no_transport(self, fd: int) -> None:
        transport = self._transports.get(fd)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    # --- waiting on a socket --------------------------------------------------
    def _wait_io(
        self,
        sock: socket.socket,
        writable: bool,
        attempt: Any,
        *args: Any,
    ) -> asyncio.Future[Any]:
        """A future resolved by ``attempt(fut, *args)``, retried on each
        readiness of ``sock`` until it resolves ``fut``; the wait is removed then."""
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        add = self.add_writer if writable else self.add_reader
        add(fd, attempt, fut, *args)
        e = self._core._fds.get(fd)
        mine = getattr(e, "writer" if writable else "reader", None)
        fut.add_done_callback(functools.partial(self._io_done, fd, writable, mine))
        return fut

    def _io_done(
        self,
        fd: int,
        writable: bool,
        mine: Any,
        _fut: Any,
    ) -> None:
        e = self._core._fds.get(fd)
        if e is not None and getattr(e, "writer" if writable else "reader") is mine:
            (self.remove_writer if writable else self.remove_reader)(fd)

    async def _sock_call(self, sock: socket.socket, writable: bool, op: str, *args: Any) -> Any:
        """``sock.<op>(*args)`` now, or (on EAGAIN) once ``sock`` is ready for it."""
        try:
            return _call(sock, op, *args)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_io(sock, writable, _settle, _call, sock, op, *args)

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        _check_nonblocking(sock)
        return await self._sock_call(sock, False, "recv", n)

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        _check_nonblocking(sock)
        return await self._sock_call(sock, False, "recv_into", buf)

    async def sock_recvfrom(
        self,
        sock: socket.socket,
        bufsize: int,
    ) -> tuple[bytes, Any]:
        _check_nonblocking(sock)
        return await self._sock_call(sock, False, "recvfrom", bufsize)

    async def sock_recvfrom_into(
        self,
        sock: socket.socket,
        buf: Any,
        nbytes: int = 0,
    ) -> tuple[int, Any]:
        _check_nonblocking(sock)
        return await self._sock_call(sock, False, "recvfrom_into", buf, nbytes or len(buf))

    async def sock_sendto(
        self,
        sock: socket.socket,
        data: Any,
        address: Any,
    ) -> int:
        _check_nonblocking(sock)
        return await self._sock_call(sock, True, "sendto", data, address)

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        _check_nonblocking(sock)
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        view = memoryview(data).cast("B")
        if n == len(view):
            return
        await self._wait_io(sock, True, _send_rest, sock, view, [n])

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        _check_nonblocking(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            infos = await self.getaddrinfo(
                *address[:2], family=sock.family, type=sock.type, proto=sock.proto
            )
            if not infos:
                raise OSError(f"getaddrinfo({address[0]!r}) returned empty list")
            address = infos[0][4]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        # Connecting goes on in the background: writable means done, SO_ERROR says how.
        await self._wait_io(sock, True, _settle, _connect_result, sock, address)

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        _check_nonblocking(sock)
        try:
            return _accept_nonblocking(sock)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_io(sock, False, _settle, _accept_nonblocking, sock)

    async def sock_sendfile(
        self,
        sock: socket.socket,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int:
        """Send ``file`` over ``sock`` by reading it and ``sock_sendall`` (the
        fallback path; ``fallback=False`` raises, there is no zero-copy path)."""
        _check_nonblocking(sock)
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")
        if not fallback:
            raise asyncio.SendfileNotAvailableError(
                "actorq's loop sends files by reading them (pass fallback=True)"
            )
        if offset:
            file.seek(offset)
        total = 0
        try:
            while count is None or total < count:
                size = _SENDFILE_CHUNK if count is None else min(_SENDFILE_CHUNK, count - total)
                chunk = await self.run_in_executor(None, file.read, size)
                if not chunk:
                    break
                await self.sock_sendall(sock, chunk)
                total += len(chunk)
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    # --- connections ----------------------------------------------------------
    async def _connect_one(
        self,
        info: Any,
        local_infos: list[Any] | None,
        errors: list[OSError],
    ) -> socket.socket:
        family, type_, proto, _, address = info
        sock = socket.socket(family=family, type=type_, proto=proto)
        try:
            sock.setblocking(False)
            if local_infos is not None:
                bind_errors: list[OSError] = []
                for lfamily, _, _, _, laddr in local_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        msg = f"error while attempting to bind on address {laddr!r}: {exc.strerror}"
                        bind_errors.append(OSError(exc.errno, msg))
                else:
                    if bind_errors:
                        raise bind_errors.pop()
                    raise OSError(f"no matching local address with family={family} found")
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            errors.append(exc)
            sock.close()
            raise
        except BaseException:
            sock.close()
            raise

    async def create_connection(
        self,
        protocol_factory: Any,
        host: Any = None,
        port: Any = None,
        *,
        ssl: Any = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: socket.socket | None = None,
        local_addr: Any = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[Any, Any]:
        """Connect to ``host:port`` (addresses tried in turn: no happy eyeballs)."""
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        _check_ssl_args(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, server_hostname)
        if sock is not None:
            _check_ssl_socket(sock)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self.getaddrinfo(
                host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            local_infos = None
            if local_addr is not None:
                local_infos = await self.getaddrinfo(
                    *local_addr[:2],
                    family=family,
                    type=socket.SOCK_STREAM,
                    proto=proto,
                    flags=flags,
                )
                if not local_infos:
                    raise OSError("getaddrinfo() returned empty list")
            errors: list[OSError] = []
            for info in infos:
                try:
                    sock = await self._connect_one(info, local_infos, errors)
                    break
                except OSError:
                    continue
            else:
                if all_errors:
                    raise ExceptionGroup("create_connection failed", errors)
                if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
                    raise errors[0]
                raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        return await self._make_stream(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            False,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )

    async def _make_stream(
        self,
        sock: socket.socket,
        protocol_factory: Any,
        ssl: Any,
        server_hostname: str | None,
        server_side: bool,
        ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
    ) -> tuple[Any, Any]:
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()
        transport: Any
        app: Any
        if ssl:
            context = _ssl_context(ssl, server_side, server_hostname)
            ssl_protocol = _ssl_protocol(
                self,
                protocol,
                context,
                waiter,
                server_side,
                server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
            transport = StreamTransport(self, sock, ssl_protocol)
            app = ssl_protocol._app_transport
        else:
            transport = app = StreamTransport(self, sock, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return app, protocol

    async def create_unix_connection(
        self,
        protocol_factory: Any,
        path: Any = None,
        *,
        ssl: Any = None,
        sock: socket.socket | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[Any, Any]:
        if ssl and server_hostname is None:
            raise ValueError("you have to pass server_hostname when using ssl")
        _check_ssl_args(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, server_hostname)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        return await self._make_stream(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            False,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory: Any,
        sock: socket.socket,
        *,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[Any, Any]:
        _check_ssl_socket(sock)
        _check_ssl_args(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        return await self._make_stream(
            sock, protocol_factory, ssl, "", True, ssl_handshake_timeout, ssl_shutdown_timeout
        )

    async def start_tls(
        self,
        transport: Any,
        protocol: Any,
        sslcontext: Any,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> Any:
        """Upgrade ``transport`` to TLS (asyncio's own SSLProtocol over our transport)."""
        if ssl_module is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, ssl_module.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        ssl_protocol = _ssl_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False,
        )
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        return ssl_protocol._app_transport

    # --- servers ----------------------------------------------------------------
    async def create_server(
        self,
        protocol_factory: Any,
        host: Any = None,
        port: Any = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server:
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_ssl_args(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = True
            if host == "":
                hosts: list[Any] = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = list(host)
            infos: set[Any] = set()
            for h in hosts:
                infos.update(
                    await self.getaddrinfo(
                        h, port, family=family, type=socket.SOCK_STREAM, flags=flags
                    )
                )
            sockets = _bind_all(infos, reuse_address, reuse_port)
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]
        return await self._serve(
            sockets,
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            start_serving,
        )

    async def create_unix_server(
        self,
        protocol_factory: Any,
        path: Any = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server:
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_ssl_args(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if path[0] not in (0, "\x00"):  # not an abstract socket: a stale file goes
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.remove(path)
                except FileNotFoundError:
                    pass
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        return await self._serve(
            [sock],
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            start_serving,
        )

    async def _serve(
        self,
        sockets: list[socket.socket],
        protocol_factory: Any,
        ssl: Any,
        backlog: int,
        ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
        start_serving: bool,
    ) -> Server:
        """The server over bound ``sockets``, listening at once if ``start_serving``."""
        for s in sockets:
            s.setblocking(False)
        server = Server(
            self,
            sockets,
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        return server

    def _start_accepting(self, server: Server, sock: socket.socket) -> None:
        self._core._watch(
            sock.fileno(), "reader", EPOLLIN, functools.partial(self._accept_ready, server, sock)
        )

    def _stop_accepting(self, sock: socket.socket) -> None:
        if not self._core._closed:
            self._core._unwatch(sock.fileno(), "reader", EPOLLIN)

    # asyncio's private name for it (CPython's tests call it)
    _stop_serving = _stop_accepting

    def _accept_ready(self, server: Server, sock: socket.socket) -> bool | None:
        """Accept until EAGAIN (one connection per accept), at most a budget per call."""
        for _ in range(_ACCEPTS_PER_EDGE):
            if server._sockets is None:
                return None
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return None
            except ConnectionAbortedError:
                continue  # the peer gave up before we accepted
            except OSError as exc:
                if exc.errno not in ACCEPT_RESOURCE_ERRNOS:
                    raise
                self.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    }
                )
                # Out of fds: stop, look again in a second (re-registering
                # reports the connections still waiting: no edge is lost).
                self._stop_accepting(sock)
                self.call_later(1.0, self._resume_accepting, server, sock)
                return None
            conn.setblocking(False)
            self._accepted(server, conn, addr)
        return True

    def _resume_accepting(self, server: Server, sock: socket.socket) -> None:
        if server._sockets is not None and server._serving:
            self._start_accepting(server, sock)

    def _accepted(self, server: Server, conn: socket.socket, addr: Any) -> None:
        try:
            protocol = server._protocol_factory()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            self.call_exception_handler(
                {"message": "Error in protocol factory for incoming connection", "exception": exc}
            )
            return
        extra = {"peername": addr}
        if not server._ssl_context:
            StreamTransport(self, conn, protocol, None, extra, server)
            return
        waiter = self.create_future()
        ssl_protocol = _ssl_protocol(
            self,
            protocol,
            server._ssl_context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=server._ssl_handshake_timeout,
            ssl_shutdown_timeout=server._ssl_shutdown_timeout,
        )
        transport = StreamTransport(self, conn, ssl_protocol, None, extra, server)

        def handshake_done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is None:
                return
            transport.close()
            if self.get_debug():
                self.call_exception_handler(
                    {
                        "message": "Error on transport creation for incoming connection",
                        "exception": fut.exception(),
                        "protocol": protocol,
                        "transport": transport,
                    }
                )

        waiter.add_done_callback(handshake_done)

    # --- datagrams ----------------------------------------------------------------
    async def create_datagram_endpoint(
        self,
        protocol_factory: Any,
        local_addr: Any = None,
        remote_addr: Any = None,
        *,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        sock: socket.socket | None = None,
        **removed: Any,
    ) -> tuple[Any, Any]:
        if "reuse_address" in removed:
            raise ValueError(
                "Passing `reuse_address=True` is no longer supported, as the usage of "
                "SO_REUSEPORT in UDP poses a significant security concern."
            )
        if removed:
            raise TypeError(f"unexpected keyword arguments {sorted(removed)}")
        if sock is not None:
            if sock.type != socket.SOCK_DGRAM:
                raise ValueError(f"A UDP Socket was expected, got {sock!r}")
            if (
                local_addr
                or remote_addr
                or family
                or proto
                or flags
                or reuse_port
                or allow_broadcast
            ):
                raise ValueError(
                    "socket modifier keyword arguments can not be used when sock is specified"
                )
            sock.setblocking(False)
            remote = None
        else:
            if not (local_addr or remote_addr):
                if family == 0:
                    raise ValueError("unexpected address family")
                sock = socket.socket(family, socket.SOCK_DGRAM, proto)
                remote = None
            elif family == socket.AF_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, proto)
                try:
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local_addr)
                    if remote_addr:
                        await self.sock_connect(sock, remote_addr)
                except BaseException:
                    sock.close()
                    raise
                remote = remote_addr
            else:
                sock, remote = await self._datagram_socket(
                    local_addr, remote_addr, family, proto, flags, reuse_port, allow_broadcast
                )
            sock.setblocking(False)
        return await self._transport_made(
            protocol_factory, functools.partial(_datagram_transport, self, sock, remote)
        )

    async def _transport_made(self, protocol_factory: Any, make: Any) -> tuple[Any, Any]:
        """``(transport, protocol)`` from ``make(protocol, waiter)`` once the
        transport says it is connected; closed again if that wait fails."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make(protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _datagram_socket(
        self,
        local_addr: Any,
        remote_addr: Any,
        family: int,
        proto: int,
        flags: int,
        reuse_port: bool | None,
        allow_broadcast: bool | None,
    ) -> tuple[socket.socket, Any]:
        local = (
            await self.getaddrinfo(
                *local_addr[:2], family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if local_addr
            else None
        )
        remote = (
            await self.getaddrinfo(
                *remote_addr[:2], family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if remote_addr
            else None
        )
        if (local_addr and not local) or (remote_addr and not remote):
            raise OSError("getaddrinfo() returned empty list")
        families = {i[0] for i in (local or remote or [])}
        last: OSError | None = None
        for fam in sorted(families):
            loc = next((i[4] for i in local or [] if i[0] == fam), None)
            rem = next((i[4] for i in remote or [] if i[0] == fam), None)
            if (local and loc is None) or (remote and rem is None):
                continue
            sock = socket.socket(fam, socket.SOCK_DGRAM, proto)
            try:
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if loc is not None:
                    sock.bind(loc)
                if rem is not None and not allow_broadcast:
                    await self.sock_connect(sock, rem)
                return sock, rem
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        raise last if last is not None else ValueError("can not get address information")


def _datagram_transport(
    face: Any, sock: socket.socket, remote: Any, protocol: Any, waiter: Any
) -> DatagramTransport:
    return DatagramTransport(face, sock, protocol, remote, waiter)


def _ssl_protocol(*args: Any, **kwargs: Any) -> Any:
    """asyncio's own TLS state machine over our transport (stdlib: reused, not copied)."""
    return sslproto.SSLProtocol(*args, **kwargs)


def _ssl_context(ssl: Any, server_side: bool, server_hostname: str | None) -> Any:
    if not isinstance(ssl, bool):
        return ssl
    if server_side:
        raise ValueError("Server side SSL needs a valid SSLContext")
    context = ssl_module.create_default_context()
    if not server_hostname:
        context.check_hostname = False
    return context


def _bind_all(infos: set[Any], reuse_address: bool, reuse_port: bool | None) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for af, socktype, proto, _, sa in infos:
            try:
                sock = socket.socket(af, socktype, proto)
            except OSError:
                continue  # e.g. IPv6 not available
            sockets.append(sock)
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if af == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            try:
                sock.bind(sa)
            except OSError as err:
                why = (err.strerror or "").lower()
                raise OSError(
                    err.errno, f"error while attempting to bind on address {sa!r}: {why}"
                ) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# --- what a waiting sock_* op retries on readiness --------------------------------
def _settle(fut: asyncio.Future[Any], attempt: Callable[..., Any], *args: Any) -> None:
    """Resolve ``fut`` with ``attempt(*args)``, or with what it raised; on EAGAIN
    leave it for the next readiness (level-triggered: we are called again)."""
    if fut.done():
        return
    try:
        result = attempt(*args)
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _call(sock: socket.socket, op: str, *args: Any) -> Any:
    return getattr(sock, op)(*args)  # looked up each time, as asyncio does


def _send_rest(
    fut: asyncio.Future[Any], sock: socket.socket, view: memoryview, pos: list[int]
) -> None:
    if fut.done():
        return
    start = pos[0]
    try:
        n = sock.send(view[start:])
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
        return
    start += n
    if start == len(view):
        fut.set_result(None)
    else:
        pos[0] = start


def _connect_result(sock: socket.socket, address: Any) -> None:
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, f"Connect call failed {address}")


def _accept_nonblocking(sock: socket.socket) -> tuple[socket.socket, Any]:
    conn, address = sock.accept()
    conn.setblocking(False)
    return conn, address
