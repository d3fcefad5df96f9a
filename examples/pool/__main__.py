"""python -m examples.pool [--docs N] [--processes N] [--workers N]"""

from __future__ import annotations

import argparse
import json

from .app import run


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m examples.pool", description=__doc__)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    result = run(args.docs, args.processes, args.workers)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
