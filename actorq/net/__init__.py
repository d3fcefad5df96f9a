"""The connection server facility: accept on every worker, serve each
connection fairly, and fail gracefully under unexpected traffic (caps,
slow-client timeouts, fd exhaustion, a prefail policy). See ``server.py``;
``handoff.py`` moves a live connection to another worker.
"""

from __future__ import annotations

from .handoff import Handoff as Handoff
from .server import FD_WEIGHT as FD_WEIGHT
from .server import Connection as Connection
from .server import Limits as Limits
from .server import Server as Server
from .server import listen as listen
from .server import prefail_order as prefail_order

__all__ = ["FD_WEIGHT", "Connection", "Handoff", "Limits", "Server", "listen", "prefail_order"]
