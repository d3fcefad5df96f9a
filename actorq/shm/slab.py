"""Shared buffers for records too large to copy through a ring.

A slab belongs to one ring (one writer, one reader). Buffers come in a few
size classes; the writer takes a free buffer, copies the payload in and sends
a 16-byte SLAB record whose handle says which buffer (``class << 56 |
index << 32 | length``). The reader hands out a memoryview of the buffer and,
once it is done with it, gives the buffer back.

Giving back crosses processes without atomics: each class has a *return
queue*, an array of one slot per buffer plus a counter, written only by the
reader (the single producer of returns) and read only by the writer (their
single consumer). At most ``count`` buffers of a class are ever out, so the
reader can never lap the writer and needs no view of the writer's progress.
The reader stores the slot, then the counter; on x86-64 (TSO, see
``ring.py``) the writer that sees the counter sees the slot. The reader's
loads of the payload precede its return stores, so the writer cannot reuse
a buffer that is still being read.

A writer may be replaced (a restarted worker): each buffer has a state byte
the writer sets to 1 when it takes the buffer and back to 0 when it
consumes the buffer's return, and the writer publishes how many returns it
consumed. A new writer first consumes the pending returns, then treats
every buffer whose state is 0 as free, so it never reuses a buffer that a
record in the ring still points to. (A writer killed between taking a buffer
and publishing its record leaks that buffer; so does a reader killed while
holding a lease.)

Memory is not populated up front: pages are allocated on first touch (and
on the bound NUMA node, if any), so unused classes cost only address space.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PayloadTooLarge, RingCorrupt, RingFull
from .segment import PAGE, Segment

__all__ = ["DEFAULT_CLASSES", "Slab", "SlabReader", "SlabWriter"]

DEFAULT_CLASSES: tuple[tuple[int, int], ...] = ((64 << 10, 16), (1 << 20, 4), (8 << 20, 1))
MAGIC = 0x61637471_736C6162  # "actqslab"
MAX_CLASSES = 8
_CLASS_WORDS = 8  # per class: size, count, buffers offset, return-queue offset
_RQ_HEAD = 128  # word index of class 0's return counter (reader-written), a line per class
_TAKEN = 192  # word index of class 0's consumed-returns counter (writer-written)
_CTL = PAGE


def _layout(classes: Sequence[tuple[int, int]]) -> tuple[list[tuple[int, int, int, int]], int]:
    """(size, count, buffers offset, return-queue offset) per class, and the total size."""
    off = _CTL
    out = []
    for size, count in classes:
        rq = off  # count return slots (8 bytes), then count state bytes
        off += -(-count * 9 // PAGE) * PAGE
        out.append((size, count, off, rq))
        off += -(-size * count // PAGE) * PAGE
    return out, off


class Slab:
    """The slab's segment and geometry; ``writer()``/``reader()`` give the two ends."""

    def __init__(self, seg: Segment) -> None:
        self.segment = seg
        q = seg.buf[:_CTL].cast("Q")
        try:
            if q[0] != MAGIC or not 0 < q[1] <= MAX_CLASSES:
                raise RingCorrupt(f"slab {seg.name!r} (fd {seg.fd}): bad magic at offset 0")
            self.classes: list[tuple[int, int, int, int]] = [
                tuple(q[8 + c * _CLASS_WORDS + i] for i in range(4))  # type: ignore[misc]
                for c in range(q[1])
            ]
        finally:
            q.release()
        for size, count, off, rq in self.classes:
            if off + size * count > seg.size or rq + 9 * count > off or size <= 0 or count <= 0:
                raise RingCorrupt(f"slab {seg.name!r}: impossible class geometry at offset 64")
        self.largest = self.classes[-1][0]

    @property
    def fd(self) -> int:
        return self.segment.fd

    @classmethod
    def create(
        cls,
        classes: Sequence[tuple[int, int]] | None = None,
        *,
        node: int | None = None,
        name: str = "actorq-slab",
    ) -> Slab:
        """A slab with ``(buffer size, buffer count)`` classes, smallest first."""
        classes = list(DEFAULT_CLASSES if classes is None else classes)
        if not 0 < len(classes) <= MAX_CLASSES:
            raise ValueError(f"a slab has 1 to {MAX_CLASSES} size classes, not {len(classes)}")
        sizes = [s for s, _ in classes]
        if sizes != sorted(set(sizes)) or any(s <= 0 or n <= 0 for s, n in classes):
            raise ValueError(
                f"slab classes must be (size, count) > 0 with sizes increasing: {classes}"
            )
        geometry, total = _layout(classes)
        seg = Segment.create(total, name=name, node=node, populate=False)
        q = seg.buf[:_CTL].cast("Q")
        for c, g in enumerate(geometry):
            for i, v in enumerate(g):
                q[8 + c * _CLASS_WORDS + i] = v
        q[1] = len(classes)
        q[0] = MAGIC
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
        return SlabWriter(self)

    def reader(self) -> SlabReader:
        return SlabReader(self)

    def close(self) -> None:
        self.segment.close()


