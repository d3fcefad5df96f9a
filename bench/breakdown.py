"""Where a tell's time goes, measured inside one process on one CPU.

    python -m bench breakdown [--count 200000] [--payload 64] [--json]

Two real ``Node``s (the runtime's routing and hosting) over a real ring mesh
share one loop here, so each step of a tell can be timed alone, without the
other side running on a second CPU or the loop sleeping:

* ``sender``: ``ref.take.tell(blob)`` as an actor method calls it (pack at the
  call site, add to the destination's batch), per message;
* ``ring``: cutting the batches into records, copying them into the ring and
  publishing, then draining them and decoding each batch (zero copy), per
  message;
* ``receiver``: routing the decoded messages to the actor and running its
  (empty) method, board counters included, per message.

The sum is one CPU's cost of a message end to end; across two workers the
sender's and receiver's parts run in parallel, so a pair's rate is bounded by
the larger side (sender + its half of the ring, or receiver + its half).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import actorq
from actorq import _actor
from bench._sink import Sink

_SINK_ID = (2 << 32) | 1  # the Sink: actor 1 of the second node


@contextlib.contextmanager
def _two_nodes() -> Iterator[tuple[Any, Any, actorq.ActorRef]]:
    """Two worker nodes on one loop, joined by a ring mesh, with a Sink on the
    second and the first as this thread's node: (first, second, the Sink's ref).
    Everything is closed after."""
    from actorq._runtime.mesh import RingMesh
    from actorq._runtime.node import Node
    from actorq.loop import Loop

    loop = Loop()
    mesh = RingMesh(3, 1 << 20)
    first = Node(1, loop, mesh.port(1), worker_cpus=[0], address="")
    second = Node(2, loop, mesh.port(2), worker_cpus=[0], address="")
    path = f"{Sink.__module__}:{Sink.__qualname__}"
    second.host.create(_SINK_ID, path, [], None, None)
    prev = _actor.ctx.node
    _actor.ctx.node = first
    try:
        yield first, second, actorq.ActorRef(_SINK_ID, path)
    finally:
        _actor.ctx.node = prev
        first.port.close()
        second.port.close()
        mesh.close()
        loop.close()


def measure(count: int, payload: int) -> dict[str, float]:
    blob = os.urandom(payload)
    chunk = 64  # a loop turn's worth of tells to one destination: one batch
    out: dict[str, float] = {"sender": 0.0, "ring": 0.0, "receiver": 0.0}
    done = 0
    clock = time.perf_counter
    with _two_nodes() as (sender, receiver, ref):
        port_s, port_r = sender.port, receiver.port
        tell = ref.take.tell
        while done < count:
            t0 = clock()
            for _ in range(chunk):
                tell(blob)
            t1 = clock()
            port_s.flush()  # cut the batch, copy it into the ring, publish
            taken = _take_all(port_r.inbox)
            t2 = clock()
            for s, msgs in taken:
                receiver.deliver(s, msgs)
            t3 = clock()
            out["sender"] += t1 - t0
            out["ring"] += t2 - t1
            out["receiver"] += t3 - t2
            done += chunk
            sender._flush_handle = None  # the turn's flush ran above, by hand
    got = receiver.actors[_SINK_ID].instance.n
    assert got == done, (got, done)
    return {k: v / done * 1e6 for k, v in out.items()}


def measure_ask(count: int, payload: int) -> dict[str, float]:
    """One ask's round trip, step by step, on one CPU: the asker's side (make
    the record, publish it), the ring both ways, the answerer's side (route,
    run, reply), and the asker taking the reply (route it to its future)."""
    blob = os.urandom(payload)
    out = {"asker": 0.0, "ring": 0.0, "answerer": 0.0, "reply": 0.0}
    clock = time.perf_counter
    with _two_nodes() as (asker, answerer, ref):
        pa, pb = asker.port, answerer.port
        echo = ref.echo
        for _ in range(count):
            t0 = clock()
            fut = echo(blob)
            t1 = clock()
            got = _take_all(pb.inbox)
            t2 = clock()
            for s, msgs in got:
                answerer.deliver(s, msgs)
            pb.flush()
            t3 = clock()
            got = _take_all(pa.inbox)
            t4 = clock()
            for s, msgs in got:
                asker.deliver(s, msgs)
            t5 = clock()
            assert fut.result() == blob
            out["asker"] += t1 - t0
            out["ring"] += (t2 - t1) + (t4 - t3)
            out["answerer"] += t3 - t2
            out["reply"] += t5 - t4
    return {k: v / count * 1e6 for k, v in out.items()}


def _take_all(inbox: Any) -> list[tuple[int, list[Any]]]:
    """Drain ``inbox`` as RingPort does: decode each batch from the ring's memory."""
    from actorq._codec import unpack
    from actorq._runtime.mesh import messages

    taken: list[tuple[int, list[Any]]] = []
    inbox.drain(lambda s, rec: taken.append((s, messages(unpack(rec)))), None)
    return taken


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench breakdown", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--payload", type=int, action="append", default=None)
    ap.add_argument("--reps", type=int, default=5, help="repetitions; the best is kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows: dict[int, dict[str, float]] = {}
    asks: dict[int, dict[str, float]] = {}
    for size in args.payload or [64, 4096]:
        runs = [measure(args.count, size) for _ in range(args.reps)]
        rows[size] = {k: min(r[k] for r in runs) for k in runs[0]}
        runs = [measure_ask(max(1000, args.count // 20), size) for _ in range(args.reps)]
        asks[size] = {k: min(r[k] for r in runs) for k in runs[0]}
    if args.json:
        print(json.dumps({"tell": rows, "ask": asks}))
        return 0
    print(f"tell: µs per message, best of {args.reps}, one CPU")
    print(f"{'payload':>8} {'sender':>8} {'ring':>8} {'receiver':>9} {'total':>8}")
    for size, r in rows.items():
        print(
            f"{size:>8} {r['sender']:>8.2f} {r['ring']:>8.2f} {r['receiver']:>9.2f} "
            f"{sum(r.values()):>8.2f}"
        )
    print(f"ask: µs per round trip, best of {args.reps}, one CPU (no loop turns, no spinning)")
    print(f"{'payload':>8} {'asker':>8} {'ring':>8} {'answerer':>9} {'reply':>8} {'total':>8}")
    for size, r in asks.items():
        print(
            f"{size:>8} {r['asker']:>8.2f} {r['ring']:>8.2f} {r['answerer']:>9.2f} "
            f"{r['reply']:>8.2f} {sum(r.values()):>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
