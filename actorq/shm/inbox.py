"""One reader's inbound rings in ONE memfd behind ONE doorbell, with O(1) discovery of work.

A worker has an inbound ring from each peer. Each ring is a *slot* of the
reader's inbox segment (layout in ``readyflags.py``): header, ready bytes,
opened bytes, then one fixed-size ring per possible sender. The segment is
sparse: a slot costs address space only until its sender first writes, so
N readers with N slots each cost N fds and touch O(active pairs) pages, not
N² of either. Polling every ring's head on each wake-up would cost
O(workers) Python steps (and would allocate every slot's pages: reading an
untouched shmem page allocates it). Instead the inbox's header keeps:

* ``sleeping`` (word 8, with the epoch counter in word 9, on their own cache
  line): written by the reader only: 0 when awake, else a fresh epoch number
  per sleep (each sender rings at most once per epoch, see ring.py);
* ``ready[s]`` (one byte per sender, from offset 128): set to 1 by sender
  ``s`` only, cleared to 0 by the reader only (and set by a reader taking
  over, below);
* ``opened[s]`` (one byte per sender, after the ready bytes): set once by
  sender ``s``'s first writer, before its first publish.

Sender ``s``, on publish: store head (ring.py); fence; if ``ready[s]`` is 0,
store 1 and fence again (this second fence is paid only on the
empty -> non-empty transition, as seen by the sender); then, if
``sleeping`` is set, ring the shared doorbell.

Reader, on drain: copy the ready bytes (one C-level copy of ``max_senders``
bytes) and walk only the set ones with ``bytes.find``: the Python work is
proportional to the rings that have work, not to the number of peers. For
those: store 0 into each ``ready[s]``, one fence, then drain each ring
(its reader object is made on first use). To sleep: store ``sleeping``;
fence; if any ready byte is set (one C-level comparison), withdraw and drain
instead.

Why nothing is lost (each pair below is a store, a full fence, then a load
on each side; with the fences at least one side sees the other's store):

* A sender publishes while the reader is clearing ``ready[s]``. Sender:
  [head store; fence; load ready[s]]. Reader: [ready[s] = 0; fence; load
  head]. Either the reader's head load sees the new record (drained now), or
  the sender's load sees 0 and sets ``ready[s]`` again (drained next pass).
* A sender publishes while the reader goes to sleep. Sender: [ready[s] = 1
  (or it already was 1, stored and fenced by an earlier publish); fence;
  load sleeping]. Reader: [sleeping = 1; fence; load all ready bytes]. Either
  the reader sees the byte and does not sleep, or the sender sees
  ``sleeping`` and rings the doorbell.
* A drain cut short by ``limit`` re-sets the ready byte of every ring it did
  not empty, so no ring is forgotten.
* A reader that dies between clearing ``ready[s]`` and draining leaves
  records no flag points to. Its successor (``resume()``) sets ``ready[s]``
  for every opened slot once and so looks at each of them, and at no other.

Because each byte has exactly one writer per value transition (the sender
only writes 1, the reader only writes 0; a resuming reader's 1 races only
with a sender's 1) no read-modify-write is needed; single-byte stores are
atomic. A spurious doorbell (sender read a stale ``sleeping``) costs one
empty wake-up, never a lost record.

The space doorbell and the slab belong to the *sender* (one of each per
sender, shared by all of its outbound rings): the inbox only needs to know
them to give buffers back and ring for room. A mesh passes everyone's
(``space_fds``/``slabs``); standing alone, ``ring(s)`` makes them for ``s``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from . import doorbell as _bell
from . import readyflags
from .readyflags import EPOCH, MAX_SENDERS, SLEEPING
from .ring import Ring, RingReader, SlabLease, _make_slab
from .segment import Segment

if TYPE_CHECKING:
    from .slab import Slab

__all__ = ["DEFAULT_SLOT_CAPACITY", "Inbox"]

log = logging.getLogger("actorq.shm")

DEFAULT_SLOT_CAPACITY = 1 << 18  # 256 KiB of records per sender, however many senders


class Inbox:
    """The reader's side: ``drain(callback)`` calls ``callback(sender_id,
    record)`` for every waiting record; ``ring(sender_id)`` is that sender's
    slot as a ``Ring`` (its ``writer()`` is the sender's end)."""

    def __init__(
        self,
        max_senders: int,
        capacity: int = DEFAULT_SLOT_CAPACITY,
        *,
        node: int | None = None,
        name: str = "actorq-inbox",
        zero_copy: bool = False,
        slab_threshold: int = 16384,
        space_fds: Sequence[int] | None = None,
        slabs: Sequence[Slab | None] | None = None,
        slab_reader: int = 0,
    ) -> None:
        if not 0 < max_senders <= MAX_SENDERS:
            raise ValueError(f"max_senders must be in 1..{MAX_SENDERS}, not {max_senders}")
        if capacity < 64 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 64, not {capacity}")
        self.max_senders = max_senders
        self.node = node
        self.name = name
        self.zero_copy = zero_copy
        self.segment = Segment.create(
            readyflags.size(max_senders, capacity), name=name, node=node, populate=False
        )
        readyflags.init(self.segment, max_senders, capacity, slab_threshold)
        self.capacity = capacity
        self._flags = readyflags.flags_view(self.segment)
        self._opened = readyflags.opened_view(self.segment)
        self._sleep = readyflags.sleep_view(self.segment)  # [SLEEPING], [EPOCH]
        self._turn = 0  # which flagged sender drains first next time (round robin)
        self._zeros = bytes(max_senders)
        self.doorbell_fd = _bell.new_eventfd()
        self._space_fds = space_fds
        self._slabs = slabs
        self._slab_reader = slab_reader
        self._owned_fds: list[int] = []
        self._owned_slabs: list[Slab] = []
        self._rings: dict[int, Ring] = {}
        self._readers: dict[int, RingReader] = {}
        self._acq, self._rel = _bell.make_fence()
        self.spinner = _bell.Spinner()

    @classmethod
    def create(cls, max_senders: int, capacity: int = DEFAULT_SLOT_CAPACITY, **kw: Any) -> Inbox:
        return cls(max_senders, capacity, **kw)

    # -- membership ---------------------------------------------------------------------
    def ring(
        self,
        sender_id: int,
        *,
        slab: Slab | Sequence[tuple[int, int]] | Literal["default"] | None = None,
    ) -> Ring:
        """Sender ``sender_id``'s slot as a ring (made once; touches no page).

        In a mesh (``space_fds`` given) the sender's space doorbell and slab
        are the mesh's. Standing alone, the first call makes them for this
        sender (``slab`` as for ``Ring.create``), owned by the inbox: send
        the ring's ``handles()`` to the sender."""
        ring = self._rings.get(sender_id)
        if ring is not None:
            return ring
        if not 0 <= sender_id < self.max_senders:
            raise ValueError(
                f"sender_id must be in 0..{self.max_senders - 1} for this inbox, not {sender_id}"
            )
        if self._space_fds is not None:
            space_fd = self._space_fds[sender_id]
            slab_obj = self._slabs[sender_id] if self._slabs is not None else None
        else:
            space_fd = _bell.new_eventfd()
            self._owned_fds.append(space_fd)
            slab_obj = _make_slab(slab, self.node, f"{self.name}-slab-{sender_id}")
            if slab_obj is not None:
                self._owned_slabs.append(slab_obj)
        ring = Ring.slot(
            self.segment,
            sender_id,
            doorbell_fd=self.doorbell_fd,
            space_fd=space_fd,
            slab=slab_obj,
            slab_reader=self._slab_reader,
        )
        self._rings[sender_id] = ring
        return ring

    def reader(self, sender_id: int) -> RingReader:
        """The reader of ``sender_id``'s slot (made on first use, at the shared tail)."""
        reader = self._readers.get(sender_id)
        if reader is None:
            reader = self._readers[sender_id] = self.ring(sender_id).reader(
                zero_copy=self.zero_copy
            )
        return reader

    def senders(self) -> list[int]:
        """The senders that ever wrote to this inbox (their opened byte is set)."""
        opened = self._opened.tobytes()
        return [s for s in range(self.max_senders) if opened[s]]

    def resume(self) -> None:
        """Take over as this inbox's reader (a restarted worker): look once at
        every slot a sender opened, since a predecessor may have cleared its
        ready byte and died before draining it. O(opened slots), at start only."""
        opened, flags = self._opened.tobytes(), self._flags
        s = opened.find(1)
        while s >= 0:
            flags[s] = 1
            s = opened.find(1, s + 1)

    def hold(self, sender_id: int) -> SlabLease:
        """Inside a zero-copy callback for a slab record from ``sender_id``:
        keep the buffer past the callback (``lease.view``, then ``release()``)."""
        return self._readers[sender_id].hold()

    # -- reading -----------------------------------------------------------------------
    def pending(self) -> bool:
        """True when some sender flagged work (one C-level compare)."""
        return self._flags.tobytes() != self._zeros

    def drain(self, callback: Callable[[int, Any], object], limit: int | None = None) -> int:
        """Call ``callback(sender_id, record)`` for the waiting records of every
        flagged ring (each ring's records in order); return the count.

        With a ``limit``, each flagged sender gets an equal share of it (at
        least one record), starting one sender further each call, and a sender
        with records left stays flagged: a sender that floods its ring cannot
        starve the others of their turn (round robin between senders, O(1) per
        record)."""
        flags = self._flags
        snap = flags.tobytes()
        s = snap.find(1)
        if s < 0:
            return 0
        todo = []
        while s >= 0:
            flags[s] = 0
            todo.append(s)
            s = snap.find(1, s + 1)
        if len(todo) > 1:
            self._turn = turn = (self._turn + 1) % len(todo)
            todo = todo[turn:] + todo[:turn]
        self._acq()
        self._rel()
        readers = self._readers
        share = None if limit is None else max(1, limit // len(todo))
        total = 0
        done = 0
        try:
            for s in todo:
                reader = readers.get(s)
                if reader is None:
                    if self._space_fds is None and s not in self._rings:
                        log.warning(
                            "inbox %r: sender %d flagged work but has no ring here",
                            self.segment.name,
                            s,
                        )
                        done += 1
                        continue
                    reader = self.reader(s)
                total += reader.drain(callback, share, sender_id=s)
                if share is not None and reader.pending():
                    flags[s] = 1  # its share is spent: the rest waits for the next call
                done += 1
        finally:
            for s in todo[done:]:  # not reached (an exception): look again next time
                flags[s] = 1
        return total

    # -- sleeping --------------------------------------------------------------------------
    def spin(self) -> bool:
        """Poll for a bounded, adaptive few microseconds; True if work arrived."""
        return self.spinner.spin(self.pending)

    def prepare_sleep(self) -> bool:
        """Announce sleep, fence, re-check every ready byte. True: safe to wait on
        ``doorbell_fd``; False: work arrived (the announcement is withdrawn)."""
        # A fresh nonzero epoch per sleep, kept in shared memory so that a
        # restarted reader never reuses one a sender already rang for.
        q = self._sleep
        epoch = q[EPOCH] % 0xFFFF_FFFF_FFFF_FFFF + 1
        q[EPOCH] = epoch
        q[SLEEPING] = epoch
        self._acq()
        self._rel()
        if self._flags.tobytes() != self._zeros:
            self._sleep[SLEEPING] = 0
            return False
        self.spinner.sleeping()
        return True

    def wake_up(self) -> None:
        """Withdraw the sleep announcement and reset the doorbell (call on waking)."""
        self._sleep[SLEEPING] = 0
        _bell.clear(self.doorbell_fd)
        self.spinner.woke()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocking helper (tests, benchmarks): spin, then sleep on the doorbell."""
        return _bell.wait_on_doorbell(self, timeout)

    def close(self) -> None:
        """Close the readers, the doorbell, the segment, and what the inbox made
        for its senders (a mesh closes the senders' space doorbells and slabs)."""
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()
        self._readers.clear()
        for fd in self._owned_fds:
            os.close(fd)
        self._owned_fds.clear()
        for slab in self._owned_slabs:
            slab.close()
        self._owned_slabs.clear()
        for view in (self._flags, self._opened, self._sleep):
            view.release()
        if self.doorbell_fd >= 0:
            os.close(self.doorbell_fd)
            self.doorbell_fd = -1
        self.segment.close()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
