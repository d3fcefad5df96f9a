"""actorq: a NUMA-aware actor runtime for Linux multicore machines.

Public API only; everything is re-exported from the modules that own it.
"""

from __future__ import annotations

from .errors import ActorDied as ActorDied
from .errors import ActorError as ActorError
from .errors import ActorNotFound as ActorNotFound
from .errors import ActorqError as ActorqError
from .errors import ActorqTopologyError as ActorqTopologyError
from .errors import Cancelled as Cancelled
from .errors import ConfigError as ConfigError
from .errors import PayloadTooLarge as PayloadTooLarge
from .errors import PlacementError as PlacementError
from .errors import RemoteError as RemoteError
from .errors import RingCorrupt as RingCorrupt
from .errors import RingFull as RingFull

__version__ = "0.1.0"
