"""Shared buffers for records too large to copy through a ring.

A slab belongs to one *writer* and serves any number of *readers* (one per
destination ring: in the runtime's mesh every node has one slab for all of
its outbound rings, so slabs grow with N, not N²). Buffers come in a few size
classes; the writer takes a free buffer, copies the payload in and sends a
16-byte SLAB record whose handle says which buffer (``class << 56 | index <<
32 | length``). The reader hands out a memoryview of the buffer and, once it
is done with it, gives the buffer back.

Giving back crosses processes without atomics because every shared word has
exactly one writer:

* each reader ``r`` has its own *return queue* per class (one slot per buffer
  of the class) and its own return counters, written only by that reader and
  read only by the slab's writer. At most ``count`` buffers of a class are
  ever out, so no reader can lap the writer on its queue. The reader stores
  the slot, then the counter; on x86-64 (TSO, see ``ring.py``) the writer
  that sees the counter sees the slot. The reader's loads of the payload
  precede its return stores, so the writer cannot reuse a buffer that is
  still being read;
* the writer's *consumed* counters (one per reader and class), the buffer
  *state* words (0 free, ``r + 1`` lent to reader ``r``) and the *want*
  counter are written only by the writer.

The writer looks for returns only at the readers it lent buffers to (a
local count per reader), so allocation never walks all N readers.

Waiting for a buffer: a writer that finds a class exhausted stores a fresh
``want`` number, fences, and looks for returns once more. A reader, after
storing a return, fences and loads ``want``; if it changed since this reader
last saw it, the reader rings the writer's space doorbell. Store, fence, load
on both sides (Dekker, as in ``ring.py``): either the writer sees the return
or the reader sees the request. Several readers may ring for one request: a
spurious wake-up, never a lost one.

A writer may be replaced (a restarted worker). The new writer rebuilds its
view from shared memory: a buffer whose state names reader ``r`` is lent to
``r``; it first consumes the returns those readers published, then treats
every buffer whose state is 0 as free, so it never reuses a buffer that a
record in a ring still points to. (A writer killed between taking a buffer
and publishing its record leaks that buffer; so does a reader killed while
holding a lease.) A restarted reader starts from its own shared return
counters.

Memory is not populated up front: pages are allocated on first touch (and
on the bound NUMA node, if any), so unused classes, unused readers' queues
and unused buffers cost only address space.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PayloadTooLarge, RingCorrupt, RingFull
from .segment import PAGE, Segment

__all__ = ["DEFAULT_CLASSES", "Slab", "SlabReader", "SlabWriter"]

DEFAULT_CLASSES: tuple[tuple[int, int], ...] = ((64 << 10, 16), (1 << 20, 4), (8 << 20, 1))
MAGIC = 0x61637471_736C6232  # "actqslb2"
MAX_CLASSES = 8
MAX_READERS = 1 << 16
# control page, 8-byte words
_MAGIC, _NCLASSES, _READERS, _STRIDE, _BLOCKS, _STATE = 0, 1, 2, 3, 4, 5
_CLASS = 8  # per class 4 words from here: size, count, buffers offset, first state word
_WANT = 64  # the writer's wait requests, alone on its line
_CTL = PAGE
# per-reader block, 8-byte words: returned[c] (reader), consumed[c] (writer), then queues
_RETURNED, _CONSUMED, _QUEUES = 0, 8, 16


def _round(n: int, to: int) -> int:
    return -(-n // to) * to


def _layout(
    classes: Sequence[tuple[int, int]], readers: int
) -> tuple[list[tuple[int, int, int, int]], int, int, int, int]:
    """(size, count, buffers offset, first state word) per class; the state
    offset, the reader blocks' offset and stride; and the total size."""
    slots = sum(count for _s, count in classes)
    state = _CTL
    blocks = _round(state + 8 * slots, PAGE)
    stride = _round(8 * (_QUEUES + slots), 64)
    off = _round(blocks + stride * readers, PAGE)
    out = []
    first = 0
    for size, count in classes:
        out.append((size, count, off, first))
        first += count
        off += _round(size * count, PAGE)
    return out, state, blocks, stride, off


