"""One request made of many 1-byte arguments: the kv server's worker CPU for it.

    python -m bench bigrequest [--sizes 0.875,1.75,3.5] [--repo DIR]

Starts ``python -m examples.kvserver --workers 1 --port 0`` from ``--repo``
(default: this checkout; point it at another checkout to compare), sends one
``DEL`` of N one-byte keys per size (about 7 bytes an argument), and prints
the worker's user+system CPU seconds spent between sending it and reading
the reply. The issue's target: <= 0.1 s for 3.5 MiB (redis-server: 0.04 s).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def measure(repo: Path, sizes: list[float]) -> list[tuple[float, float]]:
    env = dict(os.environ, PYTHONPATH=str(repo))
    cmd = [sys.executable, "-m", "examples.kvserver", "--workers", "1", "--port", "0"]
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        while "listening on" not in (line := proc.stdout.readline()):
            if not line:
                raise RuntimeError("the kv server did not start")
        port = int(line.split()[-1].rsplit(":", 1)[1])
        time.sleep(0.5)  # let the worker finish starting (its CPU is what we count)
        kids = psutil.Process(proc.pid).children()
        worker = next(k for k in kids if k.name().startswith("actorq-w"))
        out = []
        for mib in sizes:
            n = int(mib * (1 << 20) / 7)
            body = b"".join([b"*%d\r\n$3\r\nDEL\r\n" % (n + 1)] + [b"$1\r\nx\r\n"] * n)
            with socket.create_connection(("127.0.0.1", port)) as s:
                before = sum(worker.cpu_times()[:2])
                s.sendall(body)
                s.recv(100)
                out.append((mib, sum(worker.cpu_times()[:2]) - before))
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench bigrequest", description=__doc__)
    ap.add_argument("--sizes", default="0.875,1.75,3.5", help="MiB per request, comma-separated")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    args = ap.parse_args(argv)
    sizes = [float(x) for x in args.sizes.split(",")]
    for mib, cpu in measure(Path(args.repo), sizes):
        print(f"{mib:g} MiB of 1-byte arguments: {cpu:.2f} s of worker CPU")
    return 0
