"""A single-producer, single-consumer ring of byte records in shared memory.

Memory ordering: why this is correct, and where
===============================================

Two processes share the ring's pages. The writer copies a record into the
data area and then stores the new *head* (a byte position that only grows);
the reader loads head, reads every record below it and then stores the new
*tail*. Nothing else coordinates them, so the design leans entirely on what
the CPU promises about the order in which one core's memory operations become
visible to another.

x86-64 is TSO (total store order). It promises: (1) stores become visible to
other cores in program order; (2) loads are not reordered with other loads;
(3) a store is not reordered with an *earlier* load; but (4) a load may be
satisfied before an *earlier* store to a different address is visible (the
store buffer). Aligned 8-byte loads and stores are single-copy atomic.

* Publication (writer): record bytes, then the record's header word, then
  ``head``. By (1) a reader that sees the new head also sees the header and
  the bytes. The reader loads head, then the header and bytes; by (2) those
  loads cannot run ahead of the head load. So a record is never read before
  it is complete.
* Reuse (reader -> writer): the reader's loads of a record come before its
  store of the new tail; by (3) the writer cannot observe that tail and
  overwrite the bytes while the reader could still be loading them. With
  ``zero_copy=True`` the tail is stored only after the callback returned, so
  a memoryview handed out stays valid for the callback's duration.
* Atomicity from Python: every shared word is written through
  ``memoryview.cast('Q')[i] = v`` on an 8-byte-aligned slot: one aligned
  8-byte store. ``struct.pack_into`` is NOT one store (it clears then writes;
  a concurrent reader can see a transient zero), so it is never used on a
  shared word. The C compiler cannot move these stores across the opaque
  interpreter calls between two Python statements.
* Sleep/wake (Dekker's pattern). The reader announces "sleeping", then
  re-reads head; the writer stores head, then reads "sleeping". (4) allows
  each side's load to pass its own earlier store: both could read stale
  values, the writer skips the doorbell and the reader sleeps on a record.
  Both sides therefore execute a full fence between the store and the load:
  an uncontended CPython lock acquire/release, which is a ``lock``-prefixed
  instruction on x86-64 (see ``doorbell.make_fence``). The same fenced
  pattern protects the space doorbell (writer stores "want space", fences,
  re-reads tail; reader stores tail, fences, reads "want space") and the
  Inbox's ready flags (see ``inbox.py``).

A weaker CPU (aarch64, POWER, RISC-V) allows stores to be seen out of order
and loads to pass loads. There the writer would need a release store of head
(``stlr`` or a ``dmb ish`` before it), the reader an acquire load of head
(``ldar`` or ``dmb ishld`` after it), and the reader a barrier between its
last record load and the tail store. Python exposes none of those, and a
lock acquire/release there is not guaranteed to order plain memoryview
accesses made outside the lock. Rather than corrupt data silently, the ring
refuses to run on anything but x86-64 (``RingError`` at create/attach).

Layout
======

A ring is a 256-byte control block followed by ``capacity`` bytes of
records. It lives either alone in a memfd of its own (``Ring.create``, at
offset 0) or as a *slot* of an inbox segment (``Ring.slot``, at the slot's
offset; see ``readyflags.py``): the runtime's mesh uses slots only, so a
reader's N inbound rings are one memfd, and a slot's pages are allocated when
its writer first writes. The control block's 8-byte words sit in 64-byte
cache lines grouped by who writes them and how often (head and tail never
share a line):

* line 0, constant: magic, version, capacity, max record, slab threshold
  (a standalone ring only: a slot's geometry is in its inbox's header, so an
  all-zero slot is a valid empty ring and nothing needs initialising).
* line 1, written by the writer: ``head``, ``want_tail``/``want_seq`` (space
  doorbell request), doorbells rung, the CPU the writer is pinned to (a
  reader pinned to the same CPU never spins: it would only delay the writer).
* line 2, written by the reader on every drain: ``tail``.
* line 3, written by the reader only when it goes to sleep: ``sleeping``
  (read by the writer on every publish, so it must not share a line with
  ``tail``, which changes all the time). A slot's reader sleeps on its
  inbox's word instead (``inbox.py``).

Records follow at offset 256, each 8-byte aligned: one 8-byte header word
``tag << 32 | length`` then the payload padded to 8 bytes. Tags carry a magic
so a reader can tell garbage from a record: INLINE (payload follows), SLAB
(an 8-byte slab handle follows; see ``slab.py``) and WRAP (the rest of the
area up to its end is padding: the next record starts at offset 0). A record
never straddles the end, so it is always one contiguous memoryview. That caps
an inline record at ``capacity // 2 - 8`` bytes: any such record fits in an
empty ring wherever head happens to be. Larger ones go through the slab.

Doorbells and backpressure
==========================

``publish()`` stores head and rings the reader's doorbell eventfd only if the
reader announced sleep; while both sides are busy there is no syscall at all.
The announcement is a sleep *epoch* (a fresh nonzero number per sleep), and
a writer rings once per epoch: without that, a writer that keeps publishing
while the woken reader waits for a CPU would make one syscall per record
(measured: ~400 doorbells per sleep on a loaded 2-CPU VM).
``send_nowait`` raises ``RingFull`` rather than wait or drop. To wait, call
``wait_for_space(n)``: it arms a request (the tail position the writer needs)
and returns True if there is room already; otherwise watch ``space_fd``,
which the reader rings, once per request, when a drain (or a slab release)
has satisfied it. A large record that finds its slab size class exhausted
arms the slab's request instead, which any of the slab's readers answers
(``slab.py``). The reader never blocks on the writer. A worker whose
outbound ring is full must keep draining its own inbound rings while it
waits (Seastar's nested-call deadlock), so waiting is the caller's choice of
loop, never a blocking call inside the ring.

In a mesh a writer has ONE space eventfd and ONE slab for all of its rings
(and a reader one doorbell for all of its slots), so fds grow with the
nodes, not their pairs. A space ring therefore says "some ring of yours has
room", not which: ``wait_for_space`` does not reset ``space_fd``, and the
one loop that watches it resets it once and retries every parked
destination (``RingPort._on_space``). Resetting it per ring would let one
ring's retry swallow the edge another ring's reader raised.
"""

