"""Actor-level messaging against the ring benchmark's peers, side by side in one run.

    python -m bench actors [--json] [--reps 3] [--count 100000] [--rtt 3000] [--quick]
                           [--payload 64|4096]

actorq contenders run a real runtime (``actorq.run`` with two workers pinned
to two CPUs) and measure between two actors, one on each worker:

* ``actorq-tell``: actor A tells ``take(blob)`` N times to actor B (``await
  sink.take.tell(blob)``, which suspends only while the way to B is
  congested), then asks
  B ``count()`` on the same (sender, receiver) pair, which is answered only
  after every tell was handled. Rate = N / (time from the first tell to that
  answer): every message was encoded, carried, decoded and dispatched.
* ``actorq-ask``: A asks B ``echo(blob)`` and awaits the reply, one at a
  time; p50/p99 of the round trip.

The peers are bench/ring.py's (the same functions run them): multiprocessing
Queue, faster-fifo, pyzmq PUSH/PULL (throughput and round trip of a
msgpack record of the same payload between two pinned processes), and the
raw actorq ring. The peers move bytes; actorq-tell/ask also run the actor
machinery (method lookup, mailbox, reply routing), so the comparison is what
a user gets against what the transports alone cost.

Each figure is the median of ``--reps`` repetitions, contenders interleaved
per repetition. The idle runtime's CPU use (supervisor + workers, over 2 s
with nothing to do) goes to stderr and the text table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bench._common import Result, emit, machine_info, median_spread, percentile, two_cpus

PEERS = ["actorq-ring", "mp-queue", "faster-fifo", "zmq-pushpull"]


def _runtime_bench(
    cpus: tuple[int, int], payload: int, n: int, rtt: int, out_w: int, idle: bool
) -> None:
    """In a forked child: start a runtime, measure, write JSON to ``out_w``."""
    import actorq
    from bench._sink import Sink

    @actorq.actor
    class Source:
        async def blast(self, sink: actorq.ActorRef, n: int, size: int) -> list[float]:
            """[tells per second, CPU µs per tell of both workers together]."""
            blob = os.urandom(size)
            before = await sink.count()
            sink_cpu0 = await sink.cpu()
            tell = sink.take.tell
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            for _ in range(n):
                await tell(blob)  # as async code should: parks only while congested
            got = await sink.count()
            dt = time.perf_counter() - t0
            cpu = time.process_time() - cpu0 + await sink.cpu() - sink_cpu0
            assert got - before == n, (got, before, n)
            return [n / dt, cpu / n * 1e6]

        async def asks(self, sink: actorq.ActorRef, n: int, size: int) -> list[float]:
            blob = os.urandom(size)
            echo = sink.echo
            for _ in range(max(100, n // 10)):  # warm-up
                await echo(blob)
            times = []
            clock = time.perf_counter
            for _ in range(n):
                t0 = clock()
                await echo(blob)
                times.append(clock() - t0)
            return times

    async def main(rt: actorq.Runtime) -> dict[str, Any]:
        a, b = rt.workers[0], rt.workers[-1]
        src = await rt.spawn(Source, cpu=a)
        sink = await rt.spawn(Sink, cpu=b)
        rate, cpu_us = await src.blast(sink, n, payload)
        times = sorted(await src.asks(sink, rtt, payload))
        res: dict[str, Any] = {
            "rate": rate,
            "cpu_us": cpu_us,
            "p50": percentile(times, 50) * 1e6,
            "p99": percentile(times, 99) * 1e6,
        }
        if idle:
            import psutil

            st = await rt.stats()
            procs = [psutil.Process(os.getpid())] + [
                psutil.Process(w["pid"]) for w in st["workers"]
            ]
            await actorq.sleep(0.5)
            c0 = [sum(p.cpu_times()[:2]) for p in procs]
            t0 = time.monotonic()
            await actorq.sleep(2.0)
            dt = time.monotonic() - t0
            res["idle"] = [
                (sum(p.cpu_times()[:2]) - c) / dt for p, c in zip(procs, c0, strict=True)
            ]
        return res

    result = actorq.run(main, workers=2, cpus=sorted(set(cpus)), log_level="error")
    os.write(out_w, json.dumps(result).encode())


def run_actorq(
    cpus: tuple[int, int], payload: int, n: int, rtt: int, idle: bool = False
) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            if len(set(cpus)) == 1:
                cpus = (cpus[0], cpus[0])
            _runtime_bench(cpus, payload, n, rtt, w, idle)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise RuntimeError("the actorq runtime benchmark failed (see stderr)")
    return json.loads(data)


def main(argv: list[str]) -> int:
    from bench import ring

    ap = argparse.ArgumentParser(prog="python -m bench actors", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the Result list as JSON")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per figure (median)")
    ap.add_argument(
        "--count", type=int, default=100_000, help="tells per run (64 B; half at 4 KiB)"
    )
    ap.add_argument("--rtt", type=int, default=3_000, help="round trips per run")
    ap.add_argument(
        "--payload",
        type=int,
        action="append",
        default=None,
        help="payload bytes (repeatable; default 64 and 4096)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny counts, 1 rep (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.count, args.rtt = 1, 3_000, 300
    sizes = args.payload or [64, 4096]
    cpus = two_cpus()
    peers = list(PEERS)
    try:
        import faster_fifo  # noqa: F401
    except ImportError:
        peers.remove("faster-fifo")
        print("faster-fifo not installed: skipped", file=sys.stderr)

    rates: dict[tuple[str, int], list[float]] = {}
    cpus_us: dict[tuple[str, int], list[float]] = {}  # CPU µs per message, both sides
    rtts: dict[tuple[str, int], list[tuple[float, float]]] = {}
    idle: list[float] | None = None
    for rep in range(args.reps):
        for size in sizes:
            n = args.count if size <= 64 else max(1000, args.count // 2)
            payload = os.urandom(size)
            res = run_actorq(cpus, size, n, args.rtt, idle=idle is None and rep == args.reps - 1)
            idle = res.get("idle", idle)
            rates.setdefault(("actorq-tell", size), []).append(res["rate"])
            cpus_us.setdefault(("actorq-tell", size), []).append(res["cpu_us"])
            rtts.setdefault(("actorq-ask", size), []).append((res["p50"], res["p99"]))
            for name in peers:
                try:
                    rate = ring.run_throughput(name, n, payload, cpus)
                    if isinstance(rate, tuple):  # (msgs/s, CPU µs per message) in newer ring.py
                        rate, cpu_us = rate
                        cpus_us.setdefault((name, size), []).append(cpu_us)
                    rtt = ring.run_rtt(name, args.rtt, payload, cpus)
                except Exception as exc:  # a peer's harness failing must not lose the run
                    print(f"{name} {size} B rep {rep + 1}: failed: {exc}", file=sys.stderr)
                    continue
                rates.setdefault((name, size), []).append(rate)
                rtts.setdefault((name, size), []).append(rtt)
            print(f"rep {rep + 1}/{args.reps} {size} B done", file=sys.stderr)

    results: list[Result] = []
    for size in sizes:
        for name in ["actorq-tell", "actorq-ask", *peers]:
            rate = spread = p50 = p99 = None
            if (name, size) in rates:
                rate, spread = median_spread(rates[(name, size)])
            if (name, size) in rtts:
                p50, sp = median_spread([x[0] for x in rtts[(name, size)]])
                p99 = median_spread([x[1] for x in rtts[(name, size)]])[0]
                if spread is None:
                    spread = sp
            results.append(Result(name, size, rate, p50, p99, spread))

    idle_text = "idle runtime CPU (supervisor, worker 1, worker 2): " + ", ".join(
        f"{x * 100:.2f}%" for x in idle or []
    )
    if args.json:
        emit(results, True)
        print(idle_text, file=sys.stderr)
        return 0
    info = machine_info()
    emit(
        results,
        False,
        f"actors vs peers, CPUs {cpus[0]} and {cpus[1]}, median of {args.reps}; "
        f"{info['cpu_model']}, {info['cpus']} CPUs, Python {info['python']}",
    )
    print()
    print(f"{'ratio':<34}" + "".join(f"{s:>10}" for s in sizes))
    for name in ["actorq-ring", "mp-queue", "faster-fifo", "zmq-pushpull"]:
        if name not in peers:
            continue
        cells = []
        for size in sizes:
            t = next(r for r in results if r.contender == "actorq-tell" and r.payload == size)
            o = next((r for r in results if r.contender == name and r.payload == size), None)
            cells.append(
                f"{t.msgs_per_s / o.msgs_per_s:.2f}" if t.msgs_per_s and o and o.msgs_per_s else "-"
            )
        print(f"{'actorq-tell rate / ' + name:<34}" + "".join(f"{c:>10}" for c in cells))
    print("\nCPU µs per message, both processes together (less sensitive to a busy VM):")
    for size in sizes:
        row = []
        for name in ["actorq-tell", *peers]:
            v = cpus_us.get((name, size))
            if v:
                row.append(f"{name} {median_spread(v)[0]:.1f}")
        print(f"  {size:>5} B: " + ", ".join(row))
    print(f"\n{idle_text}")
    return 0