class Slab:
    """The slab's segment and geometry; ``writer()``/``reader(r)`` give the ends."""

    def __init__(self, seg: Segment) -> None:
        self.segment = seg
        q = seg.buf[:_CTL].cast("Q")
        try:
            if q[_MAGIC] != MAGIC or not 0 < q[_NCLASSES] <= MAX_CLASSES:
                raise RingCorrupt(f"slab {seg.name!r} (fd {seg.fd}): bad magic at offset 0")
            self.classes: list[tuple[int, int, int, int]] = [
                tuple(q[_CLASS + c * 4 + i] for i in range(4))  # type: ignore[misc]
                for c in range(q[_NCLASSES])
            ]
            self.readers: int = q[_READERS]
            self.stride: int = q[_STRIDE]
            self.blocks: int = q[_BLOCKS]
            self.state: int = q[_STATE]
        finally:
            q.release()
        slots = sum(c[1] for c in self.classes)
        if (
            self.blocks + self.stride * self.readers > seg.size
            or self.stride < 8 * (_QUEUES + slots)
            or self.state + 8 * slots > self.blocks
        ):
            raise RingCorrupt(f"slab {seg.name!r}: impossible reader geometry at offset 16")
        for size, count, off, _first in self.classes:
            if off + size * count > seg.size or size <= 0 or count <= 0:
                raise RingCorrupt(f"slab {seg.name!r}: impossible class geometry at offset 64")
        self.largest = self.classes[-1][0]
        self._writer: SlabWriter | None = None

    @property
    def fd(self) -> int:
        return self.segment.fd

    @classmethod
    def create(
        cls,
        classes: Sequence[tuple[int, int]] | None = None,
        *,
        readers: int = 1,
        node: int | None = None,
        name: str = "actorq-slab",
    ) -> Slab:
        """A slab with ``(buffer size, buffer count)`` classes, smallest first,
        whose buffers can be lent to ``readers`` readers (ids 0..readers-1)."""
        classes = list(DEFAULT_CLASSES if classes is None else classes)
        if not 0 < len(classes) <= MAX_CLASSES:
            raise ValueError(f"a slab has 1 to {MAX_CLASSES} size classes, not {len(classes)}")
        sizes = [s for s, _ in classes]
        if sizes != sorted(set(sizes)) or any(s <= 0 or n <= 0 for s, n in classes):
            raise ValueError(
                f"slab classes must be (size, count) > 0 with sizes increasing: {classes}"
            )
        if not 0 < readers <= MAX_READERS:
            raise ValueError(f"a slab serves 1 to {MAX_READERS} readers, not {readers}")
        geometry, state, blocks, stride, total = _layout(classes, readers)
        seg = Segment.create(total, name=name, node=node, populate=False)
        q = seg.buf[:_CTL].cast("Q")
        for c, g in enumerate(geometry):
            for i, v in enumerate(g):
                q[_CLASS + c * 4 + i] = v
        q[_READERS], q[_STRIDE], q[_BLOCKS], q[_STATE] = readers, stride, blocks, state
        q[_NCLASSES] = len(classes)
        q[_MAGIC] = MAGIC
        q.release()
        return cls(seg)

    @classmethod
    def from_fd(cls, fd: int) -> Slab:
        """Map a slab received from another process; takes ownership of ``fd``."""
        seg = Segment.from_fd(fd)
        try:
            return cls(seg)
        except BaseException:
            seg.close()
            raise

    def writer(self) -> SlabWriter:
        """This process's writer end: one per slab and process (its free lists
        are local), shared by every ring that writes through this slab."""
        if self._writer is None:
            self._writer = SlabWriter(self)
        return self._writer

    def reader(self, reader: int = 0) -> SlabReader:
        return SlabReader(self, reader)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.segment.close()


