"""One cell of the benchmark matrix: run a benchmark with a set of factor values
and write its results, the factors and the machine to ``bench/results/``.

    python -m bench matrix --benchmark kv --payload 64 --workers 2 [--placement spread]
                           [--out bench/results] [-- extra args for the benchmark]
    python -m bench matrix --all [--benchmark kv,ring] [...]     # many cells, with progress

``tox -m bench`` runs one of these per combination (see the end of
tox.ini). The benchmark runs as ``python -m bench NAME --json`` in a child
process; a factor is passed on (``--payload N``, ``--workers N``,
``--placement P``) only where the benchmark's ``--help`` lists the flag, and
the file records which factors were ``applied``, so a table never claims a
factor made a difference it could not make. ``--workers all`` means every
CPU this process may use.

The file, ``bench/results/NAME-p64-w2[-spread].json``::

    {"benchmark": "kv", "factors": {"payload": 64, "workers": 2, "placement": null},
     "applied": ["payload", "workers"], "machine": {...}, "command": [...],
     "started": "2026-...Z", "results": [ {contender, payload, msgs_per_s, ...}, ... ],
     "error": null}

Many cells in one run: ``--all`` (what ``tox -m bench`` runs) is every
combination of benchmark (ring, actors, loop, kv) x payload (64, 4096) x
workers (2, all) x placement (compact, spread), one at a time; any factor
flag narrows it, and each takes a comma-separated list
(``--all --benchmark kv --payload 64``). Before each cell it prints one line
with the cell's number, the time so far and an estimate of the time left
(the mean time of the cells of that benchmark that ran, else of all that
ran; cells the benchmark would skip count as free). The exit code is 1 if
any cell failed; the others still run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ._common import machine_info

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("ring", "actors", "loop", "kv")
#: The placement factor's base value. A benchmark that takes no --payload,
#: --workers or --placement runs only in the cell with that factor's base value
#: (payload 64, workers 2, placement compact); the other cells say so.
BASE_PLACEMENT = "compact"


def supported_flags(name: str) -> set[str]:
    """Which factor flags ``python -m bench NAME --help`` mentions."""
    proc = subprocess.run([sys.executable, "-m", "bench", name, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    return {flag for flag in ("--payload", "--workers", "--placement") if flag in text}


def cell_name(benchmark: str, payload: int, workers: str, placement: str | None) -> str:
    return f"{benchmark}-p{payload}-w{workers}" + (f"-{placement}" if placement else "")


@dataclass(frozen=True)
class Cell:
    benchmark: str
    payload: int
    workers: str  # a number, or "all"
    placement: str | None

    @property
    def name(self) -> str:
        return cell_name(self.benchmark, self.payload, self.workers, self.placement)


def unused_factor(cell: Cell, flags: set[str]) -> str | None:
    """The first factor off its base value that the benchmark takes no flag for."""
    for factor, value, base in (("payload", str(cell.payload), "64"),
                                ("workers", cell.workers, "2"),
                                ("placement", cell.placement, BASE_PLACEMENT)):
        if value is not None and value != base and f"--{factor}" not in flags:
            return factor
    return None


def run_cell(cell: Cell, out_dir: Path, flags: set[str] | None, extra: list[str],
             timeout: float) -> str:
    """Run one cell and write its file; "ok", "skipped" or "error"."""
    workers = len(os.sched_getaffinity(0)) if cell.workers == "all" else int(cell.workers)
    record: dict[str, object] = {
        "benchmark": cell.benchmark,
        "factors": {"payload": cell.payload, "workers": workers,
                    "workers_asked": cell.workers, "placement": cell.placement},
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [],
        "error": None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (cell.name + ".json")
    unused = unused_factor(cell, flags) if flags is not None else None
    if unused is not None:
        # This benchmark ignores the factor: the base cell already measured it.
        record["skipped"] = f"bench/{cell.benchmark}.py takes no --{unused}; see the base cell"
        print(f"bench matrix: {path.name}: {record['skipped']}", file=sys.stderr)
        path.write_text(json.dumps(record, indent=1) + "\n")
        return "skipped"
    if flags is None:
        record["error"] = f"bench/{cell.benchmark}.py does not exist (yet); nothing was measured"
    else:
        cmd = [sys.executable, "-m", "bench", cell.benchmark, "--json"]
        applied = []
        if "--payload" in flags:
            cmd += ["--payload", str(cell.payload)]
            applied.append("payload")
        if "--workers" in flags:
            cmd += ["--workers", str(workers)]
            applied.append("workers")
        if cell.placement and "--placement" in flags:
            cmd += ["--placement", cell.placement]
            applied.append("placement")
        cmd += extra
        record["applied"] = applied
        record["command"] = ["python", *cmd[1:]]
        print(f"bench matrix: {' '.join(record['command'])}", file=sys.stderr, flush=True)
        record["error"], results = _measure(cmd, timeout)
        record["results"] = results
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"bench matrix: wrote {path}" + (f" (error: {record['error']})"
                                           if record["error"] else ""), file=sys.stderr)
    return "error" if record["error"] else "ok"


def _measure(cmd: list[str], timeout: float) -> tuple[str | None, list[object]]:
    """Run a benchmark's ``--json``: (error or None, its result rows)."""
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM first: a benchmark stops the servers it started on the way out.
        child.terminate()
        try:
            child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
        return f"timed out after {timeout:.0f} s", []
    sys.stderr.write(err[-4000:])
    if child.returncode != 0:
        return f"exit {child.returncode}: {err.strip()[-1000:]}", []
    try:
        results = json.loads(out)
    except json.JSONDecodeError as exc:
        return f"--json output is not JSON ({exc}): {out[:300]!r}", []
    if isinstance(results, dict):  # tolerate {"results": [...]} too
        results = results.get("results", [])
    return None, results


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