from __future__ import annotations

import os
import platform
import select
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from ..errors import PayloadTooLarge, RingCorrupt, RingError, RingFull
from . import doorbell as _bell
from . import readyflags
from .segment import Segment

if TYPE_CHECKING:  # slab.py is imported on first use: most rings never need it
    from .slab import Slab, SlabReader, SlabWriter

__all__ = ["DEFAULT_CAPACITY", "Ring", "RingReader", "RingWriter"]

DEFAULT_CAPACITY = 1 << 20
HDR = 256
MAGIC = 0x61637471_72696E67  # "actqring"
VERSION = 1

# control words (index into the 'Q' view of the control block)
_MAGIC, _VERSION, _CAPACITY, _MAXREC, _THRESHOLD = 0, 1, 2, 3, 4
_HEAD, _WANT_TAIL, _WANT_SEQ, _DOORBELLS, _WRITER_CPU = 8, 9, 10, 11, 12
_TAIL = 16
_SLEEPING, _EPOCH = 24, 25

# record header: tag << 32 | length
_TAG_INLINE = 0xAC01_0000
_TAG_SLAB = 0xAC02_0000
_TAG_WRAP = 0xAC03_0000
_H_INLINE = _TAG_INLINE << 32
_H_SLAB = _TAG_SLAB << 32 | 8
_H_WRAP = _TAG_WRAP << 32
_LEN = 0xFFFF_FFFF

_ARCH_OK = platform.machine() in ("x86_64", "AMD64", "amd64")


def _require_tso() -> None:
    if not _ARCH_OK:
        raise RingError(
            f"actorq rings rely on x86-64 total store order; this CPU is {platform.machine()!r}, "
            "where Python cannot issue the acquire/release barriers the ring needs "
            "(see the essay at the top of actorq/shm/ring.py). Use the ZeroMQ transport instead."
        )


def _pinned_cpu() -> int | None:
    """The CPU this thread is pinned to, or None if it may run on several."""
    try:
        cpus = os.sched_getaffinity(0)
    except OSError:
        return None
    return next(iter(cpus)) if len(cpus) == 1 else None


def _rec_size(n: int) -> int:
    """Bytes an inline record of n payload bytes takes: header + payload padded to 8."""
    return 8 + ((n + 7) & ~7)


