"""What ``actorq stats --watch`` and ``actorq top`` share: naming and finding
the runtime, and turning two stats snapshots into rates.

A snapshot is what the ``stats`` control op returns; its ``metrics`` part is
what each worker last published in its board (``_runtime/metrics.py``), so
counters are cumulative and rates are differences over the time between two
snapshots. Latency quantiles come from the histograms' buckets, over the
interval when there is a previous snapshot (what is happening now), else
since the start.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._runtime.admission import BUCKETS as SOJOURN_BUCKETS
from .._runtime.metrics import SERVICE_BUCKETS, quantile


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """The optional RUNTIME argument and ``--timeout``, the same for every command
    that talks to a running runtime."""
    parser.add_argument(
        "address",
        nargs="?",
        metavar="RUNTIME",
        help="a runtime's name, directory or ipc:// address (default: the only one running)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")


def resolve(which: str | None, command: str) -> str | None:
    """The address of the runtime ``which`` names (see ``rundir.find_runtime``);
    None after saying on stderr why there is not exactly one."""
    from .._runtime.rundir import find_runtime, running_runtimes
    from ..errors import ConfigError

    try:
        return find_runtime(which)
    except (LookupError, ConfigError) as exc:
        print(f"actorq {command}: {exc.args[0]}", file=sys.stderr)
        if which is None:
            try:
                live = running_runtimes()
            except ConfigError:
                live = []
            if len(live) > 1:
                print(render_ps(live), file=sys.stderr)
        return None


def render_ps(runtimes: list[dict[str, Any]], now: float | None = None) -> str:
    """``actorq ps``'s table: name, pid, workers, uptime, directory."""
    import time

    now = time.time() if now is None else now
    rows = [("NAME", "PID", "WORKERS", "UPTIME", "METRICS", "DIRECTORY")]
    for r in runtimes:
        rows.append(
            (
                str(r["name"]),
                str(r["pid"]),
                str(r.get("workers", "?")),
                _uptime(now - float(r["started"])),
                str(r.get("metrics") or "-"),
                str(r["directory"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _uptime(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _rate(cur: float | None, prev: float | None, dt: float) -> float | None:
    if cur is None or prev is None or dt <= 0:
        return None
    return max(0.0, (cur - prev) / dt)


def _ms(q: float | None) -> float | None:
    return None if q is None else q * 1000


def summary(stats: dict[str, Any], prev: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line's worth of a snapshot, with rates against ``prev`` (a summary
    this function made before; None: no rates yet).

    Counters a worker publishes (messages, records, busy time, histograms) are
    rated over the time between its two publishes, not between the
    snapshots: a snapshot taken before the worker published again carries the
    previous rates instead of showing a false zero. CPU time, ring bytes and
    wake-ups are read live, and rated over the snapshots' interval."""
    m = stats.get("metrics") or {"workers": [], "time": 0.0}
    now = float(m["time"])
    dt = now - prev["time"] if prev is not None else 0.0
    pw = {w["worker"]: w for w in prev["workers"]} if prev else {}
    pa = {a["id"]: a for a in prev["actors"]} if prev else {}
    workers, actors = [], []
    for w in m["workers"]:
        p = pw.get(w["worker"])
        pub_dt = (w["published_ns"] - p["published_ns"]) / 1e9 if p else 0.0
        stale = p is not None and pub_dt <= 0  # nothing new published since prev
        cpu = _rate(w.get("cpu_seconds"), p and p.get("cpu_seconds"), dt)
        row = {
            "worker": w["worker"],
            "pid": w["pid"],
            "cpu": w["cpu"],
            "node": w["node"],
            "stalled": w["stalled"],
            "restarts": w["restarts"],
            "actors": w["hosted"],
            "pending_asks": w["pending_asks"],
            "received": w["received"],
            "sent": w["sent"],
            "published_ns": w["published_ns"],
            "cpu_seconds": w.get("cpu_seconds"),
            "busy_ns": w["busy_ns"],
            "ring_bytes_in": w.get("ring_bytes_in"),
            "wakeups": w.get("wakeups"),
            "cpu_percent": None if cpu is None else cpu * 100,
            "ring_bytes_in_per_s": _rate(w.get("ring_bytes_in"), p and p.get("ring_bytes_in"), dt),
            "wakeups_per_s": _rate(w.get("wakeups"), p and p.get("wakeups"), dt),
        }
        if stale:
            assert p is not None
            row.update({k: p[k] for k in ("busy_percent", "received_per_s", "sent_per_s")})
        else:
            busy = _rate(w["busy_ns"], p and p["busy_ns"], pub_dt)
            row["busy_percent"] = None if busy is None else busy / 1e7
            row["received_per_s"] = _rate(w["received"], p and p["received"], pub_dt)
            row["sent_per_s"] = _rate(w["sent"], p and p["sent"], pub_dt)
        workers.append(row)
        for a in w["actors"]:
            q = pa.get(a["id"])
            actors.append(_actor_summary(a, q, pub_dt, stale and q is not None))
    return {
        "time": now,
        "interval": dt if prev is not None else None,
        "name": stats.get("name"),
        "directory": stats.get("directory"),
        "dead_letters": stats.get("dead_letters"),
        "restarts": stats.get("restarts"),
        "workers": workers,
        "actors": actors,
    }


_ACTOR_COUNTS = (
    "id", "label", "worker", "messages", "asks", "errors", "shed", "expired", "queued", "window",
    "service_samples", "service_sum_ns", "service_buckets", "sojourn_buckets",
)  # fmt: skip
_ACTOR_RATES = (
    "messages_per_s",
    "cpu_percent",
    "service_p50_ms",
    "service_p99_ms",
    "sojourn_p99_ms",
)


def _actor_summary(
    a: dict[str, Any], q: dict[str, Any] | None, dt: float, stale: bool
) -> dict[str, Any]:
    """One actor's counters, and its rates over ``dt`` seconds since ``q``."""
    row = {k: a[k] for k in _ACTOR_COUNTS}
    if stale:
        assert q is not None
        row.update({k: q[k] for k in _ACTOR_RATES})
        return row
    service, sojourn = a["service_buckets"], a["sojourn_buckets"]
    if q is not None:  # the interval's own distribution
        service = [x - y for x, y in zip(service, q["service_buckets"], strict=True)]
        sojourn = [x - y for x, y in zip(sojourn, q["sojourn_buckets"], strict=True)]
    samples = a["service_samples"] - (q["service_samples"] if q else 0)
    timed_ns = a["service_sum_ns"] - (q["service_sum_ns"] if q else 0)
    ran = a["messages"] - (q["messages"] if q else 0)
    # the busy share: the sampled mean service time times the messages run
    busy = timed_ns / samples * ran / 1e9 / dt if samples > 0 and dt > 0 else None
    row["messages_per_s"] = _rate(a["messages"], q["messages"] if q else None, dt)
    row["cpu_percent"] = None if busy is None else busy * 100
    row["service_p50_ms"] = _ms(quantile(service, SERVICE_BUCKETS, 0.5))
    row["service_p99_ms"] = _ms(quantile(service, SERVICE_BUCKETS, 0.99))
    row["sojourn_p99_ms"] = _ms(quantile(sojourn, SOJOURN_BUCKETS, 0.99))
    return row
