"""The actors a web app shares between its worker processes: a rate limiter
and a hit counter. Each web worker is its own process; these live in the
actorq runtime, so every worker sees the same limits and the same count."""

from __future__ import annotations

import time

import actorq


@actorq.actor
class RateLimiter:
    """A token bucket per key: ``capacity`` requests at once, refilled at
    ``per_second``. One actor, so the limit holds across all web workers."""

    def __init__(self, capacity: int = 20, per_second: float = 10.0) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, then = self.buckets.get(key, (float(self.capacity), now))
        tokens = min(self.capacity, tokens + (now - then) * self.per_second)
        allowed = tokens >= 1.0
        self.buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self.buckets) > 100_000:  # bounded: forget the quietest half
            for k in sorted(self.buckets, key=lambda k: self.buckets[k][1])[:50_000]:
                del self.buckets[k]
        return allowed


@actorq.actor
class Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value


def spawn_all(client: actorq.client.Client, capacity: int = 20, per_second: float = 10.0) -> None:
    """Create the shared actors (from a gunicorn hook, a script, a test)."""
    client.spawn(RateLimiter, capacity, per_second, name="limiter")
    client.spawn(Counter, name="hits")


async def main(rt: actorq.Runtime) -> None:
    """``actorq run examples.webapp.actors:main``: set up the actors, then serve."""
    await rt.spawn(RateLimiter, name="limiter")
    await rt.spawn(Counter, name="hits")
    await actorq.serve_forever()
