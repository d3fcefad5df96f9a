"""One cell of the benchmark matrix: run a benchmark with a set of factor values
and write its results, the factors and the machine to ``bench/results/``.

    python -m bench matrix --benchmark kv --payload 64 --workers 2 [--placement spread]
                           [--out bench/results] [-- extra args for the benchmark]

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
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
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


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(prog="python -m bench matrix", description=__doc__.split("\n")[0])
    ap.add_argument("--benchmark", required=True, help=f"one of {', '.join(BENCHMARKS)}")
    ap.add_argument("--payload", type=int, required=True)
    ap.add_argument("--workers", required=True, help="a number, or 'all'")
    ap.add_argument("--placement", default=None, help="compact or spread (where supported)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before giving up")
    args = ap.parse_args(argv)

    workers = len(os.sched_getaffinity(0)) if args.workers == "all" else int(args.workers)
    record: dict[str, object] = {
        "benchmark": args.benchmark,
        "factors": {"payload": args.payload, "workers": workers,
                    "workers_asked": args.workers, "placement": args.placement},
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [],
        "error": None,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (cell_name(args.benchmark, args.payload, args.workers, args.placement)
                      + ".json")

    script = ROOT / "bench" / f"{args.benchmark}.py"
    rc = 0
    flags = supported_flags(args.benchmark) if script.is_file() else set()
    unused = [f for f, v, base in (("payload", str(args.payload), "64"),
                                   ("workers", args.workers, "2"),
                                   ("placement", args.placement, BASE_PLACEMENT))
              if v is not None and v != base and f"--{f}" not in flags]
    if script.is_file() and unused:
        # This benchmark ignores the factor: the base cell already measured it.
        record["skipped"] = f"bench/{args.benchmark}.py takes no --{unused[0]}; see the base cell"
        print(f"bench matrix: {path.name}: {record['skipped']}", file=sys.stderr)
        path.write_text(json.dumps(record, indent=1) + "\n")
        return 0
    if not script.is_file():
        record["error"] = f"bench/{args.benchmark}.py does not exist (yet); nothing was measured"
        rc = 1
    else:
        cmd = [sys.executable, "-m", "bench", args.benchmark, "--json"]
        applied = []
        if "--payload" in flags:
            cmd += ["--payload", str(args.payload)]
            applied.append("payload")
        if "--workers" in flags:
            cmd += ["--workers", str(workers)]
            applied.append("workers")
        if args.placement and "--placement" in flags:
            cmd += ["--placement", args.placement]
            applied.append("placement")
        cmd += extra
        record["applied"] = applied
        record["command"] = ["python", *cmd[1:]]
        print(f"bench matrix: {' '.join(record['command'])}", file=sys.stderr, flush=True)
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            out, err = child.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM first: a benchmark stops the servers it started on the way out.
            child.terminate()
            try:
                child.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
            record["error"] = f"timed out after {args.timeout:.0f} s"
            rc = 1
        else:
            proc = subprocess.CompletedProcess(cmd, child.returncode, out, err)
            sys.stderr.write(proc.stderr[-4000:])
            if proc.returncode != 0:
                record["error"] = f"exit {proc.returncode}: {proc.stderr.strip()[-1000:]}"
                rc = 1
            else:
                try:
                    results = json.loads(proc.stdout)
                except json.JSONDecodeError as exc:
                    record["error"] = f"--json output is not JSON ({exc}): {proc.stdout[:300]!r}"
                    rc = 1
                else:
                    if isinstance(results, dict):  # tolerate {"results": [...]} too
                        results = results.get("results", [])
                    record["results"] = results
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"bench matrix: wrote {path}" + (f" (error: {record['error']})" if rc else ""),
          file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
