"""Where every actor lives: one typed record per actor, names, and the dead.

The supervisor owns the only directory. The message path never consults it
(an actor id carries its worker); spawn, lookup, restarts, stats and outside
clients do.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from ..errors import ActorDied, ActorNotFound

NODE_SHIFT = 32


def worker_of(actor_id: int) -> int:
    return actor_id >> NODE_SHIFT


@dataclass
class ActorEntry:
    """One live actor: what re-creates it, where it lives and why."""

    id: int
    cls: str  # "module:qualname"
    args: list[Any]
    kwargs: dict[str, Any]
    name: str | None
    restart: str  # "never" | "always"
    worker: int
    cpu: int
    reason: str  # why placement chose this worker
    key: str  # the placer's key (its name, or Class#serial)
    creating: bool = False  # its worker has not confirmed __init__ yet
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    lost: int = 0  # messages for it lost in crashes of its worker

    def create_body(self) -> dict[str, Any]:
        """What a worker needs to instantiate it."""
        return {
            "id": self.id,
            "cls": self.cls,
            "args": self.args,
            "kwargs": self.kwargs,
            "name": self.name,
        }

    def row(self) -> dict[str, Any]:
        """Its line in stats."""
        return {
            "id": self.id,
            "name": self.name,
            "cls": self.cls,
            "worker": self.worker,
            "cpu": self.cpu,
            "reason": self.reason,
            "restart": self.restart,
            "crashes": len(self.crashes),
            "lost": self.lost,
        }

    def label(self) -> str:
        cls = self.cls.rpartition(":")[2]
        named = f" {self.name!r}" if self.name else ""
        return f"{cls}{named} #{self.id & 0xFFFFFFFF}"


class Directory:
    """Actors by id and by name, and the ids of those that died or stopped."""

    def __init__(self) -> None:
        self.entries: dict[int, ActorEntry] = {}
        self.names: dict[str, int] = {}
        self.dead: set[int] = set()
        self._serial = 0

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def reserve_name(self, name: str | None) -> None:
        """Fail if ``name`` is taken (checked before placement, so nothing is undone)."""
        if name is None:
            return
        if not isinstance(name, str):
            raise TypeError(f"spawn: name must be a string, not {type(name).__name__}")
        if name in self.names:
            raise ValueError(
                f"an actor named {name!r} already exists; stop it or pick another name"
            )

    def add(self, entry: ActorEntry) -> None:
        self.entries[entry.id] = entry
        if entry.name is not None:
            self.names[entry.name] = entry.id

    def forget(self, actor_id: int, *, dead: bool = True) -> ActorEntry | None:
        entry = self.entries.pop(actor_id, None)
        if entry is not None and entry.name is not None and self.names.get(entry.name) == actor_id:
            del self.names[entry.name]
        if dead:
            self.dead.add(actor_id)
        return entry

    def on_worker(self, worker: int) -> list[ActorEntry]:
        return [e for e in self.entries.values() if e.worker == worker]

    def count_on(self, workers: set[int]) -> dict[int, int]:
        counts = dict.fromkeys(workers, 0)
        for entry in self.entries.values():
            if entry.worker in counts:
                counts[entry.worker] += 1
        return counts

    def by_name(self, name: Any) -> ActorEntry:
        aid = self.names.get(name) if isinstance(name, str) else None
        entry = self.entries.get(aid) if aid is not None else None
        if entry is None:
            raise ActorNotFound(f"no actor is registered under the name {name!r}")
        return entry

    def by_id(self, actor_id: Any) -> ActorEntry:
        entry = self.entries.get(actor_id) if isinstance(actor_id, int) else None
        if entry is None:
            if actor_id in self.dead:
                raise ActorDied(f"actor #{actor_id & 0xFFFFFFFF} died or was stopped")
            raise ActorNotFound(f"no actor with id {actor_id!r}")
        return entry

    def gone_on(self, worker: int) -> list[int]:
        return [a for a in self.dead if worker_of(a) == worker]
