"""``actorq stats [RUNTIME]``: where every actor of a running runtime lives, and how busy it is.

RUNTIME is a runtime's name (``actorq ps`` lists them), its directory, or the
``ipc://`` address ``rt.address`` gives; without it, the only runtime of this
user that is running. ``--json`` prints what ``rt.stats()`` returns.

``--watch N`` prints a snapshot every N seconds with rates computed between
snapshots (messages/s per worker and actor, CPU %, latency quantiles over the
interval); with ``--json``, one JSON document per line, for scripts. It ends
quietly when the reader goes away (``| head``) or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ._snapshots import add_runtime_arguments, resolve, summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the stats as JSON")
    parser.add_argument(
        "--watch",
        type=float,
        default=None,
        metavar="N",
        help="print a snapshot every N seconds, with rates between snapshots",
    )


_INTERNAL = ("service_buckets", "sojourn_buckets", "service_sum_ns", "service_samples")


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """A watch summary without what only the next rate needs (the raw buckets)."""
    out = dict(doc)
    out["actors"] = [{k: v for k, v in a.items() if k not in _INTERNAL} for a in doc["actors"]]
    return out


def _num(x: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_watch(doc: dict[str, Any]) -> str:
    """A watch summary as text: one line per worker, one per actor that did something."""
    lines = [f"{time.strftime('%H:%M:%S', time.localtime(doc['time']))} {doc['name']}"]
    for w in doc["workers"]:
        lines.append(
            f"  worker {w['worker']} CPU {w['cpu']}: {_num(w['cpu_percent'], '{:.1f}')}% CPU, "
            f"{_num(w['received_per_s'])} recv/s, {_num(w['sent_per_s'])} sent/s, "
            f"{w['actors']} actors{' STALLED' if w['stalled'] else ''}"
        )
    for a in doc["actors"]:
        if not a["messages_per_s"] and not a["queued"]:
            continue
        lines.append(
            f"    {a['label']:<20} worker {a['worker']}: {_num(a['messages_per_s'])} msg/s, "
            f"queued {a['queued']}, service p99 {_num(a['service_p99_ms'], '{:.3g}')} ms, "
            f"sojourn p99 {_num(a['sojourn_p99_ms'], '{:.3g}')} ms, errors {a['errors']}"
        )
    return "\n".join(lines)


def render(stats: dict[str, Any]) -> str:
    lines = [
        f"runtime {stats.get('name') or ''} at {stats['address']} ({stats['mesh']} channels), "
        f"{len(stats['workers'])} workers, {stats['restarts']} restarts, "
        f"{stats['dead_letters']} dead letters"
    ]
    bad, refused = stats.get("control_malformed", 0), stats.get("control_refused", 0)
    if bad or refused:
        lines.append(
            f"  control socket: {bad} malformed frames, {refused} refused "
            "(internal ops or replies from peers that are not the runtime's)"
        )
    lost = stats.get("lost_in_crashes", 0)
    if lost:
        lines.append(f"  {lost} of the dead letters were lost in worker crashes")
    for w in stats["workers"]:
        state = " STALLED" if w.get("stalled") else ""
        if "error" in w:
            state += f" ({w['error']})"
        lines.append(
            f"  worker {w['worker']}: pid {w.get('pid')}, CPU {w['cpu']}, "
            f"NUMA node {w.get('node')}, {len(w.get('actors', []))} actors, "
            f"received {w.get('received', '?')}, sent {w.get('sent', '?')}{state}"
        )
    if stats["actors"]:
        lines.append("  actors:")
    counted = {c["id"]: c for c in summary(stats)["actors"]}
    for a in stats["actors"]:
        label = a["name"] or a["cls"].rpartition(":")[2]
        trouble = ""
        if a.get("crashes") or a.get("lost"):
            trouble = f"  [{a.get('crashes', 0)} crashes, {a.get('lost', 0)} messages lost]"
        lines.append(
            f"    {label:<20} #{a['id'] & 0xFFFFFFFF:<6} worker {a['worker']} "
            f"(CPU {a['cpu']})  {a['reason']}{trouble}"
        )
        c = counted.get(a["id"])
        if c is not None:  # what its worker last published (metrics.py)
            lines.append(
                f"{'':<32}{c['messages']} messages ({c['asks']} asks answered), "
                f"{c['errors']} errors, queued {c['queued']}, shed {c['shed']}, service p50/p99 "
                f"{_num(c['service_p50_ms'], '{:.3g}')}/{_num(c['service_p99_ms'], '{:.3g}')} ms"
            )
    log = stats.get("dead_letter_log") or []
    if log:
        lines.append("  messages not redelivered after a crash (most recent last):")
        for d in log[-10:]:
            lines.append(f"    {d['label']}.{d['method']}: {d['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..client import connect

    address = resolve(args.address, "stats")
    if address is None:
        return 1
    if args.watch is not None and not args.watch > 0:
        print("actorq stats: --watch takes a positive number of seconds", file=sys.stderr)
        return 2
    try:
        with connect(address, timeout=args.timeout) as client:
            if args.watch is not None:
                return _watch(client, args)
            stats = client.stats()
    except TimeoutError as exc:
        print(f"actorq stats: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=1, default=str) if args.json else render(stats))
    return 0


def _watch(client: Any, args: argparse.Namespace) -> int:
    """Every ``--watch`` seconds, a snapshot with rates, until the reader or the
    runtime goes away, or Ctrl-C (a closed pipe ends in cli/__init__.py)."""
    prev: dict[str, Any] | None = None
    next_at = time.monotonic()
    try:
        while True:
            doc = summary(client.stats(), prev)
            prev = doc
            if args.json:
                print(json.dumps(public(doc), default=str), flush=True)
            else:
                print(render_watch(doc), flush=True)
            next_at += args.watch
            time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        return 0
