"""``python -m actorq.examples.pipeline``: run the pipeline and print per-stage throughput.

Options: ``--records N`` (default 200000), ``--batch B`` lines per batch
(500), ``--window W`` batches in flight per link (4), ``--slow STAGE:USEC``
extra work per record in one stage (repeatable; e.g. ``transform:20`` to
watch the producer slow down), ``--workers N``, ``--json`` (the report as
JSON instead of a table).
"""

from __future__ import annotations

import argparse
import json
import sys

from .app import STAGES, Options, render, run_pipeline


def slow_arg(text: str) -> tuple[str, int]:
    stage, _, usec = text.partition(":")
    if stage not in STAGES or not usec.isdigit():
        raise argparse.ArgumentTypeError(
            f"--slow {text!r}: write STAGE:USEC with STAGE one of {', '.join(STAGES)}"
        )
    return stage, int(usec)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {__package__}",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--slow", type=slow_arg, action="append", default=[])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.records < 1 or args.batch < 1 or args.window < 1:
        ap.error("--records, --batch and --window must be positive")
    opts = Options(args.records, args.batch, args.window, dict(args.slow))

    import actorq

    async def pipeline_main(rt: actorq.Runtime) -> dict:
        return await run_pipeline(rt, opts)

    result = actorq.run(pipeline_main, workers=args.workers)
    if args.json:
        print(json.dumps(result))
    else:
        print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
