"""Shared memory between pinned workers: memfd segments, SPSC rings with
doorbells, an inbox that finds the rings with work in O(1), and slabs for
large payloads. Rings carry bytes; they know nothing of msgpack or actors.
"""

from __future__ import annotations

from ..errors import PayloadTooLarge as PayloadTooLarge
from ..errors import RingCorrupt as RingCorrupt
from ..errors import RingError as RingError
from ..errors import RingFull as RingFull
from .doorbell import Spinner as Spinner
from .inbox import Inbox as Inbox
from .ring import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from .ring import Ring as Ring
from .ring import RingReader as RingReader
from .ring import RingWriter as RingWriter
from .ring import SlabLease as SlabLease
from .segment import Segment as Segment
from .segment import numa_nodes as numa_nodes
from .slab import Slab as Slab