class SlabWriter:
    """Allocates buffers and takes them back (the writer's side). Make one with
    ``Slab.writer()``; constructing one directly rebuilds the state a previous
    writer left in shared memory (what a restarted writer does)."""

    def __init__(self, slab: Slab) -> None:
        self.slab = slab
        self.largest = slab.largest
        buf = slab.segment.buf
        self._q = buf.cast("Q")
        self._buf = buf
        self._sizes = [c[0] for c in slab.classes]
        self._want = self._q[_WANT]
        q = self._q
        # Each class: the buffers known free, and how many each reader holds.
        self._free: list[list[int]] = []
        self._lent: list[dict[int, int]] = []
        state0 = slab.state >> 3
        for _size, count, _off, first in slab.classes:
            lent: dict[int, int] = {}
            for i in range(count):
                holder = q[state0 + first + i]
                if holder:
                    lent[holder - 1] = lent.get(holder - 1, 0) + 1
            self._lent.append(lent)
            self._free.append([])
        for c, (_size, count, _off, first) in enumerate(slab.classes):
            self._refill(c)  # returns a previous writer did not consume
            self._free[c] = [i for i in range(count - 1, -1, -1) if not q[state0 + first + i]]

    def _refill(self, c: int) -> list[int]:
        """Consume the returns of class ``c`` from the readers holding its buffers."""
        free, lent = self._free[c], self._lent[c]
        if not lent:
            return free
        q = self._q
        _size, count, _off, first = self.slab.classes[c]
        state = (self.slab.state >> 3) + first
        for r in list(lent):
            blk = (self.slab.blocks >> 3) + r * (self.slab.stride >> 3)  # reader r's block
            returned = q[blk + _RETURNED + c]
            taken = q[blk + _CONSUMED + c]
            if returned == taken:
                continue
            queue = blk + _QUEUES + first
            n = lent[r]
            while taken < returned:
                idx = q[queue + taken % count]
                if idx < count and q[state + idx] == r + 1:
                    q[state + idx] = 0
                    free.append(idx)
                    n -= 1
                taken += 1
            q[blk + _CONSUMED + c] = taken
            if n > 0:
                lent[r] = n
            else:
                del lent[r]
        return free

    def close(self) -> None:
        self._q.release()

    def _class_for(self, n: int) -> int:
        for c, size in enumerate(self._sizes):
            if n <= size:
                return c
        raise PayloadTooLarge(
            f"slab {self.slab.segment.name!r}: a {n}-byte payload exceeds the largest "
            f"class ({self.largest} bytes)"
        )

    def can_alloc(self, n: int) -> bool:
        first = self._class_for(n)
        return any(self._free[c] or self._refill(c) for c in range(first, len(self._sizes)))

    def arm(self) -> None:
        """Ask readers to ring the space doorbell on their next return; the
        caller fences, then checks ``can_alloc`` again (see the module docstring)."""
        self._want += 1
        self._q[_WANT] = self._want

    def alloc(self, n: int, reader: int = 0) -> tuple[int, memoryview]:
        """A buffer for ``n`` bytes lent to ``reader``: (handle, writable view of
        its first n bytes). Raises RingFull when every fitting buffer is out,
        PayloadTooLarge above the largest class."""
        first = self._class_for(n)
        for c in range(first, len(self._sizes)):
            free = self._free[c] or self._refill(c)
            if free:
                idx = free.pop()
                size, _count, off, first_state = self.slab.classes[c]
                self._q[(self.slab.state >> 3) + first_state + idx] = reader + 1
                lent = self._lent[c]
                lent[reader] = lent.get(reader, 0) + 1
                start = off + idx * size
                return (c << 56) | (idx << 32) | n, self._buf[start : start + n]
        raise RingFull(
            f"slab {self.slab.segment.name!r}: every buffer of {self._sizes[first]} bytes or more "
            "is still held by a reader; wait_for_space() and retry"
        )


class SlabReader:
    """Resolves handles to views and gives buffers back (one reader's side)."""

    def __init__(self, slab: Slab, reader: int = 0) -> None:
        if not 0 <= reader < slab.readers:
            raise ValueError(
                f"slab {slab.segment.name!r} serves readers 0..{slab.readers - 1}, not {reader}"
            )
        self.slab = slab
        buf = slab.segment.buf
        self._q = buf.cast("Q")
        self._buf = buf
        self._blk = (slab.blocks >> 3) + reader * (slab.stride >> 3)
        self._pushed = [self._q[self._blk + _RETURNED + c] for c in range(len(slab.classes))]
        self._rung = 0  # the writer's request this reader last rang for

    def close(self) -> None:
        self._q.release()

    def _decode(self, handle: int) -> tuple[int, int, int]:
        c, idx, n = handle >> 56, (handle >> 32) & 0xFF_FFFF, handle & 0xFFFF_FFFF
        if c >= len(self.slab.classes):
            raise ValueError(f"class {c} does not exist")
        size, count, _off, _first = self.slab.classes[c]
        if idx >= count or n > size:
            raise ValueError(f"buffer {idx} of class {c} with length {n} is out of range")
        return c, idx, n

    def view(self, handle: int) -> memoryview:
        """A read-only view of the handle's payload; raises ValueError for an impossible handle."""
        c, idx, n = self._decode(handle)
        size, _count, off, _first = self.slab.classes[c]
        start = off + idx * size
        return self._buf[start : start + n].toreadonly()

    def free(self, handle: int) -> None:
        """Give the buffer back to the writer (slot first, then counter). The
        caller fences, then asks ``wanted()``."""
        c, idx, _n = self._decode(handle)
        _size, count, _off, first = self.slab.classes[c]
        pushed = self._pushed[c]
        q = self._q
        q[self._blk + _QUEUES + first + pushed % count] = idx
        pushed += 1
        self._pushed[c] = pushed
        q[self._blk + _RETURNED + c] = pushed

    def wanted(self) -> bool:
        """After a return and a fence: True (once per request) when the writer
        is waiting for a buffer and should be rung."""
        seq = self._q[_WANT]
        if seq == self._rung:
            return False
        self._rung = seq
        return True
