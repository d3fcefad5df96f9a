"""One reader's inbound rings behind ONE doorbell, with O(1) discovery of work.

A worker has an inbound ring from each peer. Waking up and polling every
ring's head would cost O(workers) Python steps per wake-up. Instead the inbox
keeps a small shared segment with:

* ``sleeping`` (word 8, with the epoch counter in word 9, on their own cache
  line): written by the reader only: 0
  when awake, else a fresh epoch number per sleep (each sender rings at most
  once per epoch, see ring.py);
* ``ready[s]`` (one byte per sender, from offset 128): set to 1 by sender
  ``s`` only, cleared to 0 by the reader only.

(The layout itself lives in ``readyflags.py``, which the senders' ring
writers read too.)

Sender ``s``, on publish: store head (ring.py); fence; if ``ready[s]`` is 0,
store 1 and fence again (this second fence is paid only on the
empty -> non-empty transition, as seen by the sender); then, if
``sleeping`` is set, ring the shared doorbell.

Reader, on drain: copy the ready bytes (one C-level copy of ``max_senders``
bytes) and walk only the set ones with ``bytes.find``: the Python work is
proportional to the rings that have work, not to the number of peers. For
those: store 0 into each ``ready[s]``, one fence, then drain each ring. To
sleep: store ``sleeping = 1``; fence; if any ready byte is set (one C-level
comparison), withdraw and drain instead.

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

Because each byte has exactly one writer per value transition (the sender
only writes 1, the reader only writes 0) no read-modify-write is needed;
single-byte stores are atomic. A spurious doorbell (sender read a stale
``sleeping``) costs one empty wake-up, never a lost record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

from . import doorbell as _bell
from . import readyflags
from .readyflags import EPOCH, MAX_SENDERS, SLEEPING
from .ring import DEFAULT_CAPACITY, Ring, RingReader, SlabLease
from .segment import Segment

__all__ = ["Inbox"]

log = logging.getLogger("actorq.shm")


class Inbox:
    """The reader's side: ``ring(sender_id)`` makes an inbound ring (send its
    ``handles()`` to that sender); ``drain(callback)`` calls
    ``callback(sender_id, record)`` for every waiting record."""

    def __init__(
        self,
        max_senders: int,
        *,
        node: int | None = None,
        name: str = "actorq-inbox",
        zero_copy: bool = False,
    ) -> None:
        if not 0 < max_senders <= MAX_SENDERS:
            raise ValueError(f"max_senders must be in 1..{MAX_SENDERS}, not {max_senders}")
        self.max_senders = max_senders
        self.node = node
        self.zero_copy = zero_copy
        self.segment = Segment.create(readyflags.size(max_senders), name=name, node=node)
        readyflags.init(self.segment, max_senders)
        self._flags = readyflags.flags_view(self.segment)
        self._sleep = readyflags.sleep_view(self.segment)  # [SLEEPING], [EPOCH]
        self._turn = 0  # which flagged sender drains first next time (round robin)
        self._zeros = bytes(max_senders)
        self.doorbell_fd = _bell.new_eventfd()
        self._readers: dict[int, RingReader] = {}
        self._rings: dict[int, Ring] = {}
        self._acq, self._rel = _bell.make_fence()
        self.spinner = _bell.Spinner()

    @classmethod
    def create(
        cls,
        max_senders: int,
        *,
        node: int | None = None,
        name: str = "actorq-inbox",
        zero_copy: bool = False,
    ) -> Inbox:
        return cls(max_senders, node=node, name=name, zero_copy=zero_copy)

    # -- membership ---------------------------------------------------------------------
    def ring(self, sender_id: int, capacity: int = DEFAULT_CAPACITY, **kw: Any) -> Ring:
        """Create sender ``sender_id``'s inbound ring (kept open here, read by this inbox)."""
        kw.setdefault("node", self.node)
        ring = Ring.create(capacity, inbox=self, sender_id=sender_id, **kw)
        try:
            self.add(sender_id, ring)
        except BaseException:
            ring.close()
            raise
        return ring

    def add(self, sender_id: int, ring: Ring) -> None:
        """Read ``ring`` (created with ``inbox=`` this inbox and this ``sender_id``)."""
        if ring.sender_id != sender_id:
            raise ValueError(
                f"ring {ring.name!r} was made for sender {ring.sender_id}, not {sender_id}"
            )
        if sender_id in self._readers:
            raise ValueError(f"sender {sender_id} already has a ring in this inbox")
        self._rings[sender_id] = ring
        self._readers[sender_id] = ring.reader(zero_copy=self.zero_copy)
        self._flags[sender_id] = 1  # look at it once: it may have been written already

    def remove(self, sender_id: int) -> Ring:
        """Stop reading a sender's ring and return it (the caller closes it)."""
        reader = self._readers.pop(sender_id)
        reader.close()
        return self._rings.pop(sender_id)

    def reader(self, sender_id: int) -> RingReader:
        return self._readers[sender_id]

    def senders(self) -> list[int]:
        """The senders whose rings this inbox reads."""
        return list(self._readers)

    @property
    def rings(self) -> Mapping[int, Ring]:
        """Each sender's ring by sender id: those read here, and those kept by
        ``close(keep=...)`` (read-only)."""
        return MappingProxyType(self._rings)

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
                    log.warning(
                        "inbox %r: sender %d flagged work but has no ring here",
                        self.segment.name,
                        s,
                    )
                else:
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

    def close(self, keep: Collection[int] = ()) -> None:
        """Close every ring still in the inbox, the doorbell and the segment.

        The rings of the senders in ``keep`` stay open and in ``rings``, no
        longer read here: for a process that writes into this inbox but reads
        another one (a worker after fork)."""
        for s in list(self._readers):
            ring = self.remove(s)
            if s in keep:
                self._rings[s] = ring
            else:
                ring.close()
        self._flags.release()
        self._sleep.release()
        if self.doorbell_fd >= 0:
            os.close(self.doorbell_fd)
            self.doorbell_fd = -1
        self.segment.close()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
