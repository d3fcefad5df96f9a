"""A line-protocol server on actorq.net, run as a child by tests/test_net_server.py.

    python tests/_net_server.py [LIMITS] [--nofile N] [--handoff PATH]

One request per line: ``PING`` -> ``PONG``; ``STATS`` -> the server's stats
as one JSON line; ``BIG n`` -> n bytes then a newline; ``WHERE`` -> this
process's pid; ``AGE`` -> seconds since the connection was accepted (by
whichever worker); ``MOVE path`` -> ``MOVING``, then the connection moves
to the server receiving handoffs at ``path`` once it is quiet (or stays, if
that fails); anything else is echoed. With ``--handoff PATH`` the server
receives moved connections at PATH. Prints ``listening on 127.0.0.1:PORT`` once it accepts; warnings
(the server's episode lines) go to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys

from actorq.loop import Loop
from actorq.net import Connection, Handoff, Limits, Server

#: This process's end of the handoff channels (``MOVE``).
HANDOFF: Handoff | None = None


class Lines(Connection):
    def __init__(self, server: Server, sock, peer: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(server, sock, peer)
        self.buf = b""

    def on_data(self, data: bytes) -> int:
        buf = self.buf + data
        out = []
        start = 0
        while True:
            eol = buf.find(b"\n", start)
            if eol < 0:
                break
            line = buf[start:eol].strip()
            start = eol + 1
            if line == b"PING":
                out.append(b"PONG\n")
            elif line == b"STATS":
                out.append(json.dumps(self.server.stats()).encode() + b"\n")
            elif line.startswith(b"BIG "):
                out.append(b"x" * int(line[4:]) + b"\n")
            elif line == b"WHERE":
                out.append(b"%d\n" % os.getpid())
            elif line == b"AGE":
                out.append(b"%.3f\n" % (self.loop.time() - self.born))
            elif line.startswith(b"MOVE "):
                out.append(b"MOVING\n")
                self.loop.call_soon(self.move, line[5:].decode())
            else:
                out.append(line + b"\n")
        self.buf = buf[start:]
        if out:
            self.write(b"".join(out))
        return len(self.buf)

    def move(self, path: str) -> None:
        assert HANDOFF is not None
        if not HANDOFF.send(self, path):
            self.write(b"STAYED\n")


def main(argv: list[str]) -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(name)s: %(message)s")
    limits = Limits.parse(argv[0] if argv and not argv[0].startswith("--") else "")
    if "--nofile" in argv:
        n = int(argv[argv.index("--nofile") + 1])
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    loop = Loop()
    server = Server(Lines, "127.0.0.1", 0, limits=limits, loop=loop, name="net-test")
    server.start()
    global HANDOFF
    HANDOFF = Handoff(server, argv[argv.index("--handoff") + 1] if "--handoff" in argv else "")
    if "--handoff" in argv:
        HANDOFF.start()  # receive here too (without it: send only)
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
