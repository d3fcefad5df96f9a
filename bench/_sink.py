"""The actor the message-path benchmarks send to: it counts tells, echoes asks
and reports its CPU time. One module-level class, so a forked or spawned worker
finds it by its path (``bench._sink:Sink``)."""

from __future__ import annotations

import time

import actorq


@actorq.actor
class Sink:
    def __init__(self) -> None:
        self.n = 0

    def take(self, blob: bytes) -> None:
        self.n += 1

    def count(self) -> int:
        return self.n

    def cpu(self) -> float:
        return time.process_time()

    def echo(self, blob: bytes) -> bytes:
        return blob
