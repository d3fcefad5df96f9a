"""A three-stage pipeline across workers: parse -> transform -> aggregate.

The producer (the ``main`` coroutine, in the supervisor) generates batches
of CSV lines (``timestamp,user,amount``); ``parse`` turns them into
records, ``transform`` converts and filters them, ``aggregate`` keeps totals
per user. Each stage is an actor on its own worker, so the stages run in
parallel on different CPUs and batches cross workers through the rings.

Backpressure, and why memory stays bounded
------------------------------------------
Every link (producer -> parse -> transform -> aggregate) allows at most
``window`` batches in flight: a stage hands its output on with an *ask*
and counts the asks not yet answered; at ``window`` it waits for one to
come back before it finishes the batch it holds. Stages are ordinary
(non-reentrant) actors, so while a stage waits its mailbox is not read, the
asks of the stage before it stay unanswered, that stage reaches its own
window, and so on back to the producer. A slow stage therefore slows the
producer to its own pace instead of letting batches pile up: at any moment
each link holds at most ``window`` batches (plus one being worked on per
stage), whatever the speeds. The report shows it: the stages before a slow
one spend their time *blocked* (waiting for a window slot), and every
stage's rate converges on the slow stage's rate.

    python -m actorq.examples.pipeline [--records N] [--batch B] [--window W]
                                [--slow STAGE:USEC] [--workers N]
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import actorq

STAGES = ("parse", "transform", "aggregate")


def generate(batch_no: int, size: int) -> bytes:
    """Batch ``batch_no`` of the synthetic stream: ``size`` CSV lines, deterministic."""
    lines = []
    base = batch_no * size
    for i in range(base, base + size):
        user = (i * 7919) % 97
        cents = (i * 104729) % 10000
        lines.append(b"%d,u%02d,%d.%02d" % (1_700_000_000 + i, user, cents // 100, cents % 100))
    return b"\n".join(lines)


def parse(batch: bytes) -> list[list[Any]]:
    """CSV lines -> [user, cents] records."""
    out = []
    for line in batch.split(b"\n"):
        _ts, user, amount = line.split(b",")
        whole, _, frac = amount.partition(b".")
        out.append([user.decode(), int(whole) * 100 + int(frac)])
    return out


def transform(records: list[list[Any]]) -> list[list[Any]]:
    """Drop amounts under 1.00 and add 20% tax (rounded to the cent)."""
    return [[user, (cents * 12 + 5) // 10] for user, cents in records if cents >= 100]


def expected_totals(records: int, batch: int) -> dict[str, int]:
    """What ``aggregate`` must end with, computed without the pipeline (for tests)."""
    totals: dict[str, int] = {}
    for b in range((records + batch - 1) // batch):
        size = min(batch, records - b * batch)
        for user, cents in transform(parse(generate(b, size))):
            totals[user] = totals.get(user, 0) + cents
    return totals


class Link:
    """The outgoing side of a stage: at most ``window`` asks unanswered (see module doc)."""

    def __init__(self, target: Any, window: int) -> None:
        self.target = target
        self.window = window
        self.inflight = 0
        self.max_inflight = 0
        self.blocked = 0.0  # seconds spent waiting for a slot: backpressure, measured
        self.waits = 0
        self.waiter: Any = None
        self.error: BaseException | None = None

    async def send(self, batch: Any) -> None:
        while self.inflight >= self.window:
            self.waits += 1
            t0 = time.perf_counter()
            self.waiter = actorq.current_loop().create_future()
            await self.waiter
            self.blocked += time.perf_counter() - t0
        if self.error is not None:
            raise self.error
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self.target.process(batch).add_done_callback(self._answered)

    def _answered(self, fut: Any) -> None:
        self.inflight -= 1
        if fut.exception() is not None and self.error is None:
            self.error = fut.exception()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def drain(self) -> None:
        while self.inflight:
            self.waiter = actorq.current_loop().create_future()
            await self.waiter
        if self.error is not None:
            raise self.error


@actorq.actor
class Stage:
    """One pipeline stage: do ``kind``'s work on a batch, hand the result on."""

    def __init__(self, kind: str, slow_us: int = 0, window: int = 4) -> None:
        self.kind = kind
        self.slow = slow_us / 1e6
        self.window = window
        self.link: Link | None = None
        self.totals: dict[str, int] = {}
        self.batches = self.records = 0
        self.busy = 0.0
        self.first = self.last = 0.0

    def connect(self, next_stage: Any) -> None:
        self.link = Link(next_stage, self.window)

    async def process(self, batch: Any) -> int:
        t0 = time.perf_counter()
        if not self.first:
            self.first = t0
        if self.kind == "parse":
            out: Any = parse(batch)
        elif self.kind == "transform":
            out = transform(batch)
        else:
            for user, cents in batch:
                self.totals[user] = self.totals.get(user, 0) + cents
            out = None
        n = len(batch) if self.kind != "parse" else batch.count(b"\n") + 1
        if self.slow:
            time.sleep(self.slow * n)  # a stage that is slow at its work (blocks its worker)
        self.records += n
        self.batches += 1
        self.busy += time.perf_counter() - t0
        if self.link is not None:
            await self.link.send(out)
        self.last = time.perf_counter()
        return n

    async def drain(self) -> None:
        """Wait until every batch sent on has been taken, then drain the next stage."""
        if self.link is not None:
            await self.link.drain()
            await self.link.target.drain()

    def report(self) -> dict[str, Any]:
        import os

        import psutil

        link = self.link
        return {
            "stage": self.kind, "cpu": sorted(os.sched_getaffinity(0)), "records": self.records,
            "batches": self.batches, "busy_s": self.busy, "span_s": self.last - self.first,
            "blocked_s": link.blocked if link else 0.0, "waits": link.waits if link else 0,
            "max_inflight": link.max_inflight if link else 0,
            "rss_mib": psutil.Process().memory_info().rss / 2**20,
        }

    def result(self) -> dict[str, int]:
        return dict(self.totals)


