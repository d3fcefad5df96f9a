"""``actorq top [RUNTIME]``: a running runtime, live, in the terminal.

One line per worker (CPU %, messages/s, ring bytes/s, wake-ups/s, asks
pending) and one per busy actor (messages/s, estimated CPU %, mailbox depth,
service and sojourn p99 over the last refresh), refreshed every
``--interval`` seconds (rich's ``Live``). Keys: ``c`` sorts actors by CPU,
``m`` by mailbox depth, ``r`` by message rate, ``l`` by latency (service
p99); ``q`` quits. RUNTIME as in ``actorq stats``: a name, a directory, or
nothing for the only runtime of this user that is running (if there are
several, they are listed).

The numbers are the workers' own counters (``_runtime/metrics.py``), read
by the supervisor from shared memory: watching does not slow the workers.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty
from typing import Any

from ._snapshots import add_runtime_arguments, resolve, summary

SORTS = {  # key -> (title, actor summary field)
    "c": ("cpu", "cpu_percent"),
    "m": ("mailbox", "queued"),
    "r": ("rate", "messages_per_s"),
    "l": ("latency", "service_p99_ms"),
}
_ACTOR_ROWS = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes"
    )
    parser.add_argument(
        "--sort", choices=[t for t, _ in SORTS.values()], default="cpu", help="first sort order"
    )


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _sort_value(a: dict[str, Any], field: str) -> float:
    v = a.get(field)
    return float(v) if v is not None else -1.0


def view(doc: dict[str, Any], sort: str) -> Any:
    """The screen for one summary (``_snapshots.summary``), actors sorted by ``sort``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    field = next(f for t, f in SORTS.values() if t == sort)
    head = Text.assemble(
        (f"actorq top: {doc['name']}", "bold"),
        f"  {doc['directory']}  dead letters {doc['dead_letters']}, restarts {doc['restarts']}"
        f"  sorted by {sort}  keys: c cpu, m mailbox, r rate, l latency, q quit",
    )
    workers = Table(expand=False, box=None, header_style="bold")
    for col in ("worker", "CPU", "node", "pid", "cpu %", "busy %", "recv/s", "sent/s",
                "ring B/s", "wakeups/s", "actors", "asks pending", "state"):  # fmt: skip
        workers.add_column(col, justify="right" if col not in ("state",) else "left")
    for w in doc["workers"]:
        workers.add_row(
            str(w["worker"]),
            str(w["cpu"]),
            str(w["node"]),
            str(w["pid"]),
            _f(w["cpu_percent"], "{:.1f}"),
            _f(w["busy_percent"], "{:.1f}"),
            _f(w["received_per_s"]),
            _f(w["sent_per_s"]),
            _f(w["ring_bytes_in_per_s"]),
            _f(w["wakeups_per_s"]),
            str(w["actors"]),
            str(w["pending_asks"]),
            "STALLED" if w["stalled"] else (f"{w['restarts']} restarts" if w["restarts"] else "ok"),
        )
    busy = [a for a in doc["actors"] if a["messages_per_s"] or a["queued"]]
    busy.sort(key=lambda a: _sort_value(a, field), reverse=True)
    actors = Table(expand=False, box=None, header_style="bold")
    for col in ("actor", "worker", "msg/s", "cpu %", "mailbox", "window", "service p50 ms",
                "service p99 ms", "sojourn p99 ms", "errors", "shed"):  # fmt: skip
        actors.add_column(col, justify="left" if col == "actor" else "right")
    for a in busy[:_ACTOR_ROWS]:
        actors.add_row(
            a["label"],
            str(a["worker"]),
            _f(a["messages_per_s"]),
            _f(a["cpu_percent"], "{:.1f}"),
            str(a["queued"]),
            str(a["window"]),
            _f(a["service_p50_ms"], "{:.3g}"),
            _f(a["service_p99_ms"], "{:.3g}"),
            _f(a["sojourn_p99_ms"], "{:.3g}"),
            str(a["errors"]),
            str(a["shed"]),
        )
    more = len(busy) - _ACTOR_ROWS
    tail = [Text(f"... and {more} more busy actors")] if more > 0 else []
    quiet = len(doc["actors"]) - len(busy)
    note = Text(f"{len(busy)} busy actors, {quiet} idle", style="dim")
    return Group(head, Text(""), workers, Text(""), note, actors, *tail)


class _Keys:
    """Single keys from the terminal, without echo (cbreak mode), restored on exit."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno() if sys.stdin is not None else -1
        self.saved: Any = None

    def __enter__(self) -> _Keys:
        if self.fd >= 0 and os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def wait(self, timeout: float) -> str:
        """Keys typed within ``timeout`` seconds ('' if none; at once if there are)."""
        if self.fd < 0:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return ""
        data = os.read(self.fd, 64)
        if not data:  # stdin closed: nobody can press q; stop
            return "q"
        return data.decode("utf-8", "replace")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from ..client import connect

    if not args.interval > 0:
        print("actorq top: --interval takes a positive number of seconds", file=sys.stderr)
        return 2
    address = resolve(args.address, "top")
    if address is None:
        return 1
    sort = args.sort
    prev: dict[str, Any] | None = None
    console = Console()
    try:
        with (
            connect(address, timeout=args.timeout) as client,
            _Keys() as keys,
            Live(console=console, auto_refresh=False, transient=False) as live,
        ):
            while True:
                doc = summary(client.stats(), prev)
                prev = doc
                live.update(view(doc, sort), refresh=True)
                deadline = time.monotonic() + args.interval
                while (left := deadline - time.monotonic()) > 0:
                    for key in keys.wait(left).lower():
                        if key == "q":
                            return 0
                        if key in SORTS:
                            sort = SORTS[key][0]
                            live.update(view(doc, sort), refresh=True)
    except KeyboardInterrupt:
        return 0
    except TimeoutError as exc:
        print(f"actorq top: {exc}", file=sys.stderr)
        return 1
