"""A worker's board: a few words of shared memory the supervisor reads when
the worker itself can no longer answer.

A worker that is stuck in a method cannot say which one, and one that died
cannot say what it lost. So each worker writes, as it goes, the little the
supervisor needs then, into an anonymous shared mapping made before the fork
(inherited, no fd, gone with the last process that maps it):

- ``RUNNING``: the actor and method whose code runs now (0 when the loop runs
  runtime code). One store before a method and one after; the supervisor
  reads it to name the holder of a stalled worker and the culprit of a crash
  (the poison message is not redelivered: records leave the rings before they
  run, so delivery is at most once).
- ``TAKEN`` / ``HANDLED``: records taken into the worker's memory (off its
  rings, or sent to itself) and records whose delivery returned (run to the
  end, queued, answered or refused). A crash loses ``TAKEN - HANDLED``
  records, the one whose method was running among them.
- per actor, ``IN_HAND``: messages queued in its mailbox (until the one
  pumped out of it has run) plus async methods in progress. Written only
  when a message has to wait or a task starts or ends, never on the idle
  fast path.

So every record is counted exactly once as lost or not: ``lost()`` is
``TAKEN - HANDLED`` plus the ``IN_HAND`` words. (Two windows of a few
instructions remain: a worker killed inside a ring drain, before the batch it
copied out is published as read, hands that batch to its successor again;
one killed between that publication and counting the batch loses it
uncounted. No user code runs in either.)
- ``DEAD_LETTERS``: the worker's dead-letter count, so it survives the worker.
- ``LAST``: the RUNNING word of the last method that started, left in place
  when it returns (cleared when the loop goes to sleep), so the worker's own
  slow-callback warning can name the method after it let go of the loop
  (``Board.take_last``).

After these words comes the worker's metrics block (metrics.py): counters
it publishes for ``actorq stats``, ``actorq top`` and Prometheus, one block
of words per actor slot (the slot ``take_slot`` gives an actor at spawn).

The words are 64-bit and written by one process (the worker); the supervisor
reads them only after the worker is gone or stalled, so no fences are needed:
a torn or stale read costs at most one message of accounting.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import metrics

RUNNING, TAKEN, HANDLED, DEAD_LETTERS, SCRATCH, LAST = range(6)
_HEADER_WORDS = 8
ASYNC = 1 << 62  # RUNNING: set while an async method's step runs (it is counted in IN_HAND)
_SEQ_MASK = 0xFFFF_FFFF
_CODE_MASK = 0x3FFF_FFFF
MAX_METHODS = 255
_NAME_BYTES = 64
MAX_ACTORS = 4096  # actors beyond this on one worker are counted, but not by name

_NAMES_AT = _HEADER_WORDS * 8
_IDS_AT = _NAMES_AT + (MAX_METHODS + 1) * _NAME_BYTES
_IN_HAND_AT = _IDS_AT + MAX_ACTORS * 8
_METRICS_AT = _IN_HAND_AT + MAX_ACTORS * 8
SIZE = _METRICS_AT + metrics.words_for(MAX_ACTORS) * 8


def running_tag(actor_id: int, code: int) -> int:
    """The RUNNING word for ``code`` (a method) of ``actor_id``."""
    return (code << 32) | (actor_id & _SEQ_MASK)


@dataclass
class Snapshot:
    """What a board said at one moment (read by the supervisor)."""

    running_seq: int = 0  # low 32 bits of the running actor's id; 0: none
    running_method: str | None = None
    running_async: bool = False
    taken: int = 0
    handled: int = 0
    dead_letters: int = 0
    in_hand: dict[int, int] = field(default_factory=dict)  # actor id -> messages held

    def lost(self, worker: int) -> dict[int | None, int]:
        """Messages a crash at this moment loses, per actor id (None: not yet routed)."""
        out: dict[int | None, int] = {aid: n for aid, n in self.in_hand.items() if n > 0}
        limbo = self.taken - self.handled
        if limbo > 0 and self.running_seq and not self.running_async:
            aid = (worker << 32) | self.running_seq
            if aid not in out:  # its running message came straight from delivery: name it
                out[aid] = 1
                limbo -= 1
        if limbo > 0:
            out[None] = limbo
        return out


class Board:
    """One worker's board (see the module docstring). Made before the fork."""

    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, SIZE, flags=mmap.MAP_SHARED)
        self.words = memoryview(self._mm).cast("q")
        self._codes: dict[str, int] = {}
        self._free: list[int] = []
        self._next_slot = 0
        self.metrics_at = _METRICS_AT // 8  # first word of the metrics block

    # -- the worker's side ---------------------------------------------------------------
    def method_code(self, name: str) -> int:
        """A small number for ``name`` (0 when the table is full: "unknown")."""
        code = self._codes.get(name)
        if code is None:
            code = len(self._codes) + 1
            if code > MAX_METHODS:
                return 0
            raw = name.encode("utf-8", "replace")[: _NAME_BYTES - 1]
            at = _NAMES_AT + code * _NAME_BYTES
            self._mm[at : at + len(raw) + 1] = raw + b"\0"
            self._codes[name] = code
        return code

    def take_slot(self, actor_id: int) -> int:
        """A per-actor word index for ``actor_id`` (SCRATCH when all are used)."""
        if self._free:
            slot = self._free.pop()
        elif self._next_slot < MAX_ACTORS:
            slot = self._next_slot
            self._next_slot += 1
        else:
            return SCRATCH
        self.words[_IDS_AT // 8 + slot] = actor_id
        self.words[_IN_HAND_AT // 8 + slot] = 0
        at = metrics.actor_words_at(self.metrics_at, slot)  # a fresh actor's counters start at 0
        self._mm[at * 8 : (at + metrics.ACTOR_WORDS) * 8] = bytes(metrics.ACTOR_WORDS * 8)
        return _IN_HAND_AT // 8 + slot

    def metrics_slot(self, word: int) -> int:
        """The first metrics word of the actor whose in-hand word is ``word`` (-1: none)."""
        if word == SCRATCH:
            return -1
        return metrics.actor_words_at(self.metrics_at, word - _IN_HAND_AT // 8)

    def release_slot(self, word: int) -> None:
        if word == SCRATCH:
            return
        slot = word - _IN_HAND_AT // 8
        self.words[_IDS_AT // 8 + slot] = 0
        self.words[word] = 0
        self._free.append(slot)

    def method_name(self, code: int) -> str | None:
        """The name ``method_code`` gave ``code`` (None for 0 or unknown)."""
        if not 0 < code <= MAX_METHODS:
            return None
        at = _NAMES_AT + code * _NAME_BYTES
        raw = bytes(self._mm[at : at + _NAME_BYTES]).split(b"\0", 1)[0]
        return raw.decode("utf-8", "replace") or None

    def take_last(self) -> tuple[int, str | None] | None:
        """(actor seq, method) of the method that started last, and clear it; None if none."""
        word = self.words[LAST]
        if not word:
            return None
        self.words[LAST] = 0
        return word & _SEQ_MASK, self.method_name((word >> 32) & _CODE_MASK)

    def forget_last(self) -> None:
        """Clear LAST (the worker, as its loop goes to sleep: nothing since is slow)."""
        self.words[LAST] = 0

    # -- the supervisor's side -----------------------------------------------------------
    def read(self) -> Snapshot:
        w = self.words
        running = w[RUNNING]
        snap = Snapshot(
            running_seq=running & _SEQ_MASK,
            running_async=bool(running & ASYNC),
            taken=w[TAKEN],
            handled=w[HANDLED],
            dead_letters=w[DEAD_LETTERS],
        )
        if snap.running_seq:
            snap.running_method = self.method_name((running >> 32) & _CODE_MASK)
        ids, hands = _IDS_AT // 8, _IN_HAND_AT // 8
        for slot in range(MAX_ACTORS):
            aid = w[ids + slot]
            if aid:
                snap.in_hand[aid] = w[hands + slot]
        return snap

    def actor_slots(self) -> Iterator[tuple[int, int]]:
        """(slot, actor id) of every actor slot in use."""
        ids = _IDS_AT // 8
        for slot in range(self._next_slot_seen()):
            aid = self.words[ids + slot]
            if aid:
                yield slot, aid

    def _next_slot_seen(self) -> int:
        # The supervisor's copy of _next_slot is not the worker's (it lives in the
        # worker's memory): the highest slot in use is found from the shared ids.
        ids = self.words[_IDS_AT // 8 : _IDS_AT // 8 + MAX_ACTORS]
        top = MAX_ACTORS
        while top and not ids[top - 1]:
            top -= 1
        return top

    def reset(self) -> None:
        """Zero the board for a fresh incarnation (the supervisor, before forking it)."""
        self._mm[:] = bytes(SIZE)
        self._codes.clear()
        self._free.clear()
        self._next_slot = 0

    def close(self) -> None:
        self.words.release()
        self._mm.close()
