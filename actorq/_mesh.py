"""The data plane between processes: one channel per ordered pair of nodes.

Node 0 is the supervisor, nodes 1..N the workers. The supervisor makes every
channel before it forks, so workers inherit them (and a restarted worker,
forked again, inherits the same ones: messages sent to a dead worker wait in
its inbound channels for its successor).

Whatever the channel (shared-memory rings, see ``RingMesh``; or socketpairs,
``SocketMesh``, kept as the fallback and as the benchmark's yardstick), a
``Port`` gives its node three things:

- ``send(dest, record)``: never blocks, never drops. When the channel to
  ``dest`` is full the record joins a local backlog for ``dest`` (and so does
  every later record for ``dest``, keeping FIFO), and the loop is asked to
  call us when there is room. The sender's loop keeps draining its own inbound
  channels meanwhile, so two workers asking each other with both directions
  full cannot deadlock: a fixed queue depth is never the backpressure policy
  (Seastar learned this with nested submit_to; see anchors.md section 2).
- ``flush()``: make written records visible to their readers (one doorbell
  per destination per loop turn at most; batching is where throughput comes
  from).
- ``start(loop, deliver)``: call ``deliver(sender, record)`` for every inbound
  record, in order per sender.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from .errors import PayloadTooLarge

log = logging.getLogger("actorq.mesh")

Deliver = Callable[[int, bytes], None]

_BUDGET = 256  # records per channel per wake before giving others a turn


class Port:
    """One node's ends of the mesh (see the module docstring)."""

    index: int
    backlog_total: int = 0

    def send(self, dest: int, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def start(self, loop: Any, deliver: Deliver) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def backlog(self) -> dict[int, int]:  # pragma: no cover - interface
        raise NotImplementedError


# --- socketpair channels ---------------------------------------------------------


class SocketMesh:
    """Channels as SOCK_SEQPACKET socketpairs (one per unordered pair of nodes)."""

    kind = "socket"

    def __init__(self, nodes: int, capacity: int = 1 << 18) -> None:
        self.nodes = nodes
        self.ends: dict[tuple[int, int], socket.socket] = {}
        for i in range(nodes):
            for j in range(i + 1, nodes):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                for s in (a, b):
                    s.setblocking(False)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, capacity)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, capacity)
                self.ends[(i, j)], self.ends[(j, i)] = a, b

    def port(self, index: int) -> SocketPort:
        return SocketPort(index, {j: s for (i, j), s in self.ends.items() if i == index})

    def close_others(self, index: int) -> None:
        """In a child: close every end that is not ``index``'s own."""
        for (i, _), s in self.ends.items():
            if i != index:
                s.close()

    def close(self) -> None:
        for s in self.ends.values():
            s.close()
        self.ends.clear()


class SocketPort(Port):
    def __init__(self, index: int, socks: dict[int, socket.socket]) -> None:
        self.index = index
        self.socks = socks
        self._backlog: dict[int, collections.deque[bytes]] = {}
        self._loop: Any = None
        self._deliver: Deliver | None = None
        self._buf = bytearray(1 << 20)

    def start(self, loop: Any, deliver: Deliver) -> None:
        self._loop, self._deliver = loop, deliver
        for peer, s in self.socks.items():
            loop.add_reader(s.fileno(), self._readable, peer, s)

    def _readable(self, peer: int, s: socket.socket) -> bool:
        buf, deliver = self._buf, self._deliver
        assert deliver is not None
        for _ in range(_BUDGET):
            try:
                n = s.recv_into(buf)
            except BlockingIOError:
                return False
            except OSError:
                return False
            if n == 0:
                return False
            deliver(peer, bytes(buf[:n]))
        return True

    def send(self, dest: int, data: bytes) -> None:
        q = self._backlog.get(dest)
        if q:
            q.append(data)
            self.backlog_total += 1
            return
        try:
            self.socks[dest].send(data)
        except BlockingIOError:
            self._backlog[dest] = collections.deque([data])
            self.backlog_total += 1
            self._loop.add_writer(self.socks[dest].fileno(), self._writable, dest)
        except OSError as exc:
            if exc.errno == 90:  # EMSGSIZE
                raise PayloadTooLarge(
                    f"a {len(data)}-byte message does not fit the channel to node {dest}"
                ) from None
            raise

    def _writable(self, dest: int) -> None:
        q = self._backlog.get(dest)
        s = self.socks[dest]
        while q:
            try:
                s.send(q[0])
            except BlockingIOError:
                return
            q.popleft()
            self.backlog_total -= 1
        self._loop.remove_writer(s.fileno())
        self._backlog.pop(dest, None)

    def flush(self) -> None:
        pass  # every send is already visible

    def backlog(self) -> dict[int, int]:
        return {d: len(q) for d, q in self._backlog.items() if q}

    def close(self) -> None:
        loop = self._loop
        for s in self.socks.values():
            if loop is not None and not loop.is_closed():
                loop.remove_reader(s.fileno())
                loop.remove_writer(s.fileno())
            s.close()
        self.socks.clear()


def make_mesh(nodes: int, capacity: int) -> Any:
    """The best channels this build has: shared-memory rings, else socketpairs."""
    kind = os.environ.get("ACTORQ_MESH", "auto")
    if kind in ("auto", "ring"):
        try:
            from .shm import Ring  # noqa: F401
        except ImportError:
            if kind == "ring":
                raise
        else:
            return RingMesh(nodes, capacity)
    return SocketMesh(nodes, capacity)


class RingMesh(SocketMesh):  # placeholder until the ring wiring below replaces it
    kind = "socket"
