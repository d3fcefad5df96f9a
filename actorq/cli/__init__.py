"""The ``actorq`` command: ``run``, ``topology``, ``place``, ``stats``, ``top``, ``ps``.

Each subcommand lives in the module that owns its work; this file only parses
arguments and dispatches, importing lazily so ``actorq topology`` does not
pay for zmq or the runtime.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

# subcommand -> (module with add_arguments(parser) and run(args) -> exit code, help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "topology": ("actorq.cli.topology", "print the machine and its scheduling universe"),
    "place": ("actorq.cli.place", "show where a described set of actors would land, and why"),
    "run": ("actorq.cli.run", "run an app: actorq run module:attr"),
    "stats": ("actorq.cli.stats", "where the actors of a running runtime live, and how busy"),
    "top": ("actorq.cli.top", "watch a running runtime live: workers and busy actors"),
    "ps": ("actorq.cli.ps", "list the running runtimes of this user"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actorq", description="A NUMA-aware actor runtime for Linux multicore machines."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # that part of actorq is not installed in this build
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runner: Callable[[argparse.Namespace], int] = args._run
    try:
        code = runner(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except BrokenPipeError:
        # Whoever read our output stopped (``actorq stats | head``): not an error.
        # Point stdout at /dev/null so the interpreter's last flush is quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
