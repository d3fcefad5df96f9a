"""Placement: how fast the placer decides, and whether its layouts pay off.

Two parts, each measured side by side in one run (only ratios within a run
mean anything on a VM whose speed drifts):

``speed``: 10,000 actors (70% private, 30% in 100 groups of varied
footprint, 1 in 20 pinned to a node) placed on a snapshot of a 256-CPU
POWER7 (8 nodes x 8 cores x SMT4), extracted to a temporary directory. The
contenders: ``Placer.place`` one at a time (what the runtime does at spawn),
``plan()`` in one batch, ``Placer.release`` of all of them, and a naive
baseline that scans every CPU per actor (least actors, then idle core,
then lowest number: O(cpus) per decision) to show what the per-level
counters buy. ``msgs_per_s`` = decisions per second, ``rtt_p50_us`` = µs
per decision (the mean over the batch).

``workload``: N real processes, each pinned where the placer puts it, each
updating random 8-byte slots of a table of ``--table`` bytes (numpy fancy
indexing: the loop is in C, so cache and coherence costs show through the
interpreter) for ``--duration`` seconds:

- ``shared``: one table in a MAP_SHARED mapping, written by every process
  (true sharing: each write may steal the line from another core);
- ``private``: each process updates its own table of the same size.

Layouts: ``compressed`` (the placer with ``group="table", footprint=table``),
``spread`` (the placer with private hints), and ``one-cpu`` (every process
pinned to the first CPU: the extreme of compression, time-sharing one CPU).
``msgs_per_s`` = table updates per second summed over the processes.
On a 2-CPU VM compressed and spread coincide for 2 workers (each core has
one thread and its own L2, so a group that fits a core's cache still takes
the second core before doubling up); the table says which CPUs each layout
used. Give a many-core machine ``--workers 2,4,8,16``.

``python -m bench placement [--part speed|workload] [--workers 2,4]
[--table 256KiB] [--duration 1.0] [--reps 3] [--json]``
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench._common import Result, emit, machine_info, median_spread

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "hwloc-sysfs"
BIG = "256ppc-8n8s4t.tar.bz2"


# ---------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------


def _extract(tarball: Path, dest: str) -> str:
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    (root,) = [p for p in Path(dest).iterdir() if (p / "sys").is_dir()]
    return str(root)


def _actors(n: int, nodes: list[int]) -> list[tuple[str, object]]:
    from actorq.placement import Hints

    footprints = [16 << 10, 256 << 10, 2 << 20, 8 << 20, 64 << 20, None]
    out: list[tuple[str, object]] = []
    for i in range(n):
        if i % 20 == 19:
            h = Hints(node=nodes[i % len(nodes)])
        elif i % 10 < 3:
            g = i % 100
            h = Hints(group=f"g{g}", footprint=footprints[g % len(footprints)])
        else:
            h = Hints(weight=1.0 + (i % 3))
        out.append((f"a{i}", h))
    return out


def _naive(cpus: list[int], core_of: dict[int, int], n: int) -> None:
    """Least actors, then an idle core, then the lowest CPU: a full scan per decision."""
    count = dict.fromkeys(cpus, 0)
    core_busy: dict[int, int] = {}
    for _ in range(n):
        best = min(cpus, key=lambda c: (count[c], core_busy.get(core_of[c], 0), c))
        count[best] += 1
        core_busy[core_of[best]] = core_busy.get(core_of[best], 0) + 1


def speed(n: int, reps: int, machine_name: str) -> tuple[list[Result], dict[str, object]]:
    from actorq.placement import Placer, plan
    from actorq.topology import build_universe, discover

    with tempfile.TemporaryDirectory(prefix="actorq-bench-placement-") as tmp:
        t0 = time.perf_counter()
        root = _extract(FIXTURES / machine_name, tmp)
        extract_s = time.perf_counter() - t0
        machine = discover(root)
        universe = build_universe(machine)
    nodes = sorted({nd for c in universe.cpus if (nd := machine.cpus[c].node) is not None})
    actors = _actors(n, nodes)
    core_of = {c: machine.cpus[c].core or 0 for c in universe.cpus}
    cpus = sorted(universe.cpus)
    times: dict[str, list[float]] = {k: [] for k in ("place", "plan", "release", "naive", "build")}
    for _ in range(reps):
        t0 = time.perf_counter()
        p = Placer(universe, machine)
        times["build"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for name, h in actors:
            p.place(name, h)  # type: ignore[arg-type]
        times["place"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for name, _ in actors:
            p.release(name)
        times["release"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plan(universe, machine, actors)  # type: ignore[arg-type]
        times["plan"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _naive(cpus, core_of, n)
        times["naive"].append(time.perf_counter() - t0)
    results = []
    labels = {
        "place": "Placer.place",
        "plan": "plan() batch",
        "release": "Placer.release",
        "naive": "naive O(cpus) scan",
    }
    for key, label in labels.items():
        per = [n / t for t in times[key]]
        med, spread = median_spread(per)
        results.append(Result(label, None, med, 1e6 / med, None, spread))
    info = {
        "machine": machine_name,
        "cpus": len(cpus),
        "levels": [lvl.kind for lvl in universe.levels],
        "actors": n,
        "extract_s": round(extract_s, 2),
        "placer_build_ms": round(1e3 * min(times["build"]), 1),
        "place_total_s": round(min(times["place"]), 3),
    }
    return results, info


# ---------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------


def _worker(
    cpu: int, buf: mmap.mmap | None, slots: int, duration: float, start_fd: int, out_fd: int,
    seed: int,
) -> None:
    import numpy as np

    os.sched_setaffinity(0, {cpu})
    table = np.frombuffer(buf, dtype=np.int64) if buf is not None else np.zeros(slots, np.int64)
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, slots, size=4096) for _ in range(8)]
    os.read(start_fd, 1)  # everyone starts together
    done = 0
    end = time.perf_counter() + duration
    i = 0
    while time.perf_counter() < end:
        for _ in range(8):
            table[idx[i & 7]] += 1
            i += 1
        done += 8 * 4096
    os.write(out_fd, f"{done}\n".encode())


def _run_layout(cpus: list[int], shared: bool, table_bytes: int, duration: float) -> float:
    """Updates per second summed over one process per entry of ``cpus``."""
    slots = table_bytes // 8
    buf = mmap.mmap(-1, slots * 8) if shared else None  # MAP_SHARED|MAP_ANONYMOUS, inherited
    start_r, start_w = os.pipe()
    out_r, out_w = os.pipe()
    pids = []
    try:
        for k, cpu in enumerate(cpus):
            pid = os.fork()
            if pid == 0:  # child: work, report, leave without running the parent's cleanup
                code = 0
                try:
                    os.close(start_w)
                    os.close(out_r)
                    _worker(cpu, buf, slots, duration, start_r, out_w, seed=k)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(start_r)
        os.close(out_w)
        time.sleep(0.2)  # let every child import numpy and pin itself
        t0 = time.perf_counter()
        os.write(start_w, b"x" * len(cpus))
        with os.fdopen(out_r) as f:
            counts = [int(line) for line in f]
        elapsed = max(time.perf_counter() - t0, duration)
    finally:
        for pid in pids:
            os.waitpid(pid, 0)
        os.close(start_w)
        if buf is not None:
            buf.close()
    if len(counts) != len(cpus):
        raise RuntimeError(f"{len(cpus) - len(counts)} worker(s) failed")
    return sum(counts) / elapsed


def layouts(n: int, table_bytes: int) -> dict[str, list[int]]:
    """CPUs per process for each layout, as the placer chooses them on this machine."""
    from actorq.placement import Hints, plan
    from actorq.topology import build_universe, discover

    machine = discover("/")
    universe = build_universe(machine)

    def cpus_of(hints: Hints) -> list[int]:
        actors = [(f"t{i}", hints) for i in range(n)]
        return [p.cpu for p in plan(universe, machine, actors).placements.values()]

    return {
        "compressed": cpus_of(Hints(group="table", footprint=table_bytes)),
        "spread": cpus_of(Hints()),
        "one-cpu": [min(universe.cpus)] * n,
    }


def workload(
    workers: list[int], table_bytes: int, duration: float, reps: int
) -> tuple[list[Result], dict[str, object]]:
    import numpy  # noqa: F401  (imported before fork so children do not pay for it)

    results: list[Result] = []
    used: dict[str, object] = {}
    for n in workers:
        lay = layouts(n, table_bytes)
        for name, cpus in lay.items():
            used[f"{name}/w{n}"] = cpus
        for kind in ("shared", "private"):
            rates: dict[str, list[float]] = {k: [] for k in lay}
            for _ in range(reps):  # interleave layouts rep by rep
                for name, cpus in lay.items():
                    rates[name].append(_run_layout(cpus, kind == "shared", table_bytes, duration))
            for name in lay:
                med, spread = median_spread(rates[name])
                results.append(Result(f"{kind}/{name}/w{n}", table_bytes, med, None, None, spread))
    return results, {"layouts": used}


def _ratios(results: list[Result]) -> list[str]:
    by = {r.contender: r.msgs_per_s or 0.0 for r in results}
    lines = []
    for key in by:
        kind, layout, w = key.split("/")
        if layout != "compressed":
            continue
        spread = by.get(f"{kind}/spread/{w}")
        one = by.get(f"{kind}/one-cpu/{w}")
        if spread:
            line = f"{kind} {w}: compressed/spread = {by[key] / spread:.2f}"
            if one:
                line += f", one-cpu/spread = {one / spread:.2f}"
            lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench placement", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--part", choices=("speed", "workload", "all"), default="all")
    ap.add_argument("--actors", type=int, default=10_000)
    ap.add_argument("--machine", default=BIG, help=f"hwloc fixture tarball (default {BIG})")
    ap.add_argument("--workers", default="2", help="comma-separated process counts, e.g. 2,4,8")
    ap.add_argument("--table", default="256KiB", help="table size (default 256KiB: fits an L2)")
    ap.add_argument("--duration", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from actorq.cli.place import parse_size

    results: list[Result] = []
    report: dict[str, object] = {"machine_info": machine_info()}
    if args.part in ("speed", "all"):
        r, info = speed(args.actors, args.reps, args.machine)
        results += r
        report["speed"] = info
        if not args.json:
            emit(r, False, f"placement speed: {info}")
    if args.part in ("workload", "all"):
        workers = [int(w) for w in args.workers.split(",") if w]
        r, info = workload(workers, parse_size(args.table), args.duration, args.reps)
        results += r
        report["workload"] = info
        if not args.json:
            emit(r, False, f"workload: table {args.table}, {args.duration}s x {args.reps} reps")
            for line in _ratios(r):
                print(line)
            print(f"layouts (cpus per process): {info['layouts']}")
    if args.json:
        report["results"] = [asdict(x) for x in results]
        report["ratios"] = _ratios([x for x in results if "/" in x.contender])
        json.dump(report, sys.stdout, indent=1)
        print()
    return 0
