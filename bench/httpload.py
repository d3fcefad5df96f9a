"""A small HTTP/1.1 load generator: keep-alive connections, one request in
flight on each, for a fixed time; returns requests per second.

    python -m bench httpload PORT PATH [--seconds 3] [--connections 32]

Only loopback. It parses just enough of a response (status line, headers,
``Content-Length`` body) for the servers we load (uvicorn): it is a meter,
not a client.
"""

from __future__ import annotations

import argparse
import asyncio
import time


async def _connection(port: int, request: bytes, until: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while time.monotonic() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"load: unexpected answer {head[:60]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done += 1
    finally:
        counts.append(done)
        writer.close()
        await writer.wait_closed()


async def load(port: int, path: str, seconds: float = 3.0, connections: int = 32) -> float:
    """Requests per second that ``connections`` keep-alive clients got from ``path``."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    counts: list[int] = []
    began = time.monotonic()
    until = began + seconds
    await asyncio.gather(*(_connection(port, request, until, counts) for _ in range(connections)))
    return sum(counts) / (time.monotonic() - began)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench httpload", description=__doc__)
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args(argv)
    rate = asyncio.run(load(args.port, args.path, args.seconds, args.connections))
    print(f"{rate:,.0f} requests/s")
    return 0
