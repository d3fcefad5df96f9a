"""The layout of an inbox's shared segment: the one place both of its sides read it from.

The reader side is ``Inbox`` (inbox.py); each sender's side is a
``RingWriter`` over its slot (ring.py). Neither module imports the other for
it. Why the flags are safe without atomics is told in inbox.py.

One memfd per reader holds everything its senders write to it::

    page 0..   header words, then ready bytes, then opened bytes
    slots      one ring per possible sender, ``stride`` bytes apart, page aligned

Header words are 8 bytes: word 0 the magic, 1 the number of senders, 2 each
slot's ring capacity, 3 its largest inline record, 4 its slab threshold, 5
the slot stride, 6 the offset of slot 0; word 8 ``sleeping`` (0 when the
reader is awake, else its sleep epoch) and word 9 the epoch counter, alone on
their cache line. From byte 128 on, one *ready* byte per sender (set by the
sender, cleared by the reader), then one *opened* byte per sender (set once by
a sender's first writer: a reader that starts later looks at those slots and
only those).

A slot is a ring: a 256-byte control block and ``capacity`` bytes of records
(ring.py). Its geometry lives in the header above, not in the slot, so an
all-zero slot *is* an empty ring: the segment is created sparse and a slot's
pages are allocated only when its sender first writes (a read would allocate
them too, which is why a reader never looks at a slot that is not opened).
"""

from __future__ import annotations

from .segment import PAGE, Segment

__all__ = [
    "EPOCH",
    "MAX_SENDERS",
    "SLEEPING",
    "Geometry",
    "flags_view",
    "geometry",
    "init",
    "opened_view",
    "size",
    "sleep_view",
]

MAGIC = 0x61637471_696E6232  # "actqinb2"
_MAGIC, _SENDERS, _CAPACITY, _MAXREC, _THRESHOLD, _STRIDE, _SLOTS = 0, 1, 2, 3, 4, 5, 6
SLEEPING = 8  # word index
EPOCH = 9  # word index
_READY = 128  # byte offset of sender 0's ready byte
MAX_SENDERS = 1 << 16
RING_HDR = 256  # a ring's control block (ring.py)

Geometry = tuple[int, int, int, int, int, int]  # senders, capacity, max record, threshold,
# stride, offset of slot 0


def _plan(max_senders: int, capacity: int) -> tuple[int, int]:
    """(offset of slot 0, slot stride) for this many senders and this capacity."""
    slots = -(-(_READY + 2 * max_senders) // PAGE) * PAGE
    stride = -(-(RING_HDR + capacity) // PAGE) * PAGE
    return slots, stride


def size(max_senders: int, capacity: int) -> int:
    """Bytes an inbox segment for ``max_senders`` slots of ``capacity`` needs."""
    slots, stride = _plan(max_senders, capacity)
    return slots + stride * max_senders


def init(seg: Segment, max_senders: int, capacity: int, slab_threshold: int) -> None:
    """Write the header of a fresh (zeroed) inbox segment (touches its first page only)."""
    slots, stride = _plan(max_senders, capacity)
    max_record = capacity // 2 - 8
    q = seg.buf[:64].cast("Q")
    try:
        q[_SENDERS], q[_CAPACITY], q[_MAXREC] = max_senders, capacity, max_record
        q[_THRESHOLD] = min(max(0, slab_threshold), max_record)
        q[_STRIDE], q[_SLOTS] = stride, slots
        q[_MAGIC] = MAGIC
    finally:
        q.release()


def geometry(seg: Segment) -> Geometry:
    """The header's geometry; ValueError if the segment is not an inbox."""
    q = seg.buf[:64].cast("Q")
    try:
        if q[_MAGIC] != MAGIC:
            raise ValueError(f"segment {seg.name!r} (fd {seg.fd}) is not an actorq inbox")
        g = (q[_SENDERS], q[_CAPACITY], q[_MAXREC], q[_THRESHOLD], q[_STRIDE], q[_SLOTS])
    finally:
        q.release()
    senders, capacity, _maxrec, _thr, stride, slots = g
    if (
        not 0 < senders <= MAX_SENDERS
        or capacity & (capacity - 1)
        or capacity < 64
        or (slots, stride) != _plan(senders, capacity)
        or slots + stride * senders > seg.size
    ):
        raise ValueError(f"inbox {seg.name!r}: impossible geometry {g} at offset 8")
    return g


def flags_view(seg: Segment) -> memoryview:
    """The ready bytes of an inbox segment (one per sender)."""
    n = geometry(seg)[0]
    return seg.buf[_READY : _READY + n]


def opened_view(seg: Segment) -> memoryview:
    """The opened bytes of an inbox segment (one per sender)."""
    n = geometry(seg)[0]
    return seg.buf[_READY + n : _READY + 2 * n]


def sleep_view(seg: Segment) -> memoryview:
    """A 'Q' view of the header words: ``[SLEEPING]`` and ``[EPOCH]`` index it."""
    return seg.buf[:_READY].cast("Q")