class Progress:
    """One line per cell: its number, the time so far, and an estimate of the rest."""

    def __init__(self, cells: list[Cell], will_skip: set[Cell]) -> None:
        self.cells, self.will_skip = cells, will_skip
        self.took: dict[str, list[float]] = {}
        self.start = time.monotonic()

    def estimate(self, rest: list[Cell]) -> float | None:
        """Seconds for ``rest``: each benchmark's mean so far, else the overall mean."""
        every = [t for ts in self.took.values() for t in ts]
        if not every:
            return None
        overall = sum(every) / len(every)
        total = 0.0
        for cell in rest:
            if cell in self.will_skip:
                continue
            mine = self.took.get(cell.benchmark)
            total += sum(mine) / len(mine) if mine else overall
        return total

    def line(self, i: int) -> str:
        cell = self.cells[i]
        left = self.estimate(self.cells[i:])
        eta = "estimate after the first measured cell" if left is None else (
            f"about {_clock(left)} left, done ~"
            + time.strftime("%H:%M", time.localtime(time.time() + left)))
        note = " (the benchmark skips it)" if cell in self.will_skip else ""
        return (f"bench matrix [{i + 1}/{len(self.cells)}] {cell.name}{note}: "
                f"{_clock(time.monotonic() - self.start)} so far, {eta}")

    def done(self, cell: Cell, seconds: float, status: str) -> None:
        if status != "skipped":
            self.took.setdefault(cell.benchmark, []).append(seconds)


def _values(text: str | None, default: tuple[str, ...]) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()] if text else list(default)


def cells_of(benchmark: str | None, payload: str | None, workers: str | None,
             placement: str | None, matrix: bool) -> list[Cell]:
    """The cells the flags name (comma-separated lists); with ``matrix``, a factor
    left out takes every value of the matrix. Without it a placement left out is
    no factor at all (the file is NAME-p64-w2.json)."""
    try:
        payloads = [int(p) for p in _values(payload, ("64", "4096"))]
    except ValueError:
        raise ValueError(f"--payload {payload!r}: write bytes, e.g. 64 or 64,4096") from None
    counts = _values(workers, ("2", "all"))
    for w in counts:
        if w != "all" and not w.isdigit():
            raise ValueError(f"--workers {w!r}: write a number or 'all'")
    placements: list[str | None] = list(_values(placement, ("compact", "spread")))
    if not matrix and placement is None:
        placements = [None]
    combos = itertools.product(_values(benchmark, BENCHMARKS), payloads, counts, placements)
    return [Cell(*c) for c in combos]


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(prog="python -m bench matrix", description=__doc__.split("\n")[0])
    ap.add_argument("--all", action="store_true",
                    help="every cell of the matrix, one at a time; the factor flags narrow it")
    ap.add_argument("--benchmark", help=f"one of {', '.join(BENCHMARKS)} (with --all: a list)")
    ap.add_argument("--payload", help="bytes, e.g. 64 (with --all: a list, e.g. 64,4096)")
    ap.add_argument("--workers", help="a number, or 'all' (with --all: a list)")
    ap.add_argument("--placement", default=None, help="compact or spread (where supported)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before giving up")
    args = ap.parse_args(argv)
    if not args.all and None in (args.benchmark, args.payload, args.workers):
        ap.error("--benchmark, --payload and --workers are required (or --all for the matrix)")
    try:
        cells = cells_of(args.benchmark, args.payload, args.workers, args.placement, args.all)
    except ValueError as exc:
        ap.error(str(exc))

    flags: dict[str, set[str] | None] = {}
    for b in sorted({c.benchmark for c in cells}):
        flags[b] = supported_flags(b) if (ROOT / "bench" / f"{b}.py").is_file() else None
    will_skip = {c for c in cells if flags[c.benchmark] is not None
                 and unused_factor(c, flags[c.benchmark] or set()) is not None}
    progress = Progress(cells, will_skip)
    failed = 0
    for i, cell in enumerate(cells):
        if len(cells) > 1:
            print(progress.line(i), file=sys.stderr, flush=True)
        t0 = time.monotonic()
        status = run_cell(cell, Path(args.out), flags[cell.benchmark], extra, args.timeout)
        progress.done(cell, time.monotonic() - t0, status)
        failed += status == "error"
    if len(cells) > 1:
        print(f"bench matrix: {len(cells)} cells in {_clock(time.monotonic() - progress.start)}"
              f", {len(will_skip)} skipped, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
