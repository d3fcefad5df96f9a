"""``actorq ps``: the running runtimes of this user, from the per-user registry.

Each runtime registers itself by name (``_runtime/rundir.py``); ``ps`` reads
the registry's owner and ``runtime.json`` files and asks no runtime, so a
busy or stalled one is listed as fast as an idle one. ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._snapshots import render_ps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON list of the runtimes")


def run(args: argparse.Namespace) -> int:
    from .._runtime.rundir import registry_path, running_runtimes
    from ..errors import ConfigError

    try:
        live = running_runtimes()
    except ConfigError as exc:
        print(f"actorq ps: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(live))
    elif live:
        print(render_ps(live))
    else:
        print(f"no runtime of yours is running (registry: {registry_path()})", file=sys.stderr)
    return 0
