"""actorq's per-worker event loop: edge-triggered epoll, continuations,
coroutines driven by the loop itself, and kernel event sources.

It knows nothing of actors: the worker wires rings and actors onto it.
``aio.py`` gives it asyncio's face, as uvloop does for libuv:
``actorq.loop.new_event_loop()``, ``EventLoopPolicy``, ``run(coro)``.
See ``core.py`` for the essay on edge-triggered semantics.
"""

from __future__ import annotations

from ..errors import Cancelled as Cancelled
from .aio import AsyncioLoop as AsyncioLoop
from .aio import EventLoopPolicy as EventLoopPolicy
from .aio import install as install
from .aio import new_event_loop as new_event_loop
from .aio import run as run
from .core import Future as Future
from .core import Handle as Handle
from .core import Loop as Loop
from .core import Source as Source
from .core import Task as Task
from .core import TimerHandle as TimerHandle
from .core import current_loop as current_loop
from .core import sleep as sleep
from .core import wait_for as wait_for
from .core import wait_readable as wait_readable
from .core import wait_writable as wait_writable
from .sources import CondVar as CondVar
from .sources import EventfdSource as EventfdSource
from .sources import FdSource as FdSource
from .sources import Inotify as Inotify
from .sources import Netlink as Netlink
from .sources import Signals as Signals
from .sources import Timer as Timer
from .sources import ZmqSource as ZmqSource
from .sources import block_signals as block_signals
