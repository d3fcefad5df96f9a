"""Dispatch ``python -m bench NAME ...`` to ``bench/NAME.py``'s ``main(argv)``."""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_"))
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench {{{','.join(names)}}} [options]")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        choices = ", ".join(names)
        print(f"bench: unknown benchmark {name!r}; choose one of {choices}", file=sys.stderr)
        return 2
    module = import_module(f"bench.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
