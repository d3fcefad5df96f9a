"""``python -m actorq.examples.kvserver [--workers N] [--cpus LIST] [--port P]``.

The same as ``KVSERVER_PORT=P actorq run actorq.examples.kvserver.server:main
--workers N``: starts the runtime, prints ``listening on 127.0.0.1:PORT``
when every worker accepts, and serves until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog=f"python -m {__package__}", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--workers", type=int, default=None, help="default: one per physical core")
    ap.add_argument("--cpus", default=None, help="CPUs for the workers, e.g. 0-3")
    ap.add_argument("--port", type=int, default=None,
                    help="TCP port on 127.0.0.1 (default: $KVSERVER_PORT or 6380; 0 = any free)")
    args = ap.parse_args(argv)
    if args.port is not None:
        os.environ["KVSERVER_PORT"] = str(args.port)
    import actorq

    from .server import main as serve
    from .server import port_from_env, probe_port

    try:
        # A bad KVSERVER_PORT, or a port in use, is one line and exit 2, before any fork.
        probe_port(port_from_env())
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2

    try:
        actorq.run(serve, workers=args.workers, cpus=args.cpus)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
