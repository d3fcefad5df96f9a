"""The kv server on actorq: one shard actor per worker, each accepting too.

How a request travels
---------------------
Every worker runs one :class:`Shard`. It owns the keys whose CRC-32 falls
on it, and it opens its own listening socket on the same port with
``SO_REUSEPORT``, so the kernel spreads incoming connections over the
workers with no acceptor process in between. The kernel cannot know which
keys a client will ask for, so a connection starts on whichever worker
accepted it, and each connection counts where its one-key requests go.
Once most of its recent ones (at least ``MOVE_AFTER``, and ``MOVE_SHARE``
times all the others) went to one other shard, the connection moves there
(:class:`actorq.net.Handoff`: the descriptor over a unix socket in the
runtime directory), at a moment when none of its replies is pending, so
nothing needs re-ordering; from then on its requests are local. Why: at one
request in flight, a request served across workers pays a cross-core
wake-up each way (~12 µs on a 2-vCPU VM) and about 1.6x the CPU of a local
one, and no batching removes that (RESULTS.md, "kv across workers"). A
client that spreads its keys evenly seldom moves (a move would not help
it), and a connection moves at most ``MAX_MOVES`` times.

Bytes read from a connection go through the RESP parser; each complete
request is routed (:func:`.commands.route`): answered on the spot (PING,
errors), run on this worker's own store (keys it owns: a plain function
call, no message), or sent to the shard that owns the key over the rings.
Remote requests are coalesced: every request bound for the same shard in
one loop turn, from every connection of this worker, travels in one
``run_many`` message and comes back as one reply (:class:`Outbox`). That is
what makes the hop affordable under load: the per-message costs (packing,
the doorbell, the wake-up) are paid once per turn, not once per request.

Replies go out in request order. Each connection keeps a queue of reply
slots; a slot is filled now (local) or when its shard answers (remote), and
the queue is flushed from the head as far as it is filled, in one ``send``.
A client that sends faster than it reads stops being served once 1 MiB of
replies waits for it, or 32 replies are queued behind other shards: the
requests already parsed wait (parsed, not run), the socket is not read, and
TCP's flow control pushes back on the client. Serving resumes when the
replies have gone out, so the memory a connection costs stays bounded by
those limits (times the largest value, for replies from other shards).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any
from zlib import crc32

import actorq
from actorq import net

from .commands import COMMANDS, KEY, SESSION, Fanout, check, execute, hello, route_checked
from .resp import RequestParser, encode_error, to_resp3
from .store import Store

log = logging.getLogger("examples.kvserver")

HOST = "127.0.0.1"
#: The kv server's connection limits (actorq.net.Limits' defaults, except as
#: set here); ``KVSERVER_NET="name=value ..."`` changes any of them.
LIMITS = net.Limits(idle_timeout=0)  # like Redis's ``timeout 0``: idle clients stay
#: Sent to a connection refused by a cap before it is closed (as Redis does).
REFUSAL = b"-ERR max number of clients reached\r\n"
#: Stop reading a connection while this many reply bytes wait to be sent to it.
HIGH_WATER = 1 << 20
#: ... or while this many of its replies are queued (most waiting for other
#: shards): their sizes are unknown until they arrive, so count them instead.
MAX_QUEUED = 32
#: A batch for another shard is sent at once when its requests reach this size.
BATCH_BYTES = 64 * 1024
#: Replies to another worker travel in messages of about this many bytes at most.
REPLY_BYTES = 2 << 20
#: One reply larger than this cannot cross workers (the runtime's largest record
#: is 8 MiB); it becomes an error reply naming the limit.
MAX_REMOTE_REPLY = (8 << 20) - 4096
#: A connection moves to the worker owning its keys once this many of its recent
#: one-key requests went to that shard ...
MOVE_AFTER = 8
#: ... and that shard had at least this many times as many of them as every
#: other shard (this one included) together: a client spreading its keys
#: evenly seldom moves.
MOVE_SHARE = 3
#: The requests counted for the decision: past this many, the counts are halved
#: (recent behaviour counts most; a client that changes keys can move again).
MOVE_WINDOW = 64
#: Moves per connection at most (no ping-pong between two workers).
MAX_MOVES = 4
SWEEP_INTERVAL = 0.1  # seconds between active-expiry passes
SWEEP_LIMIT = 200  # keys reclaimed per pass at most (bounded pause)


def limits_from_env() -> net.Limits:
    raw = os.environ.get("KVSERVER_NET", "")
    try:
        return net.Limits.parse(raw, LIMITS)
    except ValueError as exc:
        raise SystemExit(f"kvserver: KVSERVER_NET: {exc}") from None


class Slot:
    """A reply not known yet. ``value`` is set when it is; for a request split
    over shards, ``parts`` counts the shards still to answer and ``merge``
    makes the reply from ``replies`` (shard -> its replies, in order)."""

    __slots__ = ("merge", "parts", "replies", "value")

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.parts = 0
        self.replies: dict[int, list[bytes]] | None = None
        self.merge: Callable[[dict[int, list[bytes]]], bytes] | None = None


class Outbox:
    """Requests bound for other shards, gathered for one loop turn, then sent together.

    Each request is remembered with the connection and the reply slot it
    fills (and, for a part of a multi-shard request, the list of parts it
    joins). When a shard answers, every slot is filled first and each
    connection touched is flushed once: one ``send`` per connection per
    answer, not one per request.
    """

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.loop = shard.loop
        # shard index -> (requests; for each, (connection, slot, part or None); [bytes])
        self.batches: dict[int, tuple[list[list[bytes]], list[tuple[Any, Slot, Any]],
                                      list[int]]] = {}
        self.scheduled = False

    def submit(self, dest: int, req: list[bytes], conn: Connection, slot: Slot,
               part: tuple[list[bytes], int] | None = None) -> None:
        batch = self.batches.get(dest)
        if batch is None:
            batch = self.batches[dest] = ([], [], [0])
        batch[0].append(req)
        batch[1].append((conn, slot, part))
        batch[2][0] += sum(map(len, req))
        if batch[2][0] > BATCH_BYTES and self.shard.peers:
            # Big values: send this shard's batch now rather than build one
            # message larger than a ring (it would wait for room in pieces).
            del self.batches[dest]
            self._send_one(dest, batch[0], batch[1])
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.send)

    def send(self) -> None:
        self.scheduled = False
        if not self.shard.peers:
            return  # the other shards are not known yet: find_peers sends when they are
        batches, self.batches = self.batches, {}
        for dest, (reqs, waiting, _) in batches.items():
            self._send_one(dest, reqs, waiting)

    def _send_one(self, dest: int, reqs: list[list[bytes]],
                  waiting: list[tuple[Any, Slot, Any]]) -> None:
        try:
            fut = self.shard.peers[dest].run_many(reqs)
        except Exception as exc:  # e.g. PayloadTooLarge: a value over the runtime's 8 MiB
            self._fill(waiting, self._errors(exc, dest, len(waiting)))
            return
        fut.add_done_callback(lambda f: self._answered(f, waiting, dest))

    @staticmethod
    def _errors(exc: BaseException, dest: int, n: int) -> list[bytes]:
        return [encode_error(f"ERR shard {dest} did not answer: {type(exc).__name__}: {exc}")] * n

    def _answered(self, fut: Any, waiting: list[tuple[Any, Slot, Any]], dest: int) -> None:
        exc = fut.exception()
        token = 0
        if exc is not None:
            replies = self._errors(exc, dest, len(waiting))
        else:
            replies, token = fut.result()
        if token:
            # The shard ran them all but held back replies past one message's worth.
            rest = waiting[len(replies) :]
            try:
                more = self.shard.peers[dest].more(token)
            except Exception as exc2:
                self._fill(rest, self._errors(exc2, dest, len(rest)))
            else:
                more.add_done_callback(lambda f: self._answered(f, rest, dest))
        self._fill(waiting, replies)

    @staticmethod
    def _fill(waiting: list[tuple[Any, Slot, Any]], replies: list[bytes]) -> None:
        """Put each reply in its slot (in order), then flush each connection once."""
        touched: dict[Any, None] = {}
        for (conn, slot, part), reply in zip(waiting, replies, strict=False):
            if part is None:
                slot.value = reply if conn.proto == 2 else to_resp3(reply)
            else:
                got, want = part
                got.append(reply)
                if len(got) == want:
                    slot.parts -= 1
                    if slot.parts == 0:
                        conn.merge(slot)
            touched[conn] = None
        for conn in touched:
            conn.flush()


class Connection(net.Connection):
    """One client connection, served on the worker that accepted it, or on
    the worker owning its keys once it has shown which those are.

    A user of :mod:`actorq.net`: the base reads a slice per loop turn,
    writes, and enforces the caps and slow-client timeouts; this class
    parses RESP and runs the requests. It counts where its one-key requests
    go; when most of the recent ones went to one other shard, it moves
    there (:meth:`maybe_move`, :class:`actorq.net.Handoff`) at a moment when
    nothing of it is in flight, and its requests are local from then on.
    """

    _ids = itertools.count(1)

    def __init__(self, server: net.Server, sock: socket.socket, peer: str, shard: Shard) -> None:
        self.shard = shard
        self.id = next(self._ids)
        self.parser = RequestParser()
        self.proto = 2
        self.queue: collections.deque[bytes | Slot] = collections.deque()
        self.backlog: list[Any] = []  # requests parsed but not run while paused
        self.paused = False  # neither reading nor running: too many replies wait to be sent
        self.quitting = False
        # Where its recent one-key requests went: here, and to each other shard.
        self.local_hits = 0
        self.away = [0] * shard.nshards
        self.away_total = 0
        self.moves = 0
        self.move_queued = False
        # Look at moving again once away_total reaches this: a connection that
        # cannot or should not move is not re-examined on every read.
        self.next_check = MOVE_AFTER
        super().__init__(server, sock, peer)

    # -- input -------------------------------------------------------------------
    def on_data(self, data: bytes) -> int:
        self.process(self.parser.feed(data))
        return self.parser.pending()

    def process(self, reqs: list[Any]) -> None:
        """Run parsed requests in order; stop (and pause) once too much output waits."""
        shard = self.shard
        store = shard.store
        me = shard.index
        n = shard.nshards
        queue = self.queue
        # Replies ready while nothing is pending ahead of them go straight to
        # ``ready`` (one join, one send); once a reply must wait for another
        # shard, it and everything after it go through ``queue`` to keep order.
        ready: list[bytes] = []
        resp2 = self.proto == 2
        commands = COMMANDS
        size = 0
        for i, req in enumerate(reqs):
            if self.quitting:
                break
            try:
                if req.__class__ is not list:  # ProtocolError: answer it, keep the connection
                    reply = encode_error(req)  # type: ignore[arg-type]
                else:
                    cmd = commands.get(req[0])
                    arity = cmd.arity if cmd is not None else 0
                    if cmd is None or (len(req) != arity if arity > 0 else len(req) < -arity):
                        reply = check(req)  # type: ignore[assignment]  # the error reply
                    elif cmd.where is KEY:  # the hot path: one key, one shard
                        where = crc32(req[1]) % n
                        if where == me:
                            self.local_hits += 1
                            reply = cmd.handler(store, req)
                            if not resp2:
                                reply = to_resp3(reply)
                        else:
                            self.away[where] += 1
                            self.away_total += 1
                            if len(queue) >= MAX_QUEUED:
                                self.backlog = reqs[i:]
                                self.pause()
                                break
                            slot = Slot()
                            queue.append(slot)
                            shard.outbox.submit(where, req, self, slot)
                            continue
                    elif cmd.where is SESSION:
                        reply = self.session(req)
                        resp2 = self.proto == 2
                    else:
                        where = route_checked(cmd, req, n)
                        if where.__class__ is bytes:
                            reply = where  # type: ignore[assignment]
                        elif where.__class__ is int and where == me:
                            reply = execute(store, req)
                            if not resp2:
                                reply = to_resp3(reply)
                        else:
                            if len(queue) >= MAX_QUEUED:
                                self.backlog = reqs[i:]
                                self.pause()
                                break
                            if where.__class__ is int:
                                slot = Slot()
                                shard.outbox.submit(where, req, self, slot)  # type: ignore[arg-type]
                            else:
                                slot = self.fan_out(where)  # type: ignore[arg-type]
                            queue.append(slot)
                            continue
            except Exception as exc:  # a bug must cost one error reply, not the connection
                log.exception("kvserver: request %r failed", req[:1])
                reply = encode_error(f"ERR internal error: {type(exc).__name__}: {exc}")
            if queue:
                queue.append(reply)
            else:
                ready.append(reply)
                size += len(reply)
                if size > HIGH_WATER:
                    # Memory bound: hand what we have to the kernel; if it will not
                    # take it (the client is not reading), stop here, keep the rest
                    # of the requests, and stop reading until the socket drains.
                    self.write(b"".join(ready))
                    ready = []
                    size = 0
                    if self.outbytes > HIGH_WATER:
                        self.backlog = reqs[i + 1 :]
                        self.pause()
                        break
        if ready:
            self.write(b"".join(ready) if len(ready) > 1 else ready[0])
        if queue:
            self.flush()
        elif self.quitting and not self.outq:
            self.close("quit")
        if not queue and self.away_total >= self.next_check and not self.move_queued:
            # (with replies pending, the flush that sends the last of them does this)
            self.move_queued = True
            self.loop.call_soon(self.maybe_move)

    # -- moving to the worker owning its keys ----------------------------------------
    def maybe_move(self) -> None:
        """Move to the shard most of the recent one-key requests went to, if one
        clearly leads and nothing of this connection is in flight.

        Run from the loop, never from inside :meth:`on_data` (the base updates
        its counters after it returns, and they travel with the connection).
        If the connection is busy now, the next quiet moment tries again: the
        end of :meth:`flush` or of :meth:`process` calls back here. If no shard
        leads, or the move failed, it looks again after ``MOVE_AFTER`` more
        requests for other shards.
        """
        self.move_queued = False
        if self.closed:
            return
        away = self.away
        if self.local_hits + self.away_total > MOVE_WINDOW:
            self.local_hits //= 2
            for i, a in enumerate(away):
                away[i] = a // 2
            self.away_total = sum(away)
            # A look that was due stays due (else a busy connection could halve
            # its counts below the next look and never be looked at again).
            self.next_check = min(self.next_check, self.away_total)
        dest = max(range(len(away)), key=away.__getitem__)
        lead = away[dest]
        if self.moves >= MAX_MOVES:
            self.next_check = 1 << 62  # never again
            return
        if lead < MOVE_AFTER or lead < MOVE_SHARE * (self.local_hits + self.away_total - lead):
            self.next_check = self.away_total + MOVE_AFTER
            return
        if self.queue or self.backlog or self.paused or self.quitting:
            return  # replies in flight: the flush that sends the last of them retries
        if not self.shard.move(self, dest):
            self.next_check = self.away_total + MOVE_AFTER

    def handoff_state(self) -> Any:
        return [self.proto, self.id, self.moves + 1]

    def on_handed_in(self, state: Any) -> None:
        self.proto, self.id, self.moves = (int(x) for x in state)

    def session(self, req: list[bytes]) -> bytes:
        if req[0].upper() == b"QUIT":
            self.quitting = True
            return b"+OK\r\n"
        reply, self.proto = hello(req, self.proto, self.id)
        return reply

    def fan_out(self, fan: Fanout) -> Slot:
        slot = Slot()
        slot.parts = len(fan.parts)
        slot.replies = {}
        slot.merge = fan.merge
        shard = self.shard
        for dest, reqs in fan.parts.items():
            if dest == shard.index:
                slot.replies[dest] = [execute(shard.store, r) for r in reqs]
                slot.parts -= 1
                continue
            got: list[bytes] = []
            slot.replies[dest] = got
            for r in reqs:
                shard.outbox.submit(dest, r, self, slot, (got, len(reqs)))
        if slot.parts == 0:
            self.merge(slot)
        return slot

    def merge(self, slot: Slot) -> None:
        assert slot.merge is not None
        assert slot.replies is not None
        reply = slot.merge(slot.replies)
        slot.value = reply if self.proto == 2 else to_resp3(reply)

    # -- output ------------------------------------------------------------------
    def flush(self) -> None:
        """Send every reply from the head of the queue that is ready, in one send."""
        if self.closed:
            return
        queue = self.queue
        out = []
        while queue:
            head = queue[0]
            if head.__class__ is bytes:
                out.append(head)
            elif head.value is not None:  # type: ignore[union-attr]
                out.append(head.value)  # type: ignore[union-attr]
            else:
                break
            queue.popleft()
        if out:
            self.write(b"".join(out))
        if self.quitting and not queue and not self.outq:
            self.close("quit")
        elif self.paused and not self.outq:
            self.resume()
        elif not queue and self.away_total >= self.next_check and not self.move_queued:
            self.move_queued = True
            self.loop.call_soon(self.maybe_move)

    def on_drained(self) -> None:
        if self.quitting and not self.queue:
            self.close("quit")
        elif self.paused:
            self.resume()

    def pause(self) -> None:
        self.paused = True
        self.pause_reading()

    def resume(self) -> None:
        """Leave a pause once the replies have gone out and few requests are in flight."""
        if self.closed or self.outq or len(self.queue) >= MAX_QUEUED // 2:
            return
        self.paused = False
        backlog, self.backlog = self.backlog, []
        if backlog:
            self.process(backlog)
        if not self.paused:
            self.resume_reading()  # edge-triggered: bytes that came meanwhile raise no edge


def shard_name(index: int) -> str:
    return f"kv-shard-{index}"


@actorq.actor(restart="always")
class Shard:
    """One worker's keys, its listening socket and the connections it accepted.

    Declared ``restart="always"``: if its worker dies, the supervisor forks a
    new one on the same CPU and re-creates the shard there from the same
    arguments (same id and name, so the other shards' refs stay good). The
    new shard accepts on the same port again and serves its key range,
    empty: this is an in-memory store. The dead worker's connections are
    gone; every other connection carries on, and requests for the lost
    shard's keys meanwhile get an error reply, never a hang.
    """

    def __init__(self, index: int, nshards: int, port: int, handoff_dir: str | None = None
                 ) -> None:
        self.index = index
        self.nshards = nshards
        self.port = port
        # Where each shard's worker receives connections moved to it (None: never move).
        self.handoff_paths = ([handoff_path(handoff_dir, port, i) for i in range(nshards)]
                              if handoff_dir is not None and nshards > 1 else None)
        self.handoff: net.Handoff | None = None
        self.store = Store()
        self.peers: list[Any] = []
        self.server: net.Server | None = None
        self.sweeper: Any = None
        self.loop: Any = None
        self.outbox: Outbox | None = None
        self.peers_ready: Any = None
        self.profiler: Any = None
        self.held: dict[int, list[bytes]] = {}  # replies run_many held back, by token
        self.tokens = 0

    def on_start(self) -> None:
        """Start accepting at once; find the other shards in the background.

        Not awaited here: at the first start the other shards may not exist
        yet (main spawns them one by one), and a spawn waits for on_start.
        Requests for other shards wait in the outbox until the refs are known.
        """
        self.loop = actorq.current_loop()
        self.outbox = Outbox(self)
        self.peers_ready = self.loop.create_future()
        self.server = net.Server(
            lambda server, sock, peer: Connection(server, sock, peer, self),
            HOST, self.port, limits=limits_from_env(), loop=self.loop,
            name=f"kv-shard-{self.index}", refusal=REFUSAL)
        self.server.start()
        if self.handoff_paths is not None:
            self.handoff = net.Handoff(self.server, self.handoff_paths[self.index])
            self.handoff.start()
        self.sweeper = self.loop.call_later(SWEEP_INTERVAL, self.sweep)
        self.loop.spawn(self.find_peers())
        if os.environ.get("KVSERVER_PROFILE"):
            # Debugging aid: profile this worker until stop, then write
            # $KVSERVER_PROFILE/shard-N.prof (read it with python -m pstats).
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()

    async def find_peers(self) -> None:
        rt = actorq.runtime()
        while True:
            try:
                peers = [await rt.lookup(shard_name(i)) for i in range(self.nshards)]
                break
            except actorq.ActorNotFound:
                await actorq.sleep(0.02)
        self.peers = peers
        self.peers_ready.set_result(None)
        assert self.outbox is not None
        if self.outbox.batches:
            self.outbox.send()

    async def ready(self) -> int:
        """Returns the port once this shard accepts and knows every other shard."""
        await self.peers_ready
        return self.port

    def run_many(self, reqs: list[list[bytes]]) -> tuple[list[bytes], int]:
        """Run requests for keys this shard owns (sent by the other workers).

        All run now, in order. The replies go back in messages of at most
        REPLY_BYTES: past that the rest are held under a token, and the asker
        fetches them with :meth:`more` (a record larger than the runtime's
        largest, 8 MiB, cannot cross at all; 32 GETs of 512 KiB would).
        """
        store = self.store
        out = []
        for r in reqs:
            try:
                reply = execute(store, r)
            except Exception as exc:  # one failing request costs one error reply
                log.exception("kvserver: request %r failed", r[:1])
                reply = encode_error(f"ERR internal error: {type(exc).__name__}: {exc}")
            if len(reply) > MAX_REMOTE_REPLY:
                reply = encode_error(
                    f"ERR reply of {len(reply)} bytes is too large to cross workers "
                    f"(at most {MAX_REMOTE_REPLY}); connect to the worker owning the key"
                )
            out.append(reply)
        return self._chunk(out)

    def more(self, token: int) -> tuple[list[bytes], int]:
        """The next replies held back by :meth:`run_many`."""
        return self._chunk(self.held.pop(token))

    def _chunk(self, replies: list[bytes]) -> tuple[list[bytes], int]:
        total = 0
        for i, r in enumerate(replies):
            total += len(r)
            if total > REPLY_BYTES and i > 0:
                self.tokens += 1
                self.held[self.tokens] = replies[i:]
                return replies[:i], self.tokens
        return replies, 0

    def move(self, conn: Connection, dest: int) -> bool:
        """Hand ``conn`` to shard ``dest``'s worker; False if it stays here."""
        if self.handoff is None or self.handoff_paths is None:
            return False
        return self.handoff.send(conn, self.handoff_paths[dest])

    def stats(self) -> dict[str, int]:
        """Keys, connections, and the connection server's refusals and closes by reason."""
        net_stats = self.server.stats() if self.server is not None else {}
        return {"index": self.index, "pid": os.getpid(), "keys": len(self.store.data),
                "connections": net_stats.get("open", 0), **net_stats}

    def sweep(self) -> None:
        self.store.sweep(limit=SWEEP_LIMIT)
        self.sweeper = self.loop.call_later(SWEEP_INTERVAL, self.sweep)

    def on_stop(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(
                os.path.join(os.environ["KVSERVER_PROFILE"], f"shard-{self.index}.prof"))
        if self.sweeper is not None:
            self.sweeper.cancel()
        if self.handoff is not None:
            self.handoff.close()
        if self.server is not None:
            self.server.close()


def handoff_path(directory: str, port: int, index: int) -> str:
    """The unix socket at which shard ``index`` receives connections moved to it."""
    return os.path.join(directory, f"kv-{port}-{index}.handoff")


def handoff_dir_of(rt: Any) -> str | None:
    """The runtime directory (mode 0700: only this runtime's processes can hand
    sockets over), or None if its paths are too long for a unix socket."""
    address = rt.address
    if not address.startswith("ipc://"):
        return None
    directory = os.path.dirname(address[len("ipc://"):])
    if len(os.fsencode(handoff_path(directory, 65535, 9999))) > 107:
        log.warning("kvserver: runtime directory %s is too long for a unix socket path: "
                    "connections will not move to the worker owning their keys", directory)
        return None
    return directory


def port_from_env() -> int:
    raw = os.environ.get("KVSERVER_PORT", "6380")
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"kvserver: KVSERVER_PORT={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"kvserver: KVSERVER_PORT={port} is outside 0-65535")
    return port


def probe_port(port: int) -> int:
    """Fail early and clearly if anything holds ``port``; returns it (a free one for 0).

    Bound *without* SO_REUSEPORT on purpose: with it, binding would succeed
    beside another SO_REUSEPORT listener of the same user (a second
    kvserver, say) and the two servers would silently share connections.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return s.getsockname()[1]
    except OSError as exc:
        raise SystemExit(f"kvserver: cannot use {HOST}:{port}: {exc.strerror}; "
                         "set KVSERVER_PORT to a free port (0 picks one)") from None
    finally:
        s.close()


def reserve_port(port: int) -> socket.socket:
    """Bind (not listen) a SO_REUSEPORT socket on a free port, held until every
    worker listens on it: turns port 0 into one real port they all share."""
    port = probe_port(port)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((HOST, port))
    return s


async def main(rt: Any) -> None:
    """``actorq run examples.kvserver.server:main``: serve until SIGTERM/SIGINT."""
    reserved = reserve_port(port_from_env())
    port = reserved.getsockname()[1]
    cpus = rt.workers
    moves = os.environ.get("KVSERVER_MOVE", "1") != "0"
    handoff_dir = handoff_dir_of(rt) if moves else None
    try:
        shards = [await rt.spawn(Shard, i, len(cpus), port, handoff_dir, name=shard_name(i),
                                 cpu=cpu)
                  for i, cpu in enumerate(cpus)]
        for s in shards:
            await s.ready()
    finally:
        reserved.close()
    print(f"kvserver: {len(shards)} shards on CPUs {cpus}", flush=True)
    print(f"listening on {HOST}:{port}", flush=True)
    while True:  # until SIGTERM/SIGINT cancels main; the shards' on_stop close up
        await actorq.sleep(3600)
