"""``actorq place [--root DIR] [--cpus LIST] [--json] [--svg FILE] SPEC...``: where actors
would land, and why.

Nothing is started: the machine is read (a live one, or a snapshot tree under
``--root``), the described actors are planned with :func:`actorq.placement.plan`,
and each placement is printed with its reason. ``--svg FILE`` (``-``: stdout)
also draws it: CPUs as boxes inside their core, cache, package and NUMA node,
each actor on its CPU in its group's colour (``actorq.topology.svg``).

SPEC is a TOML or JSON file, or the compact form on the command line.

File (TOML shown; JSON has the same shape)::

    [actors.web]          # 16 private actors web-0 .. web-15
    count = 16

    [actors.kv]           # a group of 8 sharing 4 MiB
    count = 8
    state = "shared"      # group defaults to the kind's name ("kv")
    footprint = "4 MiB"   # or a byte count
    # also: group, writes = "shared" | "private", node, cpu, weight

Compact: ``web=16 kv=8,shared,4MiB`` -- entries separated by spaces or ``;``,
each ``NAME[=COUNT]`` followed by comma-separated options: ``shared``,
``private``, a size (``512KiB``, ``4M``, ``1GiB``: the footprint) or
``key=value`` with the keys above.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..placement import Hints
from .topology import add_root_argument

if TYPE_CHECKING:
    from ..placement import Placement, Plan
    from ..topology.model import Machine
    from ..topology.universe import Universe

_KEYS = {"count", "group", "state", "footprint", "writes", "node", "cpu", "weight"}
_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_root_argument(parser)
    parser.add_argument(
        "--cpus",
        metavar="LIST",
        default=None,
        help='place only on these CPUs, e.g. the workers\' "0-7,16" (default: every usable CPU)',
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="use every online CPU, not only those this process may use (cpuset, affinity)",
    )
    parser.add_argument(
        "--any-type",
        action="store_true",
        help="on hybrid machines, do not put the first actors on the fastest cores",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"actors": [{"name", "group", "cpu", "core", "package", "node", "reason"}]}',
    )
    parser.add_argument(
        "--svg",
        metavar="FILE",
        default=None,
        help="also draw the placement as an SVG picture into FILE ('-': stdout, instead of text)",
    )
    parser.add_argument(
        "spec",
        nargs="+",
        metavar="SPEC",
        help="a .toml/.json file, or the compact form: web=16 kv=8,shared,4MiB",
    )


def parse_size(text: str | int, what: str = "footprint") -> int:
    """``4MiB``, ``4 M``, ``512KiB``, ``1.5GiB`` or bytes -> bytes (binary units)."""
    if isinstance(text, bool):
        raise ConfigError(f"{what}: expected a size, got {text!r}")
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"{what}: {text!r} is not a size; write e.g. 4MiB, 512KiB or 1048576")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _hints(kind: str, fields: dict[str, Any]) -> tuple[int, Hints]:
    bad = sorted(set(fields) - _KEYS)
    if bad:
        raise ConfigError(
            f"actor kind {kind!r}: unknown key {bad[0]!r}; known keys: {', '.join(sorted(_KEYS))}"
        )
    count = fields.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"actor kind {kind!r}: count must be an integer >= 1, not {count!r}")
    state = fields.get("state")
    group = fields.get("group")
    if state == "shared" and group is None:
        group = kind
    footprint = fields.get("footprint")
    try:
        hints = Hints(
            group=group,
            state=state,
            footprint=None if footprint is None else parse_size(footprint, f"{kind}.footprint"),
            writes=fields.get("writes"),
            cpu=fields.get("cpu"),
            node=fields.get("node"),
            weight=float(fields.get("weight", 1.0)),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"actor kind {kind!r}: {exc}") from None
    return count, hints


def _expand(kinds: dict[str, dict[str, Any]]) -> list[tuple[str, Hints]]:
    actors: list[tuple[str, Hints]] = []
    for kind, fields in kinds.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"actor kind {kind!r}: expected a table of hints, got {fields!r}")
        count, hints = _hints(kind, fields)
        names = [kind] if count == 1 else [f"{kind}-{i}" for i in range(count)]
        actors.extend((n, hints) for n in names)
    return actors


def parse_compact(text: str) -> list[tuple[str, Hints]]:
    """``web=16 kv=8,shared,4MiB`` -> actors with hints."""
    kinds: dict[str, dict[str, Any]] = {}
    for entry in re.split(r"[\s;]+", text.strip()):
        if not entry:
            continue
        head, *opts = entry.split(",")
        kind, eq, count = head.partition("=")
        if not kind:
            raise ConfigError(f"spec entry {entry!r}: starts with no name; write e.g. web=16")
        fields: dict[str, Any] = {}
        if eq:
            if not count.isdigit():
                raise ConfigError(f"spec entry {entry!r}: count {count!r} is not a number")
            fields["count"] = int(count)
        for opt in opts:
            key, eq, value = opt.partition("=")
            if not eq:
                if opt in ("shared", "private"):
                    fields["state"] = opt
                elif _SIZE.match(opt):
                    fields["footprint"] = opt
                else:
                    raise ConfigError(
                        f"spec entry {entry!r}: option {opt!r} is not shared, private, a size "
                        "or key=value"
                    )
                continue
            if key in ("node", "cpu"):
                if not value.isdigit():
                    raise ConfigError(f"spec entry {entry!r}: {key}={value!r} is not a number")
                fields[key] = int(value)
            elif key == "weight":
                fields[key] = float(value)
            else:
                fields[key] = value
        if kind in kinds:
            raise ConfigError(f"spec: actor kind {kind!r} appears twice")
        kinds[kind] = fields
    if not kinds:
        raise ConfigError("spec is empty; write e.g. web=16 kv=8,shared,4MiB")
    return _expand(kinds)


def load_spec(spec: list[str]) -> list[tuple[str, Hints]]:
    """A file (``.toml``/``.json``, by suffix or content) or the compact form."""
    import json
    import os
    import tomllib

    if len(spec) == 1 and os.path.isfile(spec[0]):
        path = spec[0]
        with open(path, "rb") as f:
            raw = f.read()
        try:
            if path.endswith(".json") or raw.lstrip().startswith(b"{"):
                doc = json.loads(raw)
            else:
                doc = tomllib.loads(raw.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML or JSON: {exc}") from None
        ok = isinstance(doc, dict) and set(doc) == {"actors"} and isinstance(doc["actors"], dict)
        if not ok:
            raise ConfigError(
                f"{path}: expected only an [actors.NAME] table per actor kind "
                f"(found top-level keys {sorted(doc) if isinstance(doc, dict) else doc!r})"
            )
        return _expand(doc["actors"])
    if len(spec) == 1 and spec[0].endswith((".toml", ".json")):
        raise ConfigError(f"spec file {spec[0]!r} not found")
    return parse_compact(" ".join(spec))


def _text(rows: list[dict[str, Any]]) -> str:
    def cell(v: object) -> str:
        return "-" if v is None else str(v)

    head = ("name", "group", "cpu", "core", "package", "node")
    table = [head] + [tuple(cell(r[k]) for k in head) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = []
    for i, row in enumerate(table):
        cols = "  ".join(
            v.ljust(w) if j < 2 else v.rjust(w)
            for j, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        reason = "reason" if i == 0 else rows[i - 1]["reason"]
        lines.append(f"{cols}  {reason}")
    return "\n".join(lines) + "\n"


def _colour_key(p: Placement) -> str:
    """What an actor is coloured by: its group, else its kind (``web-3`` -> ``web``)."""
    return p.group if p.group is not None else re.sub(r"-\d+$", "", p.name)


def _svg(machine: Machine, universe: Universe, result: Plan, spec: str) -> str:
    from ..topology.cpulist import format_cpulist
    from ..topology.svg import to_svg

    items: dict[int, list[tuple[str, str | None]]] = {}
    members: dict[str, list[Placement]] = {}
    for p in result.placements.values():
        key = _colour_key(p)
        items.setdefault(p.cpu, []).append((p.name, key))
        members.setdefault(key, []).append(p)
    legend: dict[str | None, str] = {}
    for name, ps in members.items():
        hows = sorted({p.how for p in ps})
        cpus = format_cpulist(sorted({p.cpu for p in ps}))
        kind = "group" if ps[0].group is not None else "private"
        legend[name] = f"{name} ({kind}, {len(ps)} actors): {'/'.join(hows)} on CPUs {cpus}"
    title = f"actorq place {spec} on {machine.root}"
    return to_svg(machine, universe, items, legend, title)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..errors import ActorqTopologyError, PlacementError
    from ..placement import plan
    from ..topology import build_universe, discover
    from ..topology.cpulist import parse_cpulist

    try:
        actors = load_spec(args.spec)
        cpus = None
        if args.cpus is not None:
            try:
                cpus = parse_cpulist(args.cpus)
            except ValueError:
                raise ConfigError(f"--cpus {args.cpus!r} is not a CPU list like 0-3,8") from None
        machine = discover(args.root)
        universe = build_universe(machine, "all" if args.all else "allowed")
        result = plan(universe, machine, actors, cpus=cpus, prefer_fast=not args.any_type)
    except (ConfigError, PlacementError, ActorqTopologyError, OSError) as exc:
        print(f"actorq place: {exc}", file=sys.stderr)
        return 1
    doc = result.to_json()
    if args.svg is not None:
        picture = _svg(machine, universe, result, " ".join(args.spec))
        if args.svg == "-":
            sys.stdout.write(picture)
            return 0
        try:
            with open(args.svg, "w", encoding="utf-8") as f:
                f.write(picture)
        except OSError as exc:
            print(f"actorq place: --svg {args.svg}: {exc.strerror}", file=sys.stderr)
            return 1
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        rows = doc["actors"]
        assert isinstance(rows, list)
        used = {r["cpu"] for r in rows}
        print(f"{len(rows)} actors on {len(used)} cpus of {machine.root}")
        sys.stdout.write(_text(rows))
    return 0
