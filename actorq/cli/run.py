"""``actorq run module:attr``: import the app and run its ``main`` under a runtime.

Like uvicorn's ``module:app``: the current directory is importable, ``attr``
defaults to ``main``, and anything wrong with the target (no such module or
attribute, ``main`` not ``async def main(rt)``) is one line on stderr and
exit code 2, before any process is started. Flags win over the config file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="the app's main coroutine function, e.g. actorq.examples.hello:main",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="number of workers (default: one per physical core in the cpuset)",
    )
    parser.add_argument(
        "--cpus",
        default=None,
        metavar="LIST",
        help="CPUs to run workers on, e.g. 0-3,6 (default: all usable)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="config file (default: ./actorq.toml or [tool.actorq] in ./pyproject.toml)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        metavar="LEVEL",
        choices=["debug", "info", "warning", "error", "critical"],
        help="for actorq's and the app's loggers: debug, info, warning (default), error",
    )
    parser.add_argument(
        "--runtime-dir",
        default=None,
        metavar="DIR",
        help="private directory for the control socket (default: a fresh one)",
    )
    parser.add_argument(
        "--name",
        default=None,
        metavar="NAME",
        help="the runtime's name for actorq ps/top/stats (default: the app's, plus the pid)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics there, e.g. 127.0.0.1:9464 (default: no endpoint)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        default=None,
        help="log where each actor is placed and why",
    )


def _fail(msg: str) -> int:
    print(f"actorq run: {msg}", file=sys.stderr)
    return 2


def load_target(target: str) -> Any:
    """Import ``module:attr``; raises LookupError with a one-line reason."""
    module_name, _, attr = target.partition(":")
    attr = attr or "main"
    if not module_name:
        raise LookupError(f"{target!r}: write MODULE:ATTR, e.g. actorq.examples.hello:main")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise LookupError(
                f"no module named {module_name!r} (looked in {os.getcwd()} and sys.path)"
            ) from None
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LookupError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def run(args: argparse.Namespace) -> int:
    from .._api import check_main
    from ..errors import ConfigError, ShutdownTimeout

    try:
        main = load_target(args.target)
    except LookupError as exc:
        return _fail(str(exc.args[0]))
    why = check_main(main)
    if why is not None:
        return _fail(f"{args.target}: {why}")
    from .._runtime.supervisor import run_main

    try:
        run_main(
            main,
            workers=args.workers,
            cpus=args.cpus,
            config=args.config,
            log_level=args.log_level,
            runtime_dir=args.runtime_dir,
            explain=args.explain,
            name=args.name,
            metrics_address=args.metrics,
        )
    except ConfigError as exc:
        return _fail(str(exc))
    except ShutdownTimeout as exc:
        print(f"actorq run: {exc}", file=sys.stderr)
        return 3
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        import logging
        import traceback

        if isinstance(exc, KeyboardInterrupt):
            return 130
        logging.getLogger("actorq").error(
            "main raised %s: %s\n%s",
            type(exc).__name__,
            exc,
            "".join(traceback.format_exception(exc)),
        )
        return 1
    return 0
