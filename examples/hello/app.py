"""Hello, actors: a counter, and a ping-pong between two pinned workers.

Run it from any directory, once actorq is installed::

    actorq run actorq.examples.hello:main

What happens: the supervisor starts one worker per core, pinned; ``main``
spawns a ``Counter`` on the first worker and asks and tells it, then spawns
two ``Player`` actors, one on the first worker and one on the last, and has
them hit a ball back and forth over the shared-memory rings. Everything it
prints is read back from the actors.
"""

from __future__ import annotations

import os
import time

import actorq


@actorq.actor
class Counter:
    """Plain state behind a mailbox: one message at a time, no locks."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    def where(self) -> list[int]:
        return [os.getpid(), next(iter(os.sched_getaffinity(0)))]


@actorq.actor(reentrant=True)
class Player:
    """Hits the ball back until the rally is over; asks nest across workers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.other: actorq.ActorRef | None = None
        self.hits = 0

    def meet(self, other: actorq.ActorRef) -> None:
        self.other = other

    async def hit(self, left: int) -> int:
        self.hits += 1
        if left == 0 or self.other is None:
            return self.hits
        await self.other.hit(left - 1)
        return self.hits

    def where(self) -> list[int]:
        return [os.getpid(), next(iter(os.sched_getaffinity(0)))]


async def main(rt: actorq.Runtime) -> None:
    cpus = rt.workers
    print(f"actorq hello: {len(cpus)} pinned worker(s) on CPU(s) {', '.join(map(str, cpus))}")

    hits = await rt.spawn(Counter, 10, name="hits", cpu=cpus[0])
    pid, cpu = await hits.where()
    total = await hits.add(5)
    for _ in range(3):
        hits.add.tell(1)  # fire and forget; they arrive in order
    after = await hits.add(0)
    print(
        f"  counter 'hits' lives in worker pid {pid} on CPU {cpu}: "
        f"10 + 5 = {total}; after three tells of 1 it is {after}"
    )

    ping = await rt.spawn(Player, "ping", cpu=cpus[0])
    pong = await rt.spawn(Player, "pong", cpu=cpus[-1])
    await ping.meet(pong)
    await pong.meet(ping)
    (pid_a, cpu_a), (pid_b, cpu_b) = await ping.where(), await pong.where()
    rounds = 500
    t0 = time.perf_counter()
    for _ in range(rounds):
        await ping.hit(1)  # ping -> pong -> back: one round trip between the workers
    dt = time.perf_counter() - t0
    across = "across two workers" if pid_a != pid_b else "inside one worker (one CPU)"
    print(
        f"  ping (CPU {cpu_a}) and pong (CPU {cpu_b}) played {rounds} rallies {across}: "
        f"{dt * 1e6 / rounds:.0f} µs per rally"
    )

    stats = await rt.stats()
    print("  where everything lives:")
    for a in stats["actors"]:
        label = a["name"] or a["cls"].rpartition(":")[2]
        print(f"    {label:<8} worker {a['worker']} (CPU {a['cpu']})  {a['reason']}")
    await hits.stop()
    print("bye: the runtime stops its workers and exits 0")
