"""The data plane between processes: one channel per ordered pair of nodes.

Node 0 is the supervisor, nodes 1..N the workers. The supervisor makes the
mesh before it forks, so workers inherit it (and a restarted worker, forked
again, inherits the same one: messages sent to a dead worker wait in its
inbound channels for its successor). ``RingMesh`` makes O(N) things up front
(per node: one memfd of ring slots, one slab, two eventfds) and a pair's ring
comes into being when its first record is written; ``SocketMesh`` makes a
socketpair per pair of nodes (O(N²) fds: the fallback for small meshes).

Whatever the channel (shared-memory rings, see ``RingMesh``; or socketpairs,
``SocketMesh``, the fallback where rings cannot run), a
``Port`` gives its node three things:

- ``send(dest, message)``: never blocks, never drops. Messages for one
  destination are coalesced into one *batch record* (a msgpack array whose
  elements are the messages, each already packed by the caller: the array is
  their bytes joined behind an array header, no second encode), cut at
  ``_BATCH_BYTES`` and at every flush; a batch of one is written as the
  message itself (``messages()`` tells them apart). When the channel to ``dest`` is full
  the batch joins a local backlog for ``dest`` (and so does every later one,
  keeping FIFO), and the loop is asked to call us when there is room. The
  sender's loop keeps draining its own inbound channels meanwhile, so two
  workers asking each other with both directions full cannot deadlock: a
  fixed queue depth is never the backpressure policy (Seastar learned this
  with nested submit_to; see anchors.md section 2).
- ``flush()``: make written records visible to their readers (one doorbell
  per destination per loop turn at most; batching is where throughput comes
  from). ``publish(dest)`` does it for one destination now (an ask).
- ``start(loop, deliver, taken)``: call ``deliver(sender, messages)`` with the
  decoded messages of every inbound batch, in order per sender. Records leave
  the channel before they are delivered (``taken(n)`` says how many messages
  were just taken): a worker that dies while handling one does not hand it to
  its successor again, so a poison message runs at most once and the
  supervisor can count what was lost.

The whole way of a message, sender to actor, is told at the top of node.py.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._codec import unpack
from ..errors import PayloadTooLarge, RingFull

if TYPE_CHECKING:
    from ..shm import Inbox

log = logging.getLogger("actorq.mesh")

Deliver = Callable[[int, list[Any]], None]
Taken = Callable[[int], None]


def _no_count(n: int) -> None:
    pass


# A batch is cut once it holds this many messages or bytes: it stays an inline
# ring record (below the slab threshold), a reader starts on the first
# message of a long burst while the writer still fills the next batch, and a
# drain's budget (below) bounds how long the loop's other sources wait, even
# when each message takes its actor a while.
_BATCH_MSGS = 64
_BATCH_BYTES = 15 << 10  # below the rings' slab threshold (16 KiB): an inline record
_BUDGET = 4  # batch records per wake (at most 256 messages) before other sources get a turn
MAX_MESSAGE = 8 << 20  # the largest message: the rings' largest slab class
_CAPACITY = 1 << 18  # bytes per channel unless configured (the inbox's DEFAULT_SLOT_CAPACITY)


def _array_header(n: int) -> bytes:
    """msgpack's header of an n-element array: batch = header + the packed messages."""
    if n < 16:
        return _FIXARRAY[n]
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_FIXARRAY = [bytes([0x90 | n]) for n in range(16)]


def messages(record: Any) -> list[Any]:
    """The messages of a decoded record: a batch is a list of messages, a lone
    message is itself a list whose first item is its kind (an int)."""
    if type(record) is not list or not record:
        raise ValueError(f"a record must be a message or a batch, not {record!r:.60}")
    return [record] if type(record[0]) is int else record


