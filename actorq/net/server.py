"""A TCP connection server for a worker's loop that fails gracefully.

Who goes first when something runs out (the prefail policy)
===========================================================

A worker serving thousands of connections runs out of things: file
descriptors (``accept`` fails with EMFILE), or the memory its connections
buffer. When it does, doing nothing is a choice too: new clients wait in the
kernel's backlog forever while the connections that hold the resource keep
it, and if memory runs out the kernel's OOM killer ends the whole worker,
every connection on it with it. So before that happens ("prefail") the
server closes some connections itself, and the question is which.

A connection is scored by **what it holds times how long it has held it
without making progress**::

    score = (buffered input + buffered output + FD_WEIGHT) * (1 + seconds since progress)

*Resources held* is what closing it gives back: its bytes buffered (a
half-received request, replies it has not read) plus ``FD_WEIGHT`` for the
descriptor itself, so an empty connection still costs something. *Progress*
is a request completed or output taken by the client: the sign that someone
is being served. *Age* enters through it: a connection that has never
completed a request has been without progress since it was accepted, so
the longer it sat there, the higher it scores; a connection that has been
served for an hour and answered a request a moment ago scores near its bare
holdings. The highest score goes first: the slowloris connection dribbling a
header, the client that stopped reading with megabytes queued, the idle
keep-alive, in roughly that order; a busy client comes last.

The two triggers use it differently. Out of descriptors, only connections
without progress for ``prefail_after`` seconds are candidates, a few per
episode (1/32 of the open ones): a flood of new connections must not evict
clients that are being served, only reclaim what is wasted. Over the
worker's memory cap (``max_buffered``), the highest scorers are closed until
the total is back under it, busy or not, because memory is the harder limit:
past it, the OOM killer takes everyone.

Are we reinventing the OOM killer? Partly, on purpose. The kernel's killer
scores processes by memory held (plus an administrator's adjustment) and acts
when allocation has already failed; it knows nothing of progress and it
kills a whole worker. Here the unit is one connection, we act before the
failure (a cap below the real limit), and we know what the kernel cannot:
whether a connection is doing useful work. What we keep from it is the core
rule (take back the most with the fewest victims) and its humility: the
score is a heuristic, per-connection caps and timeouts do most of the work,
and this policy only decides the order when they were not enough.

The rest of the defences
========================
- Accepting on every worker: each :class:`Server` binds its own listener
  with ``SO_REUSEPORT``; the kernel spreads connections over the workers.
  Per worker: at most ``max_connections`` connections, ``max_per_peer`` from
  one address (0: no limit); past either, a new connection gets ``refusal``
  (if any) and is closed.
- Out of descriptors (EMFILE/ENFILE on ``accept``): the listener is no
  longer watched (no busy loop on a pending connection we cannot take), the
  prefail policy reclaims what is wasted, and accepting is retried on a
  timer (``accept_retry``) and as soon as any connection closes. One log line
  when the episode starts, one with the count when it ends.
- Slow clients (slowloris), checked by one sweep per worker every
  ``sweep_interval`` seconds, O(connections), no timer per read: a first
  complete request within ``first_request_timeout`` (nginx
  client_header_timeout, HAProxy timeout http-request); a request in progress
  completed within ``request_timeout`` plus one second per ``min_rate`` bytes
  received (Apache mod_reqtimeout's MinRate); nothing at all for
  ``idle_timeout`` (Redis ``timeout``; 0: never); output the client does not
  take for ``send_timeout`` (HAProxy timeout client).
- Caps: a connection holding more than ``max_input`` bytes of an incomplete
  request, or more than ``max_output`` bytes of replies not yet taken by the
  kernel, is closed (Redis client-query-buffer-limit and
  client-output-buffer-limit). Memory per connection stays bounded by them.
- Fair service: a connection reads at most ``turn_bytes`` per loop turn
  (one ``recv``); if the read was full it is queued again behind everything
  else ready, so a client pipelining thousands of requests is served a slice
  per turn and the others get their turn in between. Parsing and running
  what one slice holds is the protocol's work, bounded by the slice.
- A connection moved here from another worker (``handoff.py``) is adopted
  under the same connection caps as an accepted one, and keeps its sweep
  clocks: moving a slow client does not restart its timeouts.
- Every refusal and every close the server decides is counted by reason in
  :meth:`Server.stats`, and logged once per episode.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from ..loop import Handle, Loop, current_loop

__all__ = ["FD_WEIGHT", "Connection", "Limits", "Server", "listen", "prefail_order"]

log = logging.getLogger("actorq.net")

#: What a connection's descriptor counts for in the prefail score, in bytes.
FD_WEIGHT = 4096
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: Closes the server decides (counted, logged per episode); a peer's own close is not one.
DEFENCES = ("first_request_timeout", "request_timeout", "idle_timeout", "send_timeout",
            "input_cap", "output_cap", "prefail_fds", "prefail_memory")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-worker limits of a :class:`Server` (times in seconds, sizes in bytes)."""

    max_connections: int = 10000
    max_per_peer: int = 0  # 0: no limit (behind a NAT or a proxy one address is many users)
    first_request_timeout: float = 10.0
    request_timeout: float = 10.0
    min_rate: float = 500.0  # bytes/s that extend a request's time by one second each
    idle_timeout: float = 300.0  # 0: never
    send_timeout: float = 60.0
    max_input: int = 64 << 20
    max_output: int = 64 << 20
    max_buffered: int = 512 << 20  # all connections of the worker together; 0: no cap
    turn_bytes: int = 65536
    accept_batch: int = 64  # connections accepted per loop turn at most
    accept_retry: float = 0.25
    prefail_after: float = 5.0
    sweep_interval: float = 1.0
    backlog: int = 1024

    @classmethod
    def parse(cls, text: str, base: Limits | None = None) -> Limits:
        """``"idle_timeout=0, max_output=1048576"`` -> Limits (the rest from ``base``)."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for item in text.replace(",", " ").split():
            name, eq, value = item.partition("=")
            if name not in fields or not eq:
                raise ValueError(f"net limits: {item!r} is not name=value with a name among "
                                 f"{', '.join(fields)}")
            try:
                changes[name] = float(value) if fields[name] == "float" else int(value)
            except ValueError:
                raise ValueError(f"net limits: {name}={value!r} is not a number") from None
        return dataclasses.replace(base or cls(), **changes)


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A non-blocking TCP listener on host:port, shared with other workers (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
        s.listen(backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


class Connection:
    """One accepted connection. Subclass it and override :meth:`on_data`.

    The base reads (one ``recv`` of at most ``turn_bytes`` per turn), writes
    (:meth:`write` sends what the kernel takes and queues the rest), pauses
    and resumes reading for back-pressure, and keeps the counters the
    server's sweep and prefail policy read. All of it runs on the loop that
    accepted the connection.
    """

    def __init__(self, server: Server, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.closed = False
        self.reading = True
        self.outq: collections.deque[bytes | memoryview] = collections.deque()
        self.outbytes = 0  # bytes in outq: accepted by us, not yet by the kernel
        self.held = 0  # what the protocol holds of incomplete requests (on_data's answer)
        self.bytes_in = 0
        self.bytes_out = 0
        self.progress = 0  # reads that completed at least one request
        now = self.loop.time()
        self.born = now
        # The sweep's view: counters when it last looked, and since when
        # nothing moved (activity, progress, output), at sweep granularity.
        self._seen = (0, 0, 0)
        self._t_act = self._t_prog = self._t_req = self._t_out = now
        self._in_at_req = 0
        self._resume_queued = False
        self.loop.add_stream_reader(self.fd, self._on_readable)

    # -- what a protocol overrides -----------------------------------------------
    def on_data(self, data: bytes) -> int:
        """Handle bytes received; return how many bytes of incomplete requests
        the protocol now holds (0 when every request received is complete)."""
        raise NotImplementedError

    def on_drained(self) -> None:
        """All queued output has been taken by the kernel."""

    def on_close(self, reason: str) -> None:
        """The connection was closed (``reason``: "eof", "reset", a defence, ...)."""

    def handoff_state(self) -> Any:
        """What the protocol carries to another worker when this connection moves
        there (msgpack data, a few hundred bytes at most; see ``handoff.py``)."""
        return None

    def on_handed_in(self, state: Any) -> None:
        """This connection was moved here from another worker with ``state``
        (what :meth:`handoff_state` returned there)."""

    # -- moving to another worker (see handoff.py) ---------------------------------
    def quiet(self) -> bool:
        """Nothing of this connection lives in this process: no output queued,
        no partial request held, reading. Only then may it move to another worker."""
        return not self.closed and self.reading and not self.outq and not self.held

    def sweep_state(self) -> list[float]:
        """The sweep's view of this connection, as ages and counts (the loop's
        clock is CLOCK_MONOTONIC, but ages need no shared clock)."""
        now = self.loop.time()
        return [self.bytes_in, self.bytes_out, self.progress, now - self.born,
                now - self._t_act, now - self._t_prog, now - self._t_req, now - self._t_out,
                self.bytes_in - self._in_at_req]

    def restore_sweep_state(self, state: list[float]) -> None:
        """Continue the sweep's clocks from another worker's :meth:`sweep_state`,
        so moving a slow client does not restart its timeouts."""
        bytes_in, bytes_out, progress, born, act, prog, req, out, since_req = state
        now = self.loop.time()
        self.bytes_in, self.bytes_out, self.progress = int(bytes_in), int(bytes_out), int(progress)
        self.born = now - born
        self._t_act, self._t_prog, self._t_req, self._t_out = (now - act, now - prog, now - req,
                                                               now - out)
        self._in_at_req = self.bytes_in - int(since_req)
        self._seen = (self.bytes_in, self.bytes_out, self.progress)

    def detach(self, reason: str) -> None:
        """Let go of the connection without ending it (it lives on elsewhere):
        stop watching it, leave the server, close this process's descriptor."""
        if self._let_go():
            self.server._closed(self, reason)

    def _let_go(self) -> bool:
        """Stop watching the descriptor and close it, once: False if that was done."""
        if self.closed:
            return False
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()
        return True

    # -- input -------------------------------------------------------------------
    def _on_readable(self) -> bool | None:
        if self.closed or not self.reading:
            return None
        size = self.server.limits.turn_bytes
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            return None
        except OSError:
            self.close("reset")
            return None
        if not data:
            self.close("eof")
            return None
        n = len(data)
        self.bytes_in += n
        before = self.held
        held = self.on_data(data)
        if held < before + n:
            self.progress += 1
        self.held = held
        if held > self.server.limits.max_input and not self.closed:
            self.close("input_cap")
        # A short read drained the socket (a later byte raises a new edge),
        # unless the peer's FIN came in the same edge (no edge will follow:
        # read on to its end of file); a full one may have left more: come back
        # after the others' turn.
        return (n == size or self.loop.hung_up(self.fd)) and not self.closed and self.reading

    def pause_reading(self) -> None:
        """Stop reading (back-pressure: TCP's flow control holds the client)."""
        self.reading = False

    def resume_reading(self) -> None:
        """Read again, including what arrived while paused (no edge will tell)."""
        if self.closed or self.reading:
            return
        self.reading = True
        if not self._resume_queued:
            self._resume_queued = True
            self.loop.call_soon(self._read_again)

    def _read_again(self) -> None:
        self._resume_queued = False
        if self._on_readable():
            self._resume_queued = True
            self.loop.call_soon(self._read_again)

    # -- output ------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send now what the kernel takes; queue the rest and watch for room."""
        if self.closed:
            return
        if not self.outq:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close("reset")
                return
            self.bytes_out += sent
            if sent == len(data):
                return
            self.loop.add_writer(self.fd, self._on_writable)
            # A memoryview slice: no copy of what is left (it may be megabytes).
            self.outq.append(memoryview(data)[sent:])
            self.outbytes += len(data) - sent
        else:
            self.outq.append(data)
            self.outbytes += len(data)
        if self.outbytes > self.server.limits.max_output:
            self.close("output_cap")

    def _on_writable(self) -> None:
        outq = self.outq
        while outq and not self.closed:
            chunk = outq[0]
            try:
                sent = self.sock.send(chunk)
            except BlockingIOError:
                return
            except OSError:
                self.close("reset")
                return
            self.outbytes -= sent
            self.bytes_out += sent
            if sent < len(chunk):
                outq[0] = memoryview(chunk)[sent:]
                return  # a short send: the socket buffer is full; wait for the next edge
            outq.popleft()
        if self.closed:
            return
        self.loop.remove_writer(self.fd)
        self.on_drained()

    def close(self, reason: str = "closed") -> None:
        if not self._let_go():
            return
        self.outq.clear()
        self.outbytes = 0
        self.server._closed(self, reason)
        self.on_close(reason)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.fd} peer={self.peer} held={self.held}>"