class Ring:
    """A ring in shared memory, with its doorbell and space doorbell.

    Either a *standalone* ring (``Ring.create``: its own memfd, geometry in
    its control block) or a *slot* of an inbox segment (``Ring.slot``: the
    geometry is the inbox's, the doorbell the inbox reader's, the space
    doorbell and slab the writer's, shared with its other rings). One side
    creates it and hands ``handles()`` to the other (fork or
    ``socket.send_fds``), which calls ``Ring.attach(*handles)``. Exactly one
    process may use ``writer()`` and one ``reader()``.
    """

    def __init__(
        self,
        seg: Segment,
        *,
        base: int,
        capacity: int,
        max_record: int,
        slab_threshold: int,
        doorbell_fd: int,
        space_fd: int,
        slab: Slab | None = None,
        slab_reader: int = 0,
        sender_id: int = -1,
        owned: bool = True,
    ) -> None:
        self.segment = seg
        self.base = base
        self.capacity = capacity
        self.max_record = max_record
        self.slab_threshold = slab_threshold
        self.doorbell_fd = doorbell_fd
        self.space_fd = space_fd
        self.slab = slab
        self.slab_reader = slab_reader
        self.sender_id = sender_id
        self.owned = owned  # close() closes the segment, eventfds and slab
        self.name = seg.name if sender_id < 0 else f"{seg.name}[{sender_id}]"
        self._closed = False
        self._ends: list[RingWriter | RingReader] = []

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        capacity: int = DEFAULT_CAPACITY,
        *,
        node: int | None = None,
        name: str = "actorq-ring",
        slab: Slab | Sequence[tuple[int, int]] | Literal["default"] | None = "default",
        slab_threshold: int = 16384,
    ) -> Ring:
        """A new standalone ring with ``capacity`` bytes of record space (a power
        of two >= 64), its own doorbell and space doorbell.

        ``slab``: size classes for large records (``"default"``, None for no
        slab, a sequence of ``(size, count)``, or a ``Slab``, which this ring
        then owns); records over ``slab_threshold`` bytes go there."""
        _require_tso()
        if capacity < 64 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 64, not {capacity}")
        max_record = capacity // 2 - 8
        threshold = min(max(0, slab_threshold), max_record)
        seg = Segment.create(HDR + capacity, name=name, node=node)
        ctl = seg.buf[:HDR].cast("Q")
        ctl[_CAPACITY] = capacity
        ctl[_MAXREC] = max_record
        ctl[_THRESHOLD] = threshold
        ctl[_VERSION] = VERSION
        ctl[_MAGIC] = MAGIC
        ctl.release()
        fds: list[int] = []
        try:
            fds.append(_bell.new_eventfd())
            fds.append(_bell.new_eventfd())
            slab_obj = _make_slab(slab, node, name + "-slab")
        except BaseException:
            for fd in fds:
                os.close(fd)
            seg.close()
            raise
        return cls._standalone(seg, fds[0], fds[1], slab_obj)

    @classmethod
    def slot(
        cls,
        inbox_seg: Segment,
        sender_id: int,
        *,
        doorbell_fd: int,
        space_fd: int,
        slab: Slab | None = None,
        slab_reader: int = 0,
    ) -> Ring:
        """Sender ``sender_id``'s slot in an inbox segment (see readyflags.py), as
        a ring that owns nothing: no fd is made, no page is touched."""
        _require_tso()
        senders, capacity, max_record, threshold, stride, slots = readyflags.geometry(inbox_seg)
        if not 0 <= sender_id < senders:
            raise ValueError(
                f"sender_id must be in 0..{senders - 1} for this inbox, not {sender_id}"
            )
        return cls(
            inbox_seg,
            base=slots + sender_id * stride,  # control block and first records share a page
            capacity=capacity,
            max_record=max_record,
            slab_threshold=threshold,
            doorbell_fd=doorbell_fd,
            space_fd=space_fd,
            slab=slab,
            slab_reader=slab_reader,
            sender_id=sender_id,
            owned=False,
        )

    def handles(self) -> tuple[int, ...]:
        """Plain ints to pass to another process: (segment fd, doorbell fd, space
        fd, slab fd or -1, sender id or -1, slab reader id). Send the fds with
        ``socket.send_fds`` (or inherit them) and the ints as data. For a slot
        the segment is the whole inbox's."""
        if self.segment.fd < 0:
            raise RingError(f"ring {self.name!r}: release_fds() was called; it has no handles")
        return (
            self.segment.fd,
            self.doorbell_fd,
            self.space_fd,
            self.slab.fd if self.slab is not None else -1,
            self.sender_id,
            self.slab_reader,
        )

    @classmethod
    def attach(
        cls,
        ring_fd: int,
        doorbell_fd: int,
        space_fd: int,
        slab_fd: int = -1,
        sender_id: int = -1,
        slab_reader: int = 0,
    ) -> Ring:
        """The ring behind ``handles()`` as received here; takes ownership of the fds."""
        _require_tso()
        seg = Segment.from_fd(ring_fd)
        slab: Slab | None = None
        try:
            if slab_fd >= 0:
                from .slab import Slab

                slab = Slab.from_fd(slab_fd)
            if sender_id >= 0:
                ring = cls.slot(
                    seg,
                    sender_id,
                    doorbell_fd=doorbell_fd,
                    space_fd=space_fd,
                    slab=slab,
                    slab_reader=slab_reader,
                )
                ring.owned = True
                return ring
            return cls._standalone(seg, doorbell_fd, space_fd, slab, slab_reader)
        except BaseException:
            seg.close()
            if slab is not None:
                slab.close()
            raise

    @classmethod
    def _standalone(
        cls,
        seg: Segment,
        doorbell_fd: int,
        space_fd: int,
        slab: Slab | None,
        slab_reader: int = 0,
    ) -> Ring:
        """The standalone ring in ``seg``, its geometry read from its control block
        (``create`` wrote it there; ``attach`` checks what it received)."""
        ctl = seg.buf[:HDR].cast("Q")
        try:
            if ctl[_MAGIC] != MAGIC or ctl[_VERSION] != VERSION:
                raise RingCorrupt(
                    f"ring {seg.name!r} (fd {seg.fd}): bad magic/version at offset 0; "
                    "this fd is not an actorq ring of this version"
                )
            capacity, max_record, threshold = ctl[_CAPACITY], ctl[_MAXREC], ctl[_THRESHOLD]
        finally:
            ctl.release()
        if capacity < 64 or capacity & (capacity - 1) or HDR + capacity > seg.size:
            raise RingCorrupt(f"ring {seg.name!r}: impossible capacity {capacity} at offset 16")
        return cls(
            seg,
            base=0,
            capacity=capacity,
            max_record=max_record,
            slab_threshold=threshold,
            doorbell_fd=doorbell_fd,
            space_fd=space_fd,
            slab=slab,
            slab_reader=slab_reader,
        )

    def stats(self) -> dict[str, int]:
        """What either side can see in shared memory: positions (bytes ever
        written/consumed), bytes in use, doorbells the writer rang, space
        requests it made, and whether the reader is asleep (standalone rings:
        a slot's reader sleeps on its inbox)."""
        ctl = self.segment.buf[self.base : self.base + HDR].cast("Q")
        try:
            head, tail = ctl[_HEAD], ctl[_TAIL]
            return {
                "capacity": self.capacity,
                "head": head,
                "tail": tail,
                "used": head - tail,
                "doorbells": ctl[_DOORBELLS],
                "space_requests": ctl[_WANT_SEQ],
                "reader_sleeping": int(ctl[_SLEEPING] != 0),
            }
        finally:
            ctl.release()

    def release_fds(self) -> None:
        """Close the memfd descriptors (ring or inbox segment, slab) and keep
        the mappings and the eventfds: for a process that will never pass this
        ring on. Python's mmap keeps its own dup of each memfd until the
        mapping goes (3.11 has no ``trackfd=False``)."""
        self.segment.close_fd()
        if self.slab is not None:
            self.slab.segment.close_fd()

    def writer(self) -> RingWriter:
        end = RingWriter(self)
        self._ends.append(end)
        return end

    def reader(self, *, zero_copy: bool = False) -> RingReader:
        end = RingReader(self, zero_copy=zero_copy)
        self._ends.append(end)
        return end

    def close(self) -> None:
        """Release this side's views; an owning ring also closes its fds and
        mappings (the memory goes when every side closed)."""
        if self._closed:
            return
        self._closed = True
        for end in self._ends:
            end.close()
        self._ends.clear()
        if not self.owned:
            return
        for fd in (self.doorbell_fd, self.space_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.slab is not None:
            self.slab.close()
        self.segment.close()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ring {self.name!r} capacity={self.capacity} fd={self.segment.fd}>"


def _make_slab(
    slab: Slab | Sequence[tuple[int, int]] | Literal["default"] | None, node: int | None, name: str
) -> Slab | None:
    if slab is None:
        return None
    from .slab import Slab

    if isinstance(slab, Slab):
        return slab
    return Slab.create(None if slab == "default" else slab, node=node, name=name)


class _End:
    """What both ends hold: views of the ring's header and data, its space fd
    and a private fence."""

    _slab: SlabWriter | SlabReader | None

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        buf = ring.segment.buf
        base = ring.base
        self._ctl = buf[base : base + HDR].cast("Q")
        self._data = buf[base + HDR : base + HDR + ring.capacity]
        self._dq = self._data.cast("Q")
        self._mm = ring.segment.mmap
        self._pos0 = base + HDR + 8  # mmap offset of the payload of a record at data offset 0
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._tail = self._ctl[_TAIL]
        self.space_fd = ring.space_fd
        self._acq, self._rel = _bell.make_fence()

    def _release(self, *extra: memoryview) -> None:
        for v in (self._ctl, self._dq, self._data, *extra):
            v.release()


class RingWriter(_End):
    """The producing end. ``write`` appends without publishing; ``publish``
    makes everything written visible at once (batching); ``send_nowait`` is
    both. ``doorbells`` counts the doorbell writes this writer made."""

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring)
        self._head = self._published = self._ctl[_HEAD]
        self._inline_max = ring.slab_threshold if ring.slab is not None else ring.max_record
        # One SlabWriter per slab and process, shared by the rings it serves.
        self._slab: SlabWriter | None = ring.slab.writer() if ring.slab is not None else None
        self._slab_reader = ring.slab_reader
        self._doorbell = ring.doorbell_fd
        if ring.sender_id >= 0:  # a slot: flags and sleep word are the inbox's
            self._flags: memoryview | None = readyflags.flags_view(ring.segment)
            self._sleepq = readyflags.sleep_view(ring.segment)
            self._sleepi = readyflags.SLEEPING
            opened = readyflags.opened_view(ring.segment)
            if not opened[ring.sender_id]:
                opened[ring.sender_id] = 1  # a reader that starts later looks here
            opened.release()
        else:
            self._flags = None
            self._sleepq = self._ctl
            self._sleepi = _SLEEPING
        self._sid = ring.sender_id
        self._rung = 0  # the reader's sleep epoch this writer last rang for
        self._want_seq = self._ctl[_WANT_SEQ]
        self.doorbells = 0
        cpu = _pinned_cpu()
        self._ctl[_WRITER_CPU] = 0 if cpu is None else cpu + 1

    # -- hot path -------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append one record without publishing it. Raises RingFull, PayloadTooLarge."""
        n = len(data)
        if n > self._inline_max:
            self._write_slab(data, n)
            return
        need = 8 + ((n + 7) & ~7)
        head = self._head
        off = head & self._mask
        pad = self._cap - off
        if need > pad:  # does not fit before the end: wrap marker, then at 0
            if head + pad + need - self._tail > self._cap:
                self._tail = self._ctl[_TAIL]
                if head + pad + need - self._tail > self._cap:
                    raise RingFull(self._full_msg(n))
            self._dq[off >> 3] = _H_WRAP
            head += pad
            off = 0
        elif head + need - self._tail > self._cap:
            self._tail = self._ctl[_TAIL]
            if head + need - self._tail > self._cap:
                raise RingFull(self._full_msg(n))
        pos = self._pos0 + off
        self._mm[pos : pos + n] = data
        self._dq[off >> 3] = _H_INLINE | n
        self._head = head + need

    def publish(self) -> None:
        """Make written records visible; ring the doorbell only if the reader sleeps."""
        head = self._head
        if head == self._published:
            return
        self._published = head
        self._ctl[_HEAD] = head
        self._acq()
        self._rel()
        flags = self._flags
        if flags is not None and not flags[self._sid]:
            flags[self._sid] = 1
            self._acq()
            self._rel()
        sleeping = self._sleepq[self._sleepi]
        if sleeping and sleeping != self._rung:
            self._rung = sleeping  # once per sleep, however many records follow
            _bell.ring(self._doorbell)
            self.doorbells += 1
            self._ctl[_DOORBELLS] = self.doorbells

    def send_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """Append and publish one record (no syscall unless the reader sleeps)."""
        # write() and publish() inlined for the common case: this is every
        # actor message's path. Wrap-around, a stale tail, slab records and
        # RingFull take the general path.
        n = len(data)
        head = self._head
        off = head & self._mask
        need = (n + 15) & -8
        if n > self._inline_max or need > self._cap - off or head + need - self._tail > self._cap:
            self.write(data)
            self.publish()
            return
        pos = self._pos0 + off
        self._mm[pos : pos + n] = data
        self._dq[off >> 3] = _H_INLINE | n
        head += need
        self._head = self._published = head
        self._ctl[_HEAD] = head
        self._acq()
        self._rel()
        if self._flags is not None and not self._flags[self._sid]:
            self._flags[self._sid] = 1
            self._acq()
            self._rel()
        sleeping = self._sleepq[self._sleepi]
        if sleeping and sleeping != self._rung:
            self._rung = sleeping  # once per sleep, however many records follow
            _bell.ring(self._doorbell)
            self.doorbells += 1
            self._ctl[_DOORBELLS] = self.doorbells

    # -- slab records ---------------------------------------------------------------
    def _write_slab(self, data: bytes | bytearray | memoryview, n: int) -> None:
        slab = self._slab
        if slab is None or n > slab.largest:
            where = (
                f"the slab's largest class is {slab.largest} bytes"
                if slab is not None
                else f"the ring carries at most {self._inline_max} bytes inline and has no slab"
            )
            raise PayloadTooLarge(
                f"ring {self.ring.name!r}: a {n}-byte record is too large ({where}); "
                "split the payload or create the ring with larger slab classes"
            )
        head = self._head
        off = head & self._mask
        pad = self._cap - off
        total = 16 + (pad if pad < 16 else 0)
        if head + total - self._tail > self._cap:
            self._tail = self._ctl[_TAIL]
            if head + total - self._tail > self._cap:
                raise RingFull(self._full_msg(n))
        handle, view = slab.alloc(n, self._slab_reader)  # RingFull: the class is exhausted
        view[:n] = data
        view.release()
        if pad < 16:
            self._dq[off >> 3] = _H_WRAP
            head += pad
            off = 0
        self._dq[(off >> 3) + 1] = handle
        self._dq[off >> 3] = _H_SLAB
        self._head = head + 16

    # -- backpressure ---------------------------------------------------------------
    def _room_target(self, nbytes: int) -> int:
        """The tail position at which a record of ``nbytes`` would fit."""
        need = 16 if nbytes > self._inline_max else _rec_size(nbytes)
        head = self._head
        pad = self._cap - (head & self._mask)
        total = need + (pad if need > pad else 0)
        return head + total - self._cap

    def _has_room(self, nbytes: int) -> bool:
        if nbytes > self._inline_max:
            if self._slab is None or nbytes > self._slab.largest:
                return True  # send will raise PayloadTooLarge: do not wait for it
            if not self._slab.can_alloc(nbytes):
                return False
        self._tail = self._ctl[_TAIL]
        return self._tail >= self._room_target(nbytes)

    def wait_for_space(self, nbytes: int) -> bool:
        """Arm the space doorbell for a record of ``nbytes``; True if there is room now.

        Publishes what was written first (the reader can only free what it
        can see). On False, wait until ``space_fd`` is readable (the reader
        rings it once for this request), clear it, then retry the send; call
        this again if it still does not fit. The request asks for half the
        ring (or the record, if larger) to be free, so a producer that
        outruns its consumer wakes once per half ring, not once per record.
        A slab record whose size class is exhausted asks the slab's readers
        instead (slab.py). This does not clear ``space_fd``: in a mesh it is
        shared by all of the writer's rings, and only the one loop that
        watches it may reset it."""
        self.publish()
        if self._has_room(nbytes):
            return True
        slab = self._slab
        if nbytes > self._inline_max and slab is not None and not slab.can_alloc(nbytes):
            slab.arm()
        if self._tail < self._room_target(nbytes):
            target = self._room_target(nbytes)
            if nbytes <= self._inline_max:
                target = max(target, self._head - self._cap // 2)
            self._want_seq += 1
            ctl = self._ctl
            ctl[_WANT_TAIL] = target
            ctl[_WANT_SEQ] = self._want_seq
        self._acq()
        self._rel()
        return self._has_room(nbytes)

    def send(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Blocking send for threads and tests: parks on ``space_fd`` while full.
        An event loop should use ``send_nowait`` + ``wait_for_space`` instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = None
        while True:
            try:
                self.send_nowait(data)
                return
            except RingFull:
                if self.wait_for_space(len(data)):
                    continue
            if poller is None:
                poller = select.poll()
                poller.register(self.space_fd, select.POLLIN)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RingFull(self._full_msg(len(data)) + f" (waited {timeout} s)")
            poller.poll(None if left is None else max(1, int(left * 1000)))
            _bell.clear(self.space_fd)

    async def send_async(self, data: bytes | bytearray | memoryview) -> None:
        """Send from a coroutine on actorq's loop, parking on ``space_fd`` while
        the ring is full (never dropping). Other coroutines and sources keep
        running meanwhile, so the worker goes on draining its inbound rings."""
        from ..loop import wait_readable

        while True:
            try:
                self.send_nowait(data)
                return
            except RingFull:
                if self.wait_for_space(len(data)):
                    continue
            await wait_readable(self.space_fd)
            _bell.clear(self.space_fd)

    def _full_msg(self, n: int) -> str:
        used = self._head - self._tail
        return (
            f"ring {self.ring.name!r} is full: a {n}-byte record does not fit "
            f"({used} of {self._cap} bytes in use); wait_for_space() and retry"
        )

    @property
    def free(self) -> int:
        """Bytes free as last seen by this writer (reads the reader's tail)."""
        self._tail = self._ctl[_TAIL]
        return self._cap - (self._head - self._tail)

    def close(self) -> None:
        """Release this end's views of the segment (Ring.close() does it too)."""
        if self._flags is not None:
            self._release(self._flags, self._sleepq)
        else:
            self._release()


class RingReader(_End):
    """The consuming end. ``drain`` hands every published record to a callback
    in order; the sleep handshake (``spin`` / ``prepare_sleep`` / ``wake_up``)
    lets a worker sleep on ``doorbell_fd`` without ever losing a wake-up."""

    def __init__(self, ring: Ring, *, zero_copy: bool = False) -> None:
        super().__init__(ring)
        self._max_record = ring.max_record
        self._zero_copy = zero_copy
        self._slab: SlabReader | None = None  # made on the first slab record
        self._freed = False  # a slab buffer went back since the last space check
        self._held: tuple[int, memoryview] | None = None
        self.doorbell_fd = ring.doorbell_fd
        # Requests are numbered from 1; one made before this reader existed is
        # still owed a ring, so start from "none rung" (a spare ring is harmless).
        self._rung_seq = 0
        self._corrupt: RingCorrupt | None = None
        self.spinner = _bell.Spinner()
        self._cpu = _pinned_cpu()
        self.space_rings = 0

    def pending(self) -> bool:
        """True when a published record awaits (one shared load)."""
        return self._ctl[_HEAD] != self._tail

    def drain(
        self,
        callback: Callable[..., object],
        limit: int | None = None,
        sender_id: int | None = None,
    ) -> int:
        """Call ``callback(record)`` for each available record, in order; return the count.

        ``record`` is bytes, or with ``zero_copy=True`` a memoryview valid only
        until the callback returns (it is released then; copy what you keep,
        or call ``hold()`` for a slab record). Keeps going until the ring is
        empty or ``limit`` records were handled. If the callback raises, the
        record counts as consumed and the exception propagates. With
        ``sender_id`` (the Inbox passes it) the callback gets
        ``(sender_id, record)``."""
        if self._corrupt is not None:
            raise self._corrupt
        ctl = self._ctl
        tail = self._tail
        head = ctl[_HEAD]
        if head == tail:
            return 0
        emit = callback if sender_id is None else partial(callback, sender_id)
        data, dq, mask, cap, mm = self._data, self._dq, self._mask, self._cap, self._mm
        zero_copy = self._zero_copy
        tag_inline, lenmask, base = _TAG_INLINE, _LEN, self._pos0
        # `left` counts down to 0 when there is a limit; from -1 it never gets there.
        start = left = -1 if limit is None else limit
        try:
            while head != tail and left != 0:
                if not 0 < head - tail <= cap:
                    self._fail(tail & mask, f"head {head} is not within one ring of tail {tail}")
                while tail != head:
                    off = tail & mask
                    hdr = dq[off >> 3]
                    if hdr >> 32 == tag_inline:
                        n = hdr & lenmask
                        step = (n + 15) & -8
                        if off + step > cap or step > head - tail:
                            self._fail(off, f"record length {n} runs past the published data")
                        tail += step
                        if zero_copy:
                            rec = data[off + 8 : off + 8 + n]
                            emit(rec)
                            try:
                                rec.release()
                            except BufferError:
                                pass
                        else:
                            pos = base + off
                            emit(mm[pos : pos + n])
                    elif hdr >> 32 == _TAG_WRAP:
                        if hdr & _LEN or cap - off > head - tail:
                            self._fail(off, f"wrap marker {hdr:#018x} runs past the published data")
                        tail += cap - off
                        continue
                    elif hdr == _H_SLAB and off + 16 <= cap:
                        if head - tail < 16:
                            self._fail(off, "slab record runs past the published data")
                        handle = dq[(off >> 3) + 1]
                        tail += 16
                        self._slab_record(emit, handle, off)
                    else:
                        self._fail(off, f"impossible record header {hdr:#018x}")
                    left -= 1
                    if left == 0:
                        break
                if left != 0:
                    # Publish what we consumed before looking for more: a drain
                    # that keeps finding records (a ping-pong answered from its
                    # callback) must not leave the writer seeing a full ring. The
                    # space doorbell check stays in ``finally`` (self._tail is
                    # only advanced there).
                    ctl[_TAIL] = tail
                    head = ctl[_HEAD]
        finally:
            if tail != self._tail:
                self._tail = tail
                ctl[_TAIL] = tail
                # _after_free() inlined: fence, then did the writer ask for room?
                self._acq()
                self._rel()
                seq = ctl[_WANT_SEQ]
                if seq != self._rung_seq and tail >= ctl[_WANT_TAIL]:
                    self._ring_space(seq)
                elif self._freed:
                    self._freed = False
                    if self._slab is not None and self._slab.wanted():
                        self._ring_space(self._rung_seq)
        return start - left

    def _slab_record(self, emit: Callable[[Any], object], handle: int, off: int) -> None:
        slab = self._slab
        if slab is None:
            if self.ring.slab is None:
                self._fail(off, "slab record in a ring that has no slab")
            slab = self._slab = self.ring.slab.reader(self.ring.slab_reader)
        try:
            view = slab.view(handle)
        except ValueError as exc:
            self._fail(off + 8, f"bad slab handle {handle:#x}: {exc}")
        if self._zero_copy:
            self._held = (handle, view)
            try:
                emit(view)
            finally:
                if self._held is not None:
                    self._held = None
                    try:
                        view.release()
                    except BufferError:
                        pass
                    slab.free(handle)
                    self._freed = True
        else:
            rec = view.tobytes()
            view.release()
            slab.free(handle)
            self._freed = True
            emit(rec)

    def hold(self) -> SlabLease:
        """Inside a zero-copy callback for a slab record: keep its buffer past
        the callback. The lease's ``view`` stays valid until ``release()``."""
        held = self._held
        if held is None:
            raise RuntimeError("hold() works only inside a zero-copy callback for a slab record")
        self._held = None
        return SlabLease(self, *held)

    def _after_free(self) -> None:
        """After tail moved or a slab buffer came back: ring the writer's space
        doorbell if it asked and its request is now satisfied (once per request)."""
        self._acq()
        self._rel()
        ctl = self._ctl
        seq = ctl[_WANT_SEQ]
        if seq != self._rung_seq and self._tail >= ctl[_WANT_TAIL]:
            self._ring_space(seq)
        elif self._slab is not None and self._slab.wanted():
            self._ring_space(self._rung_seq)

    def _ring_space(self, seq: int) -> None:
        self._rung_seq = seq
        _bell.ring(self.space_fd)
        self.space_rings += 1

    def _fail(self, off: int, why: str) -> NoReturn:
        exc = RingCorrupt(
            f"ring {self.ring.name!r} (fd {self.ring.segment.fd}): {why} at data offset {off} "
            f"(tail {self._tail}); the ring is not trusted any more: recreate it"
        )
        self._corrupt = exc
        raise exc

    # -- sleeping ---------------------------------------------------------------------
    def spin(self) -> bool:
        """Poll for a bounded, adaptive few microseconds; True if work arrived.

        Never spins when the writer is pinned to the CPU this reader is pinned
        to: there, spinning only keeps the writer from running."""
        cpu = self._cpu
        if cpu is not None and self._ctl[_WRITER_CPU] == cpu + 1:
            return self.pending()
        return self.spinner.spin(self.pending)

    def prepare_sleep(self) -> bool:
        """Announce sleep, fence, re-check. True: safe to wait on ``doorbell_fd``;
        False: work arrived (the announcement is withdrawn)."""
        if self.ring.sender_id >= 0:
            raise RuntimeError(
                f"ring {self.ring.name!r} belongs to an Inbox: use Inbox.prepare_sleep()"
            )
        ctl = self._ctl
        epoch = ctl[_EPOCH] % 0xFFFF_FFFF_FFFF_FFFF + 1  # never 0: 0 means awake
        ctl[_EPOCH] = epoch
        ctl[_SLEEPING] = epoch
        self._acq()
        self._rel()
        if ctl[_HEAD] != self._tail:
            ctl[_SLEEPING] = 0
            return False
        self.spinner.sleeping()
        return True

    def wake_up(self) -> None:
        """Withdraw the sleep announcement and reset the doorbell (call on waking)."""
        self._ctl[_SLEEPING] = 0
        _bell.clear(self.doorbell_fd)
        self.spinner.woke()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocking helper for threads, tests and benchmarks: spin, then sleep on
        the doorbell until work arrives or ``timeout``; True if work is pending."""
        return _bell.wait_on_doorbell(self, timeout)

    def close(self) -> None:
        """Release this end's views of the segment (Ring.close() does it too)."""
        self._release()
        if self._slab is not None:
            self._slab.close()
            self._slab = None


class SlabLease:
    """A slab record kept past its callback; ``release()`` recycles the buffer."""

    __slots__ = ("_handle", "_reader", "view")

    def __init__(self, reader: RingReader, handle: int, view: memoryview) -> None:
        self._reader = reader
        self._handle: int | None = handle
        self.view = view

    def release(self) -> None:
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            self.view.release()
        except BufferError:
            pass
        slab = self._reader._slab
        assert slab is not None  # a lease exists only for a slab record
        slab.free(handle)
        self._reader._after_free()

    def __enter__(self) -> SlabLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