class Port:
    """One node's ends of the mesh (see the module docstring)."""

    index: int
    backlog_total: int = 0  # messages waiting in backlogs (their channel was full)
    backlog_bytes: int = 0  # and their bytes
    # the largest packed message a record can carry (less the 5 bytes of a
    # batch's array header)
    max_message: int = MAX_MESSAGE
    draining: bool = False  # True while inbound records are delivered: a flush follows
    # destination -> [header slot, this turn's messages...], not yet a record
    _out: dict[int, list[bytes]]
    _outsize: dict[int, int]  # their bytes

    def send(self, dest: int, data: bytes) -> None:
        """Add one packed message to ``dest``'s batch (see the module docstring).

        Raises PayloadTooLarge here, at the sender, for a message no record can
        hold; a batch is cut before a message that would take it past
        ``_BATCH_BYTES``, so only a lone message is ever larger."""
        n = len(data)
        if n > self.max_message:
            raise PayloadTooLarge(
                f"a {n}-byte message is too large for the channel to node {dest} "
                f"(at most {self.max_message} bytes, the rings' largest record)"
            )
        out = self._out.get(dest)
        if out is not None:
            size = self._outsize[dest] + n
            if size <= _BATCH_BYTES and len(out) <= _BATCH_MSGS:
                out.append(data)
                self._outsize[dest] = size
                return
            self._cut(dest)
        self._out[dest] = [b"", data]  # [0]: the array header, filled in by _cut
        self._outsize[dest] = n

    def send_now(self, dest: int, data: bytes) -> None:
        """Send one message and make it visible at once (an ask: someone waits).
        Behind this turn's batch for ``dest`` if there is one (FIFO); else
        written as it is, without a batch."""
        if dest in self._out or len(data) > self.max_message:
            self.send(dest, data)  # (raises PayloadTooLarge, naming the bound)
        else:
            self._write(dest, data, 1)
        self.publish(dest)

    def _cut(self, dest: int) -> None:
        """Make ``dest``'s batch one record and hand it to the channel."""
        out = self._out.pop(dest)
        del self._outsize[dest]
        count = len(out) - 1
        if count == 1:  # a lone message (an ask, its reply) goes as it is: no join
            self._write(dest, out[1], 1)
            return
        out[0] = _array_header(count)
        self._write(dest, b"".join(out), count)

    def _cut_all(self) -> None:
        for dest in list(self._out):
            self._cut(dest)

    def _write(self, dest: int, record: bytes, count: int) -> None:  # pragma: no cover
        """Write one batch record of ``count`` messages (or queue it in the backlog)."""
        raise NotImplementedError

    def flush(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def publish(self, dest: int) -> None:
        """Make what was sent to ``dest`` visible now (default: at the next flush)."""

    def start(
        self, loop: Any, deliver: Deliver, taken: Taken = _no_count
    ) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def backlog(self) -> dict[int, int]:  # pragma: no cover - interface
        raise NotImplementedError

    def queued(self, dest: int) -> int:  # pragma: no cover - interface
        """Records for ``dest`` waiting in our backlog (the channel was full)."""
        raise NotImplementedError

    def on_room(self, dest: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the backlog for ``dest`` has drained."""
        if not self.queued(dest):
            callback()
            return
        self._room.setdefault(dest, []).append(callback)

    def _roomy(self, dest: int) -> None:
        for callback in self._room.pop(dest, ()):
            callback()

    _room: dict[int, list[Callable[[], None]]]


# --- socketpair channels ---------------------------------------------------------


class SocketMesh:
    """Channels as stream socketpairs (one per unordered pair of nodes), each
    record framed by a 4-byte length: the fallback where rings cannot run.

    Weaker than the rings on one point: a worker killed in the middle of
    writing or reading a frame leaves its successor a stream that starts
    mid-frame (the rings publish whole records only). Choose it with
    ``ACTORQ_MESH=socket``; it is picked by itself only when rings fail."""

    kind = "socket"

    def __init__(self, nodes: int, capacity: int = 1 << 18) -> None:
        self.nodes = nodes
        self.ends: dict[tuple[int, int], socket.socket] = {}
        for i in range(nodes):
            for j in range(i + 1, nodes):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
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


_LEN = struct.Struct("<I")


class SocketPort(Port):
    def __init__(self, index: int, socks: dict[int, socket.socket]) -> None:
        self.index = index
        self.socks = socks
        self._out = {}
        self._outsize = {}
        self._unsent: dict[int, bytearray] = {}  # bytes the kernel did not take yet, per peer
        self._unsentn: dict[int, int] = {}  # messages in _unsent, per peer
        self._room = {}
        self._in: dict[int, bytearray] = {j: bytearray() for j in socks}
        self._loop: Any = None
        self._deliver: Deliver | None = None
        self._buf = bytearray(1 << 18)

    def start(self, loop: Any, deliver: Deliver, taken: Taken = _no_count) -> None:
        self._loop, self._deliver, self._taken = loop, deliver, taken
        for peer, s in self.socks.items():
            loop.add_reader(s.fileno(), self._readable, peer, s)

    def _readable(self, peer: int, s: socket.socket) -> bool:
        buf, acc = self._buf, self._in[peer]
        for _ in range(_BUDGET):
            try:
                n = s.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if n == 0:
                break
            acc += memoryview(buf)[:n]
            if n < len(buf):
                break  # a short read drained the stream (edge-triggered rule)
        else:
            self._frames(peer, acc)
            return True  # budget spent: call again
        self._frames(peer, acc)
        return False

    def _frames(self, peer: int, acc: bytearray) -> None:
        deliver = self._deliver
        assert deliver is not None
        off, end = 0, len(acc)
        batches = []
        count = 0
        while end - off >= 4:
            (n,) = _LEN.unpack_from(acc, off)
            if end - off - 4 < n:
                break
            try:
                msgs = messages(unpack(memoryview(acc)[off + 4 : off + 4 + n]))
            except Exception as exc:
                log.error("node %d: unreadable record from node %d: %s", self.index, peer, exc)
            else:
                batches.append(msgs)
                count += len(msgs)
            off += 4 + n
        if off:
            del acc[:off]
        self._taken(count)
        for msgs in batches:
            deliver(peer, msgs)

    def _write(self, dest: int, record: bytes, count: int) -> None:
        frame = _LEN.pack(len(record)) + record
        out = self._unsent.get(dest)
        if out:
            out += frame
            self.backlog_total += count
            self.backlog_bytes += len(frame)
            self._unsentn[dest] += count
            return
        s = self.socks[dest]
        try:
            sent = s.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(frame):
            self._unsent[dest] = bytearray(frame[sent:])
            self._unsentn[dest] = count
            self.backlog_total += count
            self.backlog_bytes += len(frame) - sent
            self._loop.add_writer(s.fileno(), self._writable, dest)

    def _writable(self, dest: int) -> None:
        out = self._unsent.get(dest)
        s = self.socks[dest]
        while out:
            try:
                sent = s.send(out)
            except (BlockingIOError, InterruptedError):
                return
            del out[:sent]
            self.backlog_bytes -= sent
        self._loop.remove_writer(s.fileno())
        self._unsent.pop(dest, None)
        self.backlog_total -= self._unsentn.pop(dest, 0)
        self._roomy(dest)

    def queued(self, dest: int) -> int:
        return self._unsentn.get(dest, 0)

    def flush(self) -> None:
        self._cut_all()  # a written frame is visible at once

    def publish(self, dest: int) -> None:
        if dest in self._out:
            self._cut(dest)

    def backlog(self) -> dict[int, int]:
        return {d: n for d, n in self._unsentn.items() if n}

    def close(self) -> None:
        loop = self._loop
        for s in self.socks.values():
            if loop is not None and not loop.is_closed():
                loop.remove_reader(s.fileno())
                loop.remove_writer(s.fileno())
            s.close()
        self.socks.clear()


def make_mesh(nodes: int, capacity: int | None, numa: list[int | None] | None = None) -> Any:
    """The best channels this build has: shared-memory rings, else socketpairs.

    ``capacity``: bytes per ring (None: 256 KiB, whatever the number of nodes).
    ``$ACTORQ_MESH`` = ``ring`` or ``socket`` forces one (benchmarks compare them).
    """
    capacity = capacity or _CAPACITY
    kind = os.environ.get("ACTORQ_MESH", "auto")
    if kind in ("auto", "ring"):
        try:
            return RingMesh(nodes, capacity, numa)
        except ImportError:
            if kind == "ring":
                raise
        except Exception as exc:  # e.g. RingError on a CPU without TSO
            if kind == "ring":
                raise
            log.warning("shared-memory rings unavailable (%s); using socketpairs", exc)
    return SocketMesh(nodes, capacity)


# --- shared-memory rings -----------------------------------------------------------


class RingMesh:
    """Channels as SPSC rings (actorq.shm), O(N) in fds and memory.

    For each node j the supervisor makes, before forking: an ``Inbox`` (one
    sparse memfd holding j's ready flags and one ring slot per possible
    sender, plus j's doorbell eventfd), a ``Slab`` (one sparse memfd for the
    large records j sends to anyone) and j's space eventfd (rung by any
    reader that frees room j is waiting for). Both memfds are bound to j's
    NUMA node. That is 4 fds per node and about two touched pages, however
    many peers there are; a ring's pages are allocated when its sender first
    writes, so rings are made on demand and each keeps its full capacity.

    A child keeps the mappings and the eventfds (it writes to every inbox and
    rings every writer's space doorbell) and closes its copies of the memfd
    descriptors. Readers and writers are made in the child, on first use,
    from the positions stored in shared memory: a restarted worker finds the
    records waiting in its slots, and its inbox looks once at every slot a
    sender ever opened (``Inbox.resume``).
    """

    kind = "ring"

    def __init__(self, nodes: int, capacity: int, numa: list[int | None] | None = None) -> None:
        from ..shm import Inbox, Slab
        from ..shm.doorbell import new_eventfd

        cap = 1 << max(12, (capacity - 1).bit_length())  # a power of two
        self.nodes = nodes
        self.space_fds: list[int] = []
        self.slabs: list[Slab | None] = []
        self.inboxes: list[Inbox] = []
        try:
            self.space_fds.extend(new_eventfd() for _ in range(nodes))
            for j in range(nodes):
                node = numa[j] if numa is not None and j < len(numa) else None
                self.slabs.append(Slab.create(readers=nodes, node=node, name=f"actorq-slab-{j}"))
                self.inboxes.append(
                    Inbox(
                        nodes,
                        cap,
                        node=node,
                        name=f"actorq-inbox-{j}",
                        space_fds=self.space_fds,
                        slabs=self.slabs,
                        slab_reader=j,
                    )
                )
        except BaseException:
            self.close()
            raise

    def port(self, index: int) -> RingPort:
        inbox = self.inboxes[index]
        inbox.zero_copy = True  # RingPort decodes batches straight from the ring
        inbox.resume()
        port = RingPort(index, inbox, _Writers(self, index), self.space_fds[index])
        slab = self.slabs[index]  # our large records go through our own slab
        largest = slab.largest if slab is not None else inbox.capacity // 2 - 8  # inline only
        port.max_message = largest - 5
        return port

    def close_others(self, index: int) -> None:
        """In a child: close our copies of the memfd descriptors (the mappings
        stay: we write into every inbox and slab). Nothing is passed on from a
        child, so the fds are not needed; the eventfds are."""
        for inbox in self.inboxes:
            inbox.segment.close_fd()
        for slab in self.slabs:
            if slab is not None:
                slab.segment.close_fd()

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.close()
        self.inboxes = []
        for slab in self.slabs:
            if slab is not None:
                slab.close()
        self.slabs = []
        for fd in self.space_fds:
            os.close(fd)
        self.space_fds = []


class _Writers(dict[int, Any]):
    """Node ``index``'s writer to each peer, made on first use (that is when
    the ring's slot is first touched)."""

    def __init__(self, mesh: RingMesh, index: int) -> None:
        super().__init__()
        self.mesh = mesh
        self.index = index

    def __missing__(self, dest: int) -> Any:
        if dest == self.index or not 0 <= dest < self.mesh.nodes:
            raise KeyError(dest)
        writer = self[dest] = self.mesh.inboxes[dest].ring(self.index).writer()
        return writer


class RingPort(Port):
    def __init__(self, index: int, inbox: Inbox, writers: dict[int, Any], space_fd: int) -> None:
        self.index = index
        self.inbox = inbox
        self.writers = writers  # made on first use (RingMesh)
        self.space_fd = space_fd  # one for all of our writers: see _on_space
        self._space_watched = False
        self._dirty: set[int] = set()
        self._out = {}
        self._outsize = {}
        # destination -> batch records (and their message counts) its full ring refused
        self._backlog: dict[int, collections.deque[tuple[bytes, int]]] = {}
        self._queued: dict[int, int] = {}  # destination -> messages in its backlog
        self._room = {}
        self._loop: Any = None
        self._deliver: Deliver  # set by start(), before anything can call _drain
        self._remove_hook: Any = None
        self._drain_queued = False
        self._batch: list[tuple[int, list[Any]]] = []  # (sender, messages) taken this drain
        self._batch_n = 0  # messages in _batch
        # An answer is likely soon: we just published an ask, or answered what
        # we drained (the asker tends to ask again). The next before_sleep then
        # spins a full ``max_s`` once, whatever the adaptive budget decayed to:
        # in a ping-pong slower than ``max_s`` with both sides asleep, the
        # Spinner never learns to spin by itself (each sleep lasts longer than
        # ``max_s``), and every round trip pays two kernel wake-ups. Bounded:
        # one spin per ask or answered drain; an idle node never spins.
        self._expect = False

    # -- inbound ---------------------------------------------------------------------
    def start(self, loop: Any, deliver: Deliver, taken: Taken = _no_count) -> None:
        self._loop, self._deliver, self._taken = loop, deliver, taken
        loop.add_reader(self.inbox.doorbell_fd, self._doorbell)
        self._remove_hook = loop.before_sleep(self._before_sleep)
        self._queue_drain()  # records may be waiting already (a restarted worker)

    def _take(self, sender: int, record: memoryview) -> None:
        # zero copy: ``record`` is the ring's own memory, valid until we return
        try:
            msgs = messages(unpack(record))
        except Exception as exc:  # a record we cannot read must not stop the worker
            log.error("node %d: unreadable record from node %d: %s", self.index, sender, exc)
            return
        self._batch_n += len(msgs)
        self._batch.append((sender, msgs))

    def _doorbell(self) -> bool:
        self.inbox.wake_up()
        return self._drain()

    def _drain(self) -> bool:
        self._drain_queued = False
        inbox = self.inbox
        self.draining = True
        try:
            # Take the records off the rings first (their space is released
            # when drain returns), then deliver: at most once (module docstring).
            inbox.drain(self._take, _BUDGET)
            batch = self._batch
            if batch:
                self._batch = []
                self._taken(self._batch_n)
                self._batch_n = 0
                deliver = self._deliver
                for sender, msgs in batch:
                    deliver(sender, msgs)
        finally:
            self.draining = False
            if self._dirty or self._out:
                self.flush()  # replies made while draining go out now, one publish per ring
                self._expect = True
        return inbox.pending()

    def _queue_drain(self) -> None:
        if not self._drain_queued:
            self._drain_queued = True
            self._loop.call_soon(self._drain_again)

    def _drain_again(self) -> None:
        if self._drain():
            self._queue_drain()

    def _before_sleep(self) -> None:
        inbox = self.inbox
        if self._dirty or self._out:
            self.flush()
        if self._expect:
            self._expect = False
            spinner = inbox.spinner
            spinner.budget = max(spinner.budget, spinner.max_s)
        if inbox.pending() or inbox.spin() or not inbox.prepare_sleep():
            # Work arrived while we were about to sleep: handle it in this turn
            # (a reply's waiter then resumes one loop turn sooner). We have NOT
            # announced sleep now, so the loop must not block on this turn:
            # queue another look, whose before_sleep runs the handshake again.
            # (Blocking here would lose the next doorbell: writers ring only a
            # reader that said it sleeps.)
            try:
                self._drain()
            except Exception:
                log.exception("node %d: draining the inbox failed", self.index)
            self._queue_drain()

    # -- outbound --------------------------------------------------------------------
    def _write(self, dest: int, record: bytes, count: int) -> None:
        q = self._backlog.get(dest)
        if q:
            q.append((record, count))
            self.backlog_total += count
            self.backlog_bytes += len(record)
            self._queued[dest] += count
            return
        try:
            self.writers[dest].write(record)
        except RingFull:
            self._backlog[dest] = collections.deque([(record, count)])
            self.backlog_total += count
            self.backlog_bytes += len(record)
            self._queued[dest] = count
            self._park(dest)
            return
        self._dirty.add(dest)

    def flush(self) -> None:
        if self._out:
            self._cut_all()
        writers = self.writers
        for dest in self._dirty:
            writers[dest].publish()
        self._dirty.clear()

    def publish(self, dest: int) -> None:
        self._expect = True  # an ask: its answer is awaited
        if dest in self._out:
            self._cut(dest)
        if dest in self._dirty:
            self._dirty.discard(dest)
            self.writers[dest].publish()

    def _park(self, dest: int) -> None:
        """The ring to ``dest`` is full: publish what it holds (so the reader can
        make room) and wait for its space doorbell; our loop goes on reading."""
        w = self.writers[dest]
        w.publish()
        self._dirty.discard(dest)
        if not self._space_watched:  # the first parked destination: watch our space doorbell
            self._space_watched = True
            self._loop.add_reader(self.space_fd, self._on_space)
        q = self._backlog[dest]
        if w.wait_for_space(len(q[0][0])):
            self._loop.call_soon(self._space, dest)

    def _on_space(self) -> None:
        """Our space doorbell rang: some reader freed room. It is shared by all
        of our writers, so reset it once here and retry every parked one."""
        from ..shm.doorbell import clear

        clear(self.space_fd)
        for dest in list(self._backlog):
            self._space(dest)

    def _space(self, dest: int) -> None:
        q = self._backlog.get(dest)
        w = self.writers[dest]
        while q:
            record, count = q[0]
            try:
                w.write(record)
            except RingFull:
                w.publish()
                if w.wait_for_space(len(record)):
                    continue
                return  # still armed: the reader rings space_fd
            except PayloadTooLarge as exc:
                log.error("dropped a queued record to node %d: %s", dest, exc)
            q.popleft()
            self.backlog_total -= count
            self.backlog_bytes -= len(record)
            self._queued[dest] -= count
        w.publish()
        self._backlog.pop(dest, None)
        self._queued.pop(dest, None)
        if not self._backlog and self._space_watched:
            self._space_watched = False
            self._loop.remove_reader(self.space_fd)
        self._roomy(dest)

    def backlog(self) -> dict[int, int]:
        return {d: n for d, n in self._queued.items() if n}

    def queued(self, dest: int) -> int:
        return self._queued.get(dest, 0)

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.inbox.doorbell_fd)
            loop.remove_reader(self.space_fd)
            if self._remove_hook is not None:
                self._remove_hook()
        self.flush()  # the writers themselves are closed with their rings
