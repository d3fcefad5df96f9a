"""The layout of an inbox's shared segment: the one place both of its sides read it from.

The reader side is ``Inbox`` (inbox.py); each sender's side is a
``RingWriter`` whose ring was made for that inbox (ring.py). Neither module
imports the other for it. Why the flags are safe without atomics is told in
inbox.py.

Words are 8 bytes: word 0 is the magic, word 1 the number of senders, word 8
``sleeping`` (0 when the reader is awake, else its sleep epoch) and word 9 the
epoch counter, alone on their cache line. From byte 128 on, one ready byte
per sender.
"""

from __future__ import annotations

from .segment import Segment

__all__ = ["EPOCH", "MAX_SENDERS", "SLEEPING", "flags_view", "init", "size", "sleep_view"]

MAGIC = 0x61637471_696E6278  # "actqinbx"
_MAGIC, _SENDERS = 0, 1
SLEEPING = 8  # word index
EPOCH = 9  # word index
_READY = 128  # byte offset of sender 0's ready byte
MAX_SENDERS = 1 << 16


def size(max_senders: int) -> int:
    """Bytes an inbox segment for ``max_senders`` senders needs."""
    return _READY + max_senders


def init(seg: Segment, max_senders: int) -> None:
    """Write the header of a fresh (zeroed) inbox segment."""
    q = seg.buf[:16].cast("Q")
    try:
        q[_SENDERS] = max_senders
        q[_MAGIC] = MAGIC
    finally:
        q.release()


def flags_view(seg: Segment) -> memoryview:
    """The ready bytes of an inbox segment (one per sender)."""
    q = seg.buf[:16].cast("Q")
    try:
        if q[_MAGIC] != MAGIC:
            raise ValueError(f"segment {seg.name!r} (fd {seg.fd}) is not an actorq inbox")
        n = q[_SENDERS]
    finally:
        q.release()
    return seg.buf[_READY : _READY + n]


def sleep_view(seg: Segment) -> memoryview:
    """A 'Q' view of the header words: ``[SLEEPING]`` and ``[EPOCH]`` index it."""
    return seg.buf[:_READY].cast("Q")
