"""Machine discovery: what the hardware is, and the scheduling universe built on it.

``discover(root=None)`` reads /sys and /proc (under ``root``, default
``$ACTORQ_FSROOT`` or "/") into a :class:`~actorq.topology.model.Machine`;
``build_universe(machine, view="allowed")`` orders its CPUs into nested levels
of groups for placement. ``actorq.topology.render`` turns both into text or
versioned JSON.
"""

from __future__ import annotations

from .model import Machine as Machine
from .sysfs import discover as discover
from .universe import Universe as Universe
from .universe import build_universe as build_universe
