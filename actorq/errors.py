"""Every exception actorq raises on purpose, in one place.

Each error names the thing that is wrong and, where there is one, what to do.
Modules add their errors here (not locally) so users can import them all from
``actorq``.
"""

from __future__ import annotations

from asyncio import CancelledError


class ActorqError(Exception):
    """Base of actorq's own errors."""


# --- topology -----------------------------------------------------------------
class ActorqTopologyError(ActorqError):
    """Discovery could not make sense of a file under the sysfs/proc root."""


# --- shared memory ------------------------------------------------------------
class RingError(ActorqError):
    """Base of ring/segment errors."""


class RingFull(RingError):
    """The ring has no room for the record now; wait for space or retry."""


class RingCorrupt(RingError):
    """A reader found an impossible header; the ring is not trusted any more."""


class PayloadTooLarge(RingError, ValueError):
    """A record is larger than the ring or the slab's largest class can carry."""


# --- loop ---------------------------------------------------------------------
# A wait was cancelled. One class for actorq and asyncio: ``actorq.Cancelled``
# *is* ``asyncio.CancelledError`` (a BaseException, so ``except Exception`` in
# user code does not swallow it; let it propagate after cleanup). The worker's
# loop is an asyncio loop (loop/aio.py): an asyncio.timeout around an actor ask,
# and an actorq cancel of a task awaiting asyncio work, raise the same thing.
Cancelled = CancelledError


# --- actors and runtime -------------------------------------------------------
class ActorError(ActorqError):
    """Base of errors about actors."""


class ActorNotFound(ActorError, LookupError):
    """No actor by that id or name exists (or ever existed) in this runtime."""


class ActorDied(ActorError):
    """The actor (or the worker hosting it) died before answering."""


class RemoteError(ActorError):
    """An actor method raised; carries the remote type, message and traceback."""

    def __init__(self, type_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, str]]:
        # pickled when main's outcome goes back to the caller of actorq.run
        return (type(self), (self.type_name, self.message, self.traceback_text))

    def __str__(self) -> str:
        base = f"{self.type_name}: {self.message}"
        if self.traceback_text:
            return f"{base}\n--- remote traceback ---\n{self.traceback_text}"
        return base


class Deadlock(ActorError):
    """An ask would close a cycle of non-reentrant actors waiting on each other.

    Raised at once instead of letting every ask in the cycle wait out its
    deadline; the message names the cycle and what to change."""


class ConfigError(ActorqError, ValueError):
    """A configuration file or option is malformed; the message names it."""


class Overloaded(ActorError):
    """The actor's mailbox is full (its ``mailbox=`` bound); retry later or slow down."""


# --- placement ----------------------------------------------------------------
class PlacementError(ActorqError, ValueError):
    """An actor cannot be placed as asked (a pin outside the CPUs, bad hints); see the message."""


class ShutdownTimeout(ActorqError):
    """The runtime stopped, but ``main`` had not finished by ``stop_timeout`` and was killed."""


# --- outside clients ----------------------------------------------------------
class NoRuntime(ActorqError, ConnectionError):
    """No runtime answers at the address an outside client was given (none was
    started there, or it has stopped)."""


class ForkedClient(ActorqError, RuntimeError):
    """A client made before ``fork`` was used in the child: its sockets and
    channels belong to the parent. Connect again in each process."""
