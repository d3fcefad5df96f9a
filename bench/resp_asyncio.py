"""The reference the kv example is measured against: a single-process asyncio
RESP server over the *same* protocol and command modules.

It is what a careful Python programmer writes without actorq: one process,
``asyncio.Protocol`` callbacks (not streams, which cost ~2x per message
here; see ``/work/shared/notes/loop-facts.md``), one :class:`Store`.
Sharing ``examples/kvserver``'s parser and command table means the
comparison measures the runtime (loop, workers, rings), not two parsers.

    python -m bench resp_asyncio [--port 6390] [--uvloop] [--cpu N]

prints ``listening on 127.0.0.1:PORT`` once it accepts connections, and
stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sys

from examples.kvserver.commands import execute, hello, session_command
from examples.kvserver.resp import RequestParser, encode_error, to_resp3
from examples.kvserver.store import Store

from ._common import pin


class RespProtocol(asyncio.Protocol):
    """One connection: parse what arrived, answer every complete request in one write."""

    _ids = itertools.count(1)

    def __init__(self, store: Store) -> None:
        self.store = store
        self.proto = 2
        self.id = next(self._ids)
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        store = self.store
        out = []
        quit_ = False
        for req in self.parser.feed(data):
            if isinstance(req, str):  # ProtocolError
                out.append(encode_error(req))
                continue
            session = session_command(req)
            if session is None:
                reply = execute(store, req)
                out.append(reply if self.proto == 2 else to_resp3(reply))
            elif session == b"HELLO":
                reply, self.proto = hello(req, self.proto, self.id)
                out.append(reply)
            else:  # QUIT
                out.append(execute(store, req))
                quit_ = True
                break
        assert self.transport is not None
        self.transport.write(b"".join(out))
        if quit_:
            self.transport.close()


async def serve(host: str, port: int, ready: asyncio.Future[int] | None = None) -> None:
    store = Store()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RespProtocol(store), host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]

    async def sweep() -> None:
        while True:
            await asyncio.sleep(0.1)
            store.sweep(limit=200)

    sweeper = loop.create_task(sweep())
    print(f"listening on {host}:{bound}", flush=True)
    if ready is not None:
        ready.set_result(bound)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await stop
    finally:
        sweeper.cancel()
        server.close()
        await server.wait_closed()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench resp_asyncio", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("KVSERVER_PORT", "6390")))
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's loop")
    ap.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        pin(args.cpu)
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