class SlabWriter:
    """Allocates buffers (the ring writer's side)."""

    def __init__(self, slab: Slab) -> None:
        self.slab = slab
        self.largest = slab.largest
        buf = slab.segment.buf
        self._q = buf.cast("Q")
        self._buf = buf
        self._sizes = [c[0] for c in slab.classes]
        self._state = [buf[rq + 8 * count : rq + 9 * count] for _s, count, _o, rq in slab.classes]
        # How many returns this writer consumed, and the buffers it knows are free.
        self._taken = [self._q[_TAKEN + 8 * c] for c in range(len(slab.classes))]
        self._free: list[list[int]] = []
        for c, state in enumerate(self._state):
            self._free.append([])
            self._refill(c)  # a previous writer's unconsumed returns
            self._free[c] = [i for i in range(len(state) - 1, -1, -1) if not state[i]]

    def _refill(self, c: int) -> list[int]:
        free = self._free[c]
        q = self._q
        returned = q[_RQ_HEAD + 8 * c]
        taken = self._taken[c]
        if returned != taken:
            _size, count, _off, rq = self.slab.classes[c]
            base = rq >> 3
            state = self._state[c]
            while taken < returned:
                idx = q[base + taken % count]
                state[idx] = 0
                free.append(idx)
                taken += 1
            self._taken[c] = taken
            q[_TAKEN + 8 * c] = taken
        return free

    def close(self) -> None:
        self._q.release()
        for v in self._state:
            v.release()

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

    def alloc(self, n: int) -> tuple[int, memoryview]:
        """A buffer for ``n`` bytes: (handle, writable view of its first n bytes).
        Raises RingFull when every fitting buffer is out, PayloadTooLarge above
        the largest class."""
        first = self._class_for(n)
        for c in range(first, len(self._sizes)):
            free = self._free[c] or self._refill(c)
            if free:
                idx = free.pop()
                self._state[c][idx] = 1
                size, _count, off, _rq = self.slab.classes[c]
                start = off + idx * size
                return (c << 56) | (idx << 32) | n, self._buf[start : start + n]
        raise RingFull(
            f"slab {self.slab.segment.name!r}: every buffer of {self._sizes[first]} bytes or more "
            "is still held by the reader; wait_for_space() and retry"
        )


class SlabReader:
    """Resolves handles to views and gives buffers back (the ring reader's side)."""

    def __init__(self, slab: Slab) -> None:
        self.slab = slab
        buf = slab.segment.buf
        self._q = buf.cast("Q")
        self._buf = buf
        self._pushed = [self._q[_RQ_HEAD + 8 * c] for c in range(len(slab.classes))]

    def close(self) -> None:
        self._q.release()

    def _decode(self, handle: int) -> tuple[int, int, int]:
        c, idx, n = handle >> 56, (handle >> 32) & 0xFF_FFFF, handle & 0xFFFF_FFFF
        if c >= len(self.slab.classes):
            raise ValueError(f"class {c} does not exist")
        size, count, _off, _rq = self.slab.classes[c]
        if idx >= count or n > size:
            raise ValueError(f"buffer {idx} of class {c} with length {n} is out of range")
        return c, idx, n

    def view(self, handle: int) -> memoryview:
        """A read-only view of the handle's payload; raises ValueError for an impossible handle."""
        c, idx, n = self._decode(handle)
        size, _count, off, _rq = self.slab.classes[c]
        start = off + idx * size
        return self._buf[start : start + n].toreadonly()

    def free(self, handle: int) -> None:
        """Give the buffer back to the writer (slot first, then counter)."""
        c, idx, _n = self._decode(handle)
        _size, count, _off, rq = self.slab.classes[c]
        pushed = self._pushed[c]
        q = self._q
        q[(rq >> 3) + pushed % count] = idx
        pushed += 1
        self._pushed[c] = pushed
        q[_RQ_HEAD + 8 * c] = pushed
