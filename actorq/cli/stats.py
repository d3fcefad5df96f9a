"""``actorq stats ADDRESS``: where every actor of a running runtime lives, and how busy it is.

ADDRESS is the runtime directory (``--runtime-dir`` / ``runtime_dir``) or the
``ipc://`` address ``rt.address`` gives. ``--json`` prints what
``rt.stats()`` returns.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", help="the runtime directory or its ipc:// control address")
    parser.add_argument("--json", action="store_true", help="print the raw stats as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")


def render(stats: dict[str, Any]) -> str:
    lines = [
        f"runtime at {stats['address']} ({stats['mesh']} channels), "
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
    for a in stats["actors"]:
        label = a["name"] or a["cls"].rpartition(":")[2]
        trouble = ""
        if a.get("crashes") or a.get("lost"):
            trouble = f"  [{a.get('crashes', 0)} crashes, {a.get('lost', 0)} messages lost]"
        lines.append(
            f"    {label:<20} #{a['id'] & 0xFFFFFFFF:<6} worker {a['worker']} "
            f"(CPU {a['cpu']})  {a['reason']}{trouble}"
        )
    log = stats.get("dead_letter_log") or []
    if log:
        lines.append("  messages not redelivered after a crash (most recent last):")
        for d in log[-10:]:
            lines.append(f"    {d['label']}.{d['method']}: {d['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..client import connect

    try:
        with connect(args.address, timeout=args.timeout) as client:
            stats = client.stats()
    except TimeoutError as exc:
        print(f"actorq stats: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=1, default=str) if args.json else render(stats))
    return 0
