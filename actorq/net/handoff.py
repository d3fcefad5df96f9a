"""Moving a live connection to another worker: its descriptor, over a unix socket.

Why move a connection at all
============================
``SO_REUSEPORT`` lets the kernel pick the worker that accepts a connection,
and the kernel knows nothing of what the connection will ask for. When a
protocol learns that a connection's work belongs to another worker (a
sharded store whose client only touches keys owned elsewhere), serving it
where it landed costs a hop per request: a message to the owner and one
back, each with a cross-core wake-up (~12 µs on a 2-vCPU VM) that no
batching removes at one request in flight. Moving the connection once costs
one ``sendmsg`` with ``SCM_RIGHTS``; every request after it is local.

How
===
Each worker's :class:`Handoff` listens on a ``SOCK_SEQPACKET`` unix socket
at a path the application chooses (in the runtime directory, mode 0700, so
only the runtime's own processes can hand it sockets). :meth:`Handoff.send`
passes one connection's descriptor with a small msgpack record: the
connection's counters for the server's sweep (so a slow client cannot
reset its slowloris clock by being moved) and the protocol's own state
(:meth:`Connection.handoff_state`). The receiving :class:`Server` adopts it
through :meth:`Server.adopt`, which applies the same caps as ``accept``.

A connection is only moved when it is quiet: no reply queued, no partial
request held. Then nothing of it lives in the sender's memory, and bytes
the client sent meanwhile wait in the kernel's socket buffer for the new
owner (registering a readable socket with epoll reports it at once), so
requests stay in order without any coordination.

What can go wrong, and what it costs
====================================
- The receiver is gone, not started yet, or its queue is full: the send
  fails (ECONNREFUSED, ENOENT, EPIPE, EAGAIN), the connection stays where it
  is and is served with hops as before; that destination is not tried again
  for ``RETRY_AFTER`` seconds. Counted as ``handoff_failed``.
- The receiver dies with connections in flight (sent, not yet adopted):
  the kernel closes the descriptors queued in its socket, so those clients
  see their connection closed, as they would have if it had been accepted
  there. Nothing else is lost: the sender had already let go of them.
- The receiver is out of descriptors: the kernel drops the descriptor from
  the record (MSG_CTRUNC) and that client sees its connection closed;
  counted as ``handoff_bad`` there.
- A record that is not one of ours (wrong size, no descriptor, more than
  one) is dropped and its descriptors closed, counted as ``handoff_bad``.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from .server import Connection, Server

__all__ = ["RETRY_AFTER", "Handoff"]

log = logging.getLogger("actorq.net")

#: Seconds before a destination whose channel failed is tried again.
RETRY_AFTER = 1.0
#: The largest record (sweep counters and protocol state) one handoff carries.
MAX_RECORD = 4096
#: Records read per readable edge before the others get a turn.
_READ_BATCH = 64
_FDS_SIZE = socket.CMSG_SPACE(array.array("i").itemsize)
#: The length of :meth:`Connection.sweep_state`.
_SWEEP_FIELDS = 9


class Handoff:
    """One worker's end of the connection handoff channels.

    ``path`` is where this worker receives connections; :meth:`send` moves
    a connection to the worker listening at another path.
    """

    def __init__(self, server: Server, path: str) -> None:
        self.server = server
        self.loop = server.loop
        self.path = path
        self.listener: socket.socket | None = None
        self.inbound: dict[int, socket.socket] = {}
        self.outbound: dict[str, socket.socket] = {}
        self.retry_at: dict[str, float] = {}
        self._inode = 0  # of the socket file we bound: close() removes only that one

    def start(self) -> None:
        """Listen at ``path`` (replacing a stale socket file left by a dead worker)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK
                          | socket.SOCK_CLOEXEC)
        try:
            s.bind(self.path)
            s.listen(64)
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            s.close()
            raise
        self.listener = s
        self.loop.add_reader(s.fileno(), self._on_accept)

    def close(self) -> None:
        """Stop receiving, drop every channel, remove the socket file."""
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
            # A successor (the same actor re-created) may have bound the path anew.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
        for fd, s in list(self.inbound.items()):
            self.loop.remove_reader(fd)
            s.close()
        self.inbound.clear()
        for s in self.outbound.values():
            s.close()
        self.outbound.clear()

    # -- sending -------------------------------------------------------------------
    def send(self, conn: Connection, dest: str) -> bool:
        """Move ``conn`` to the worker listening at ``dest``; False if it stays here.

        ``conn`` must be quiet (see :meth:`Connection.quiet`). On success it is
        detached from this server (counted as ``handed_off``) and its
        descriptor closed here; the receiver serves it from now on.
        """
        counts = self.server.counts
        if not conn.quiet():
            return False
        now = self.loop.time()
        if self.retry_at.get(dest, 0.0) > now:
            return False
        try:
            record = msgpack.packb([conn.sweep_state(), conn.handoff_state()])
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{type(conn).__name__}.handoff_state() must return msgpack data: "
                            f"{exc}") from None
        if len(record) > MAX_RECORD:
            raise ValueError(f"handoff record of {len(record)} bytes is over {MAX_RECORD}: "
                             f"keep {type(conn).__name__}.handoff_state() small")
        try:
            chan = self.outbound.get(dest) or self._connect(dest)
            socket.send_fds(chan, [record], [conn.fd], socket.MSG_NOSIGNAL)
        except OSError as exc:
            # Gone, not there yet, or its queue full: serve the connection here.
            counts["handoff_failed"] += 1
            self.retry_at[dest] = now + RETRY_AFTER
            stale = self.outbound.pop(dest, None)
            if stale is not None:
                stale.close()
            log.debug("%s: handoff to %s failed: %s", self.server.name, dest, exc)
            return False
        conn.detach("handed_off")
        return True

    def _connect(self, dest: str) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK
                          | socket.SOCK_CLOEXEC)
        try:
            s.connect(dest)
        except BaseException:
            s.close()
            raise
        self.outbound[dest] = s
        return s

    # -- receiving -----------------------------------------------------------------
    def _on_accept(self) -> bool | None:
        listener = self.listener
        if listener is None:
            return None
        while True:
            try:
                chan, _ = listener.accept()
            except BlockingIOError:
                return None
            except OSError as exc:
                log.warning("%s: accepting a handoff channel failed: %s", self.server.name, exc)
                return None
            chan.setblocking(False)
            self.inbound[chan.fileno()] = chan
            self.loop.add_reader(chan.fileno(), self._on_record, chan)

    def _on_record(self, chan: socket.socket) -> bool | None:
        """Adopt every connection queued on ``chan`` (a slice per turn)."""
        for _ in range(_READ_BATCH):
            try:
                data, ancdata, flags, _addr = chan.recvmsg(MAX_RECORD, _FDS_SIZE,
                                                           socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return None
            except OSError:
                data, ancdata, flags = b"", [], 0
            fds = _fds_of(ancdata)
            if not data and not fds:
                self._drop_channel(chan)  # the sending worker closed it or died
                return None
            self._adopt(data, fds, flags)
        return True

    def _adopt(self, data: bytes, fds: list[int], flags: int) -> None:
        counts = self.server.counts
        state: Any = None
        if len(fds) == 1 and not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            try:
                state = msgpack.unpackb(data)
            except Exception:
                state = None
        if not (isinstance(state, list) and len(state) == 2 and isinstance(state[0], list)
                and len(state[0]) == _SWEEP_FIELDS
                and all(isinstance(x, int | float) for x in state[0])):
            counts["handoff_bad"] += 1
            for fd in fds:
                os.close(fd)
            return
        try:
            sock = socket.socket(fileno=fds[0])
        except OSError:
            counts["handoff_bad"] += 1
            os.close(fds[0])
            return
        if sock.type != socket.SOCK_STREAM:
            counts["handoff_bad"] += 1
            sock.close()
            return
        self.server.adopt(sock, state[0], state[1])

    def _drop_channel(self, chan: socket.socket) -> None:
        fd = chan.fileno()
        self.loop.remove_reader(fd)
        self.inbound.pop(fd, None)
        chan.close()


def _fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
            fds.extend(arr)
    return fds