def prefail_order(conns: Iterable[Connection], now: float) -> list[Connection]:
    """Connections in the order the prefail policy closes them (see the essay above)."""
    def score(c: Connection) -> float:
        return (c.held + c.outbytes + FD_WEIGHT) * (1.0 + max(0.0, now - c._t_prog))

    return sorted(conns, key=score, reverse=True)


class _Episodes:
    """Counts events by reason; logs one line when an episode starts and one
    with its count when it ends (no events for a quiet period)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.active: dict[str, list[float]] = {}  # reason -> [count, start, last]

    def note(self, reason: str, now: float, what: str) -> None:
        ep = self.active.get(reason)
        if ep is None:
            self.active[reason] = [1, now, now]
            log.warning("%s: %s (one line more when this episode ends)", self.name, what)
        else:
            ep[0] += 1
            ep[2] = now

    def end(self, reason: str, now: float, what: str) -> None:
        ep = self.active.pop(reason, None)
        if ep is not None:
            log.warning("%s: %s episode over after %.1f s: %d %s", self.name, reason,
                        now - ep[1], int(ep[0]), what)

    def quiet(self, now: float, period: float) -> None:
        for reason, ep in list(self.active.items()):
            if now - ep[2] >= period:
                self.end(reason, now, "accepts failed" if reason == "fds" else "times")


class Server:
    """Accepts on ``host:port`` in this worker and serves each connection
    with ``factory(server, sock, peer)`` (a :class:`Connection`)."""

    def __init__(self, factory: Callable[[Server, socket.socket, str], Connection],
                 host: str = "127.0.0.1", port: int = 0, *, limits: Limits | None = None,
                 loop: Loop | None = None, name: str = "net", refusal: bytes = b"") -> None:
        self.factory = factory
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        self.loop = loop or current_loop()
        self.name = name
        self.refusal = refusal
        self.connections: dict[Connection, None] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.listener: socket.socket | None = None
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._episodes = _Episodes(name)
        self._accepting = False
        self._retry: Handle | None = None
        self._sweeper: Handle | None = None
        self._closed_bytes = [0, 0]  # bytes in/out of connections already closed

    def start(self, sock: socket.socket | None = None) -> None:
        """Listen (or take ``sock``, a listening socket) and start accepting."""
        self.listener = sock or listen(self.host, self.port, self.limits.backlog)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self._watch()
        self._sweeper = self.loop.call_later(self.limits.sweep_interval, self._sweep)
        from .._runtime import metrics

        metrics.add_server(self)  # its totals() go to the worker's board (actorq top, Prometheus)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._retry is not None:
            self._retry.cancel()
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for conn in list(self.connections):
            conn.close("shutdown")
        from .._runtime import metrics

        metrics.remove_server(self)

    def stats(self) -> dict[str, int]:
        """Open connections, accepted, and every refusal/close by reason."""
        return {"open": len(self.connections), **self.counts}

    def totals(self) -> dict[str, int]:
        """The metrics' summary (O(connections)): open, accepted, refused (every
        reason), closed by a defence, and bytes in and out of all connections."""
        counts = self.counts
        return {
            "open": len(self.connections),
            "accepted": counts["accepted"],
            "refused": sum(n for k, n in counts.items() if k.startswith("refused_"))
            + counts["accept_fd_errors"],
            "closed": sum(n for k, n in counts.items() if k.startswith("closed_")),
            "bytes_in": self._closed_bytes[0] + sum(c.bytes_in for c in self.connections),
            "bytes_out": self._closed_bytes[1] + sum(c.bytes_out for c in self.connections),
        }

    # -- accepting ---------------------------------------------------------------
    def _watch(self) -> None:
        assert self.listener is not None
        self._accepting = True
        self.loop.add_reader(self.listener.fileno(), self._on_accept)

    def _on_accept(self) -> bool | None:
        listener = self.listener
        if listener is None or not self._accepting:
            return None
        lim = self.limits
        for _ in range(lim.accept_batch):
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno in _FD_ERRORS:
                    self._out_of_fds(exc)
                    return None
                continue  # ECONNABORTED and friends: that client is gone, take the next
            peer = str(addr[0])
            if len(self.connections) >= lim.max_connections:
                self._refuse(sock, "refused_conn_cap", f"{lim.max_connections} connections open")
            elif lim.max_per_peer and self._per_peer[peer] >= lim.max_per_peer:
                self._refuse(sock, "refused_peer_cap",
                             f"{lim.max_per_peer} connections open from {peer}")
            else:
                sock.setblocking(False)
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.counts["accepted"] += 1
                self._per_peer[peer] += 1
                conn = self.factory(self, sock, peer)
                self.connections[conn] = None
        return True  # more may wait: the connections already open get a turn first

    def adopt(self, sock: socket.socket, sweep: list[float], state: Any) -> Connection | None:
        """Serve a connection another worker moved here (see ``handoff.py``), under
        the same caps as one accepted here; None if a cap refused it."""
        lim = self.limits
        try:
            addr = sock.getpeername()
        except OSError:  # the client left while the connection was in flight
            sock.close()
            return None
        peer = str(addr[0]) if isinstance(addr, tuple) else str(addr)
        if len(self.connections) >= lim.max_connections:
            self._refuse(sock, "refused_conn_cap", f"{lim.max_connections} connections open")
            return None
        if lim.max_per_peer and self._per_peer[peer] >= lim.max_per_peer:
            self._refuse(sock, "refused_peer_cap",
                         f"{lim.max_per_peer} connections open from {peer}")
            return None
        sock.setblocking(False)
        self.counts["adopted"] += 1
        self._per_peer[peer] += 1
        conn = self.factory(self, sock, peer)
        self.connections[conn] = None
        conn.restore_sweep_state(sweep)
        conn.on_handed_in(state)
        return conn

    def _refuse(self, sock: socket.socket, reason: str, what: str) -> None:
        self.counts[reason] += 1
        self._episodes.note(reason, self.loop.time(), f"refusing connections: {what}")
        if self.refusal:
            try:
                sock.setblocking(False)
                sock.send(self.refusal)
            except OSError:
                pass
        sock.close()

    def _out_of_fds(self, exc: OSError) -> None:
        """Stop watching the listener; reclaim; retry on a timer or when one closes."""
        now = self.loop.time()
        self.counts["accept_fd_errors"] += 1
        self._episodes.note("fds", now, f"out of file descriptors ({exc.strerror}) with "
                            f"{len(self.connections)} connections open: not accepting until "
                            "some close; raise LimitNOFILE / ulimit -n")
        self._accepting = False
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
        stale = [c for c in self.connections if now - c._t_prog >= self.limits.prefail_after]
        for conn in prefail_order(stale, now)[: max(1, len(self.connections) // 32)]:
            conn.close("prefail_fds")
        if self._retry is None:
            self._retry = self.loop.call_later(self.limits.accept_retry, self._try_again)

    def _try_again(self) -> None:
        self._retry = None
        if self.listener is None or self._accepting:
            return
        self._watch()  # registering a ready listener raises an edge: _on_accept runs

    # -- connections -------------------------------------------------------------
    def _closed(self, conn: Connection, reason: str) -> None:
        if self.connections.pop(conn, 0) is None:
            self._closed_bytes[0] += conn.bytes_in
            self._closed_bytes[1] += conn.bytes_out
            n = self._per_peer[conn.peer] - 1
            if n:
                self._per_peer[conn.peer] = n
            else:
                del self._per_peer[conn.peer]
        if reason == "handed_off":
            self.counts["handed_off"] += 1
        elif reason in DEFENCES:
            self.counts["closed_" + reason] += 1
            self._episodes.note(reason, self.loop.time(), f"closing connections: {reason}")
        if not self._accepting and self.listener is not None and self._retry is None:
            self._retry = self.loop.call_soon(self._try_again)  # an fd came free

    def _sweep(self) -> None:
        """Once per ``sweep_interval``: the slow-client timeouts and the memory cap."""
        lim = self.limits
        now = self.loop.time()
        total = 0
        for c in list(self.connections):
            seen_in, seen_out, seen_prog = c._seen
            if c.bytes_in != seen_in or c.bytes_out != seen_out:
                c._t_act = now
            if c.progress != seen_prog or c.bytes_out != seen_out:
                c._t_prog = now
            if c.held == 0 or c.progress != seen_prog:
                c._t_req = now  # no request in progress, or one just completed
                c._in_at_req = c.bytes_in
            if c.outbytes == 0 or c.bytes_out != seen_out:
                c._t_out = now
            c._seen = (c.bytes_in, c.bytes_out, c.progress)
            if c.progress == 0:
                if now - c.born > lim.first_request_timeout + c.bytes_in / lim.min_rate:
                    c.close("first_request_timeout")
                    continue
            elif c.held and (now - c._t_req
                             > lim.request_timeout + (c.bytes_in - c._in_at_req) / lim.min_rate):
                c.close("request_timeout")
                continue
            if now - c._t_out > lim.send_timeout:
                c.close("send_timeout")
                continue
            if (lim.idle_timeout and not c.held and not c.outbytes
                    and now - c._t_act > lim.idle_timeout):
                c.close("idle_timeout")
                continue
            total += c.held + c.outbytes
        if lim.max_buffered and total > lim.max_buffered:
            for c in prefail_order(list(self.connections), now):
                if total <= lim.max_buffered:
                    break
                total -= c.held + c.outbytes
                c.close("prefail_memory")
        self._episodes.quiet(now, max(2.0, 2 * lim.sweep_interval))
        self._sweeper = self.loop.call_later(lim.sweep_interval, self._sweep)
