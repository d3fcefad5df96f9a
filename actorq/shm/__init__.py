"""Shared memory between pinned workers: memfd segments, SPSC rings with
doorbells, an inbox (one memfd holding a reader's rings, one slot per sender,
sparse) that finds the rings with work in O(1), and slabs for large payloads
(one per writer, shared by its rings). Rings carry bytes; they know nothing
of msgpack or actors.

    seg = Segment.create(size, name="actorq", node=None)   # .fd .size .buf .mmap
    ring = Ring.create(capacity, node=None, slab="default") # or Ring.attach(*ring.handles())
    w = ring.writer()   # send_nowait / write + publish / wait_for_space / send / send_async
    r = ring.reader()   # drain(cb, limit) / spin / prepare_sleep / wake_up / doorbell_fd
    inbox = Inbox.create(max_senders, capacity, node=None)
    ring = inbox.ring(sender_id)   # a slot; its handles() go to that sender
    inbox.drain(lambda sender_id, record: ...)

Why each part works the way it does: ``ring.py`` (memory ordering, layout,
doorbells, backpressure), ``inbox.py`` (ready flags and their race analysis),
``slab.py`` (buffer return without atomics), ``segment.py`` (memfd, NUMA).
"""

from __future__ import annotations

from ..errors import PayloadTooLarge as PayloadTooLarge
from ..errors import RingCorrupt as RingCorrupt
from ..errors import RingError as RingError
from ..errors import RingFull as RingFull
from .doorbell import Spinner as Spinner
from .inbox import DEFAULT_SLOT_CAPACITY as DEFAULT_SLOT_CAPACITY
from .inbox import Inbox as Inbox
from .ring import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from .ring import Ring as Ring
from .ring import RingReader as RingReader
from .ring import RingWriter as RingWriter
from .ring import SlabLease as SlabLease
from .segment import Segment as Segment
from .segment import numa_nodes as numa_nodes
from .slab import Slab as Slab