@dataclass
class Options:
    records: int = 200_000
    batch: int = 500
    window: int = 4
    slow: dict[str, int] | None = None  # stage -> µs of extra work per record


async def run_pipeline(rt: Any, opts: Options) -> dict[str, Any]:
    """Build the stages on separate workers, stream the records, return the reports."""
    cpus = rt.workers
    slow = opts.slow or {}
    stages = []
    for i, kind in enumerate(STAGES):
        stages.append(await rt.spawn(Stage, kind, slow.get(kind, 0), opts.window,
                                     name=f"pipeline-{kind}", cpu=cpus[i % len(cpus)]))
    for a, b in itertools.pairwise(stages):
        await a.connect(b)
    producer = Link(stages[0], opts.window)
    t0 = time.perf_counter()
    nbatches = (opts.records + opts.batch - 1) // opts.batch
    gen_time = 0.0
    for b in range(nbatches):
        g0 = time.perf_counter()
        batch = generate(b, min(opts.batch, opts.records - b * opts.batch))
        gen_time += time.perf_counter() - g0
        await producer.send(batch)
    await producer.drain()
    await stages[0].drain()
    elapsed = time.perf_counter() - t0
    reports = [{"stage": "producer", "cpu": "supervisor", "records": opts.records,
                "batches": nbatches, "busy_s": gen_time, "span_s": elapsed,
                "blocked_s": producer.blocked, "waits": producer.waits,
                "max_inflight": producer.max_inflight}]
    for s in stages:
        reports.append(await s.report())
    totals = await stages[-1].result()
    for s in stages:
        await s.stop()
    return {"elapsed_s": elapsed, "stages": reports, "totals": totals, "window": opts.window}


def render(result: dict[str, Any]) -> str:
    lines = [f"{'stage':<10}{'cpu':>11}{'records':>10}{'rec/s':>11}{'busy':>7}"
             f"{'blocked s':>11}{'waits':>7}{'max in flight':>15}{'rss MiB':>9}"]
    for r in result["stages"]:
        rate = r["records"] / r["span_s"] if r["span_s"] > 0 else 0.0
        busy = r["busy_s"] / r["span_s"] if r["span_s"] > 0 else 0.0
        rss = f"{r['rss_mib']:.0f}" if "rss_mib" in r else "-"
        lines.append(f"{r['stage']:<10}{r['cpu']!s:>11}{r['records']:>10}{rate:>11,.0f}"
                     f"{busy:>7.0%}{r['blocked_s']:>11.3f}{r['waits']:>7}"
                     f"{r['max_inflight']:>15}{rss:>9}")
    top = sorted(result["totals"].items(), key=lambda kv: -kv[1])[:3]
    lines.append(f"elapsed {result['elapsed_s']:.3f} s; window {result['window']} batches per "
                 f"link; {len(result['totals'])} users, top: "
                 + ", ".join(f"{u}={c / 100:,.2f}" for u, c in top))
    lines.append(f"checksum {sum(result['totals'].values())}")
    return "\n".join(lines)
