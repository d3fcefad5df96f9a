"""What the runtime's metrics cost on the message path, on and off side by side.

    python -m bench metrics [--json] [--reps 7] [--count 200000] [--quick]

One process hosts a real worker ``Node`` (its loop, host and board; no rings:
the port is a sink) and an actor with one sync method; the benchmark hands
the node N decoded tells in batches of 64 through ``node.deliver``, the call
a ring drain makes with what it decoded, and measures the thread's CPU time
per delivered tell (decoding is not in it: it is the same with or without
metrics). Two nodes are measured, interleaved per repetition: one with
metrics on, whose timing flag is raised before every batch (one message in
64 timed into shared memory: a busy worker's loop raises it once per 64
turns, so this is an upper bound), and one with ``metrics = false`` (counted
only; the counting increment stays). The best repetition of each is
reported: CPU time on a shared machine only ever grows with interference.

The cost against code without the counters at all is not measurable in one
run (they are part of the hot path); bench/RESULTS.md ("Metrics") has that
comparison, made against the commit before them.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench._common import Result, emit
from bench._sink import Sink


class _SinkPort:
    """A port that takes what is sent and drops it (the benchmark only receives)."""

    draining = False
    backlog_total = 0

    def start(self, loop: Any, deliver: Any, taken: Any) -> None:
        pass

    def send(self, dest: int, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def publish(self, dest: int) -> None:
        pass

    def backlog(self) -> dict[int, int]:
        return {}

    def queued(self, dest: int) -> int:
        return 0


_BATCH = 64


def _setup(enabled: bool) -> tuple[Any, Any, list[Any]]:
    from actorq._codec import TELL
    from actorq._runtime import metrics
    from actorq._runtime.node import Node
    from actorq.loop import Loop

    metrics.settings.enabled = enabled  # read when the actor's cell is made
    loop = Loop()
    node = Node(1, loop, _SinkPort(), worker_cpus=[0], address="bench")
    actor_id = (1 << 32) | 1
    node.host.create(actor_id, f"{Sink.__module__}:{Sink.__qualname__}", [], {}, None)
    batch = [[TELL, actor_id, "take", [b"x" * 64], None, 0] for _ in range(_BATCH)]
    return node, loop, batch


def _ns_per_tell(node: Any, batch: list[Any], n: int, timed: bool) -> float:
    deliver = node.deliver
    rounds = max(1, n // len(batch))
    t0 = time.thread_time_ns()
    for _ in range(rounds):
        node.timing = timed
        deliver(2, batch)
    return (time.thread_time_ns() - t0) / (rounds * len(batch))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench metrics", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the Result list as JSON")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (the best is reported)")
    ap.add_argument("--count", type=int, default=200_000, help="tells per repetition")
    ap.add_argument("--quick", action="store_true", help="tiny counts, 2 reps (smoke test)")
    args = ap.parse_args(argv)
    reps, count = (2, 2_000) if args.quick else (args.reps, args.count)
    from actorq._runtime import metrics

    was = metrics.settings.enabled
    setups = {"metrics-on": _setup(True), "metrics-off": _setup(False)}
    metrics.settings.enabled = was
    best = {name: float("inf") for name in setups}
    for _ in range(reps):
        for name, (node, _, data) in setups.items():
            timed = name == "metrics-on"
            best[name] = min(best[name], _ns_per_tell(node, data, count, timed))
    for _, loop, _ in setups.values():
        loop.close()
    results = [
        Result(name, 64, 1e9 / ns, None, None, None) for name, ns in sorted(best.items())
    ]
    emit(results, args.json, "delivered tells per second of one worker's CPU time")
    if not args.json:
        on, off = best["metrics-on"], best["metrics-off"]
        change = (on / off - 1) * 100
        print(f"\nCPU ns per delivered tell: on {on:.0f}, off {off:.0f} ({change:+.1f}%)")
    return 0
