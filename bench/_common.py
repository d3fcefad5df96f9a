"""What every benchmark shares: the result record, medians with spread, pinning,
and a description of the machine the numbers came from."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass
class Result:
    """One contender's figures; the JSON shape every ``--json`` run prints."""

    contender: str
    payload: int | None
    msgs_per_s: float | None
    rtt_p50_us: float | None
    rtt_p99_us: float | None
    spread: float | None  # (max - min) / median of msgs_per_s (or of rtt_p50 when no rate)


def median_spread(values: Sequence[float]) -> tuple[float, float]:
    """Median of repetitions and their relative spread, (max-min)/median."""
    med = statistics.median(values)
    return med, ((max(values) - min(values)) / med if med else 0.0)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def pin(cpu: int) -> None:
    """Pin the calling process to one CPU (ignored where the CPU is not usable)."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


def two_cpus() -> tuple[int, int]:
    """Two distinct usable CPUs for a producer/consumer pair (same one twice on a uniprocessor)."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])


def machine_info() -> dict[str, object]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
    }


def emit(results: Sequence[Result], as_json: bool, title: str = "") -> None:
    """Print results as the JSON list (``--json``) or as an aligned table."""
    if as_json:
        print(json.dumps([asdict(r) for r in results], indent=1))
        return
    if title:
        print(title)
    print(f"{'contender':<22}{'payload':>8}{'msgs/s':>14}{'p50 µs':>10}{'p99 µs':>10}{'spread':>8}")
    for r in results:
        def fmt(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)
        print(
            f"{r.contender:<22}{fmt(r.payload, 'd'):>8}{fmt(r.msgs_per_s, ',.0f'):>14}"
            f"{fmt(r.rtt_p50_us, '.1f'):>10}{fmt(r.rtt_p99_us, '.1f'):>10}{fmt(r.spread, '.2f'):>8}"
        )
