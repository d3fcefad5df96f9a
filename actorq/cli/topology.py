"""``actorq topology [--root DIR] [--json] [--all]``: print the machine and its universe."""

from __future__ import annotations

import argparse


def add_root_argument(parser: argparse.ArgumentParser) -> None:
    """``--root DIR``: read a snapshot tree instead of the live machine (shared
    by every subcommand that reads the topology)."""
    parser.add_argument(
        "--root",
        metavar="DIR",
        default=None,
        help="read sysfs/proc under DIR instead of / (default: $ACTORQ_FSROOT or /)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_root_argument(parser)
    parser.add_argument(
        "--json", action="store_true", help="print JSON (schema in actorq.topology.render)"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="build the universe over every online CPU, not only those this process may use",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..errors import ActorqTopologyError
    from ..topology import build_universe, discover
    from ..topology.render import to_json, to_text

    view = "all" if args.all else "allowed"
    try:
        machine = discover(args.root)
        universe = build_universe(machine, view)
    except ActorqTopologyError as exc:
        print(f"actorq topology: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(to_json(machine, universe, view), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_text(machine, universe, view))
    return 0
