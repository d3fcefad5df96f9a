"""Discovery time: ``python -m bench topology [--repeat N] [--json]``.

Targets: this machine ("/"), the 128-CPU Kunpeng 920 and the 256-CPU POWER7
snapshots from tests/fixtures/hwloc-sysfs (extracted to a temporary directory
first). Contenders, measured in the same run on each target:

* ``actorq warm``: ``discover(root)`` again in a process that has done it
  before (imports paid, page cache warm): the steady cost.
* ``actorq+universe``: ``discover`` then ``build_universe``.
* ``actorq first``: in a fresh interpreter that has imported the ``actorq``
  package, ``from actorq.topology import discover; discover(root)`` once
  (libnuma's import included, on "/"), timed inside that interpreter: what a
  runtime pays for discovery at start-up. The 50 ms target is for this, on "/".
* ``import actorq (pkg)``: the package import before it, measured apart
  because ``actorq/__init__`` belongs to the runtime, not to discovery.
* ``lscpu -e``: util-linux reading the same tree (``--sysroot`` on
  snapshots), a fresh process each time; compare with ``actorq cli``, which
  is ``python -m actorq topology --json`` as a fresh process.
* on "/" only: ``psutil counts`` (cpu_count logical/physical + affinity: what
  a runtime without a topology reader would know) and ``libnuma info``
  (py-libnuma's ``numa_hardware_info``: distances and node CPUs).

Figures go into the shared ``Result`` record: ``payload`` = CPUs in the
target, ``msgs_per_s`` = discoveries per second, ``rtt_p50_us`` /
``rtt_p99_us`` = median / p99 time of one discovery in µs, ``spread`` over
repetitions. The ratio column printed after each table is time / actorq warm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._common import Result, emit, machine_info, median_spread, percentile

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "hwloc-sysfs"
BIG = ("128arm-2pa2n8cluster4co.tar.bz2", "256ppc-8n8s4t.tar.bz2")


def _timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A contender run that returns its own duration in seconds."""

    def run() -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    return run


def _interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """One run of each contender per round, in turn, so load drift on a shared
    VM hits all of them alike and their ratios stay meaningful."""
    for run in contenders.values():
        run()  # warm: imports, page cache, bytecode cache
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(run())
    return times


def _result(name: str, cpus: int, times: list[float]) -> Result:
    times = sorted(times)
    med, _ = median_spread(times)
    rates = [1.0 / t for t in times]
    _, spread = median_spread(rates)
    return Result(name, cpus, 1.0 / med, med * 1e6, percentile(times, 99) * 1e6, spread)


# Timed inside a fresh interpreter: "import actorq" (the package, whatever its
# __init__ pulls in) apart from "from actorq.topology import discover; discover()".
_FIRST = (
    "import sys,time;t0=time.perf_counter();import actorq;t=time.perf_counter();"
    "from actorq.topology import discover;discover(sys.argv[1]);"
    "print(t-t0, time.perf_counter()-t)"
)


# Fresh interpreters get cached bytecode, as an installed package has. (This
# VM sets PYTHONDONTWRITEBYTECODE=1, which would add compiling every module to
# every start.) The cache lives in the run's temporary directory, not the tree.
_ENV: dict[str, str] = {}


def _first_call(root: str, part: int) -> Callable[[], float]:
    """A fresh interpreter; returns the time it measured for part 0 (import
    actorq) or part 1 (import actorq.topology + first discover)."""
    argv = [sys.executable, "-c", _FIRST, root]

    def run() -> float:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, env=_ENV)
        return float(done.stdout.split()[part])

    return run


def _process(argv: list[str]) -> Callable[[], float] | None:
    try:
        subprocess.run(argv, capture_output=True, check=True, env=_ENV)
    except (OSError, subprocess.CalledProcessError):
        return None
    return _timed(lambda: subprocess.run(argv, capture_output=True, check=True, env=_ENV))


def bench_root(label: str, root: str, repeat: int) -> list[Result]:
    from actorq.topology import build_universe, discover

    cpus = len(discover(root).online_cpus)
    fast: dict[str, Callable[[], float]] = {
        "actorq warm": _timed(lambda: discover(root)),
        "actorq+universe": _timed(lambda: build_universe(discover(root), "all")),
    }
    slow: dict[str, Callable[[], float]] = {
        "actorq first": _first_call(root, 1),
        "import actorq (pkg)": _first_call(root, 0),
    }
    cli = [sys.executable, "-m", "actorq", "topology", "--json", "--root", root]
    lscpu = ["lscpu", "-e=CPU,CORE,SOCKET,NODE,CACHE"] + ([] if root == "/" else ["-s", root])
    for name, argv in (("actorq cli", cli), ("lscpu -e", lscpu)):
        run = _process(argv) if shutil.which(argv[0]) or os.path.exists(argv[0]) else None
        if run is None:
            print(
                f"# {label}: {name} failed or missing on this tree; not measured", file=sys.stderr
            )
        elif name == "lscpu -e":
            fast[name] = run  # a C process per run: comparable to "actorq cli", cheap enough
        else:
            slow[name] = run
    if root == "/":
        import psutil

        fast["psutil counts"] = _timed(
            lambda: (
                psutil.cpu_count(),
                psutil.cpu_count(logical=False),
                psutil.Process().cpu_affinity(),
            )
        )
        try:
            import numa

            fast["libnuma info"] = _timed(numa.info.numa_hardware_info)
        except Exception as exc:  # no libnuma here: say so, measure the rest
            print(f"# libnuma not measured: {exc}", file=sys.stderr)
    times = _interleaved(fast, repeat)
    times.update(_interleaved(slow, max(5, repeat // 4)))
    order = ["actorq warm", "actorq+universe", "actorq first", "import actorq (pkg)"]
    order += [n for n in times if n not in order]
    return [_result(name, cpus, times[name]) for name in order if name in times]


def _extract(tmp: Path, name: str) -> str:
    with tarfile.open(FIXTURES / name) as tar:
        tar.extractall(tmp / name, filter="data")
    (prefix,) = [p for p in (tmp / name).iterdir() if (p / "sys").is_dir()]
    return str(prefix)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench topology", description=__doc__)
    ap.add_argument("--repeat", type=int, default=40, help="timed runs per in-process contender")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--target",
        choices=["all", "live", "snapshots"],
        default="all",
        help="this machine, the two large snapshots, or both (default)",
    )
    args = ap.parse_args(argv)
    info = machine_info()
    everything: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="actorq-bench-topo-") as tmp:
        _ENV.clear()
        _ENV.update(os.environ, PYTHONPYCACHEPREFIX=str(Path(tmp) / "pyc"))
        _ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        targets = [("/ (this machine)", "/")] if args.target != "snapshots" else []
        if args.target != "live":
            targets += [(n.removesuffix(".tar.bz2"), _extract(Path(tmp), n)) for n in BIG]
        for label, root in targets:
            res = bench_root(label, root, args.repeat)
            if args.json:
                everything[label] = [r.__dict__ for r in res]
                continue
            load = "/".join(f"{x:.1f}" for x in os.getloadavg())
            emit(
                res,
                False,
                f"\n## {label}  ({info['cpu_model']}, {info['cpus']} CPUs, "
                f"python {info['python']}, load {load})",
            )
            base = res[0].rtt_p50_us or 1.0
            print(
                "ratio to actorq warm: "
                + ", ".join(
                    f"{r.contender} {r.rtt_p50_us / base:.2f}x" for r in res[1:] if r.rtt_p50_us
                )
            )
    if args.json:
        print(json.dumps({"machine": info, "targets": everything}, indent=1))
    return 0
