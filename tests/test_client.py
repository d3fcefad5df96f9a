"""``actorq.connect`` from an unrelated process (this test process), sync and
async, plus garbage on the control socket: answered, logged, never fatal."""

from __future__ import annotations

import asyncio
import signal

import msgpack
import pytest
import zmq
from _runtime_helpers import check_counter_calls, finish, start_app, write_app

import actorq

SERVICE = r"""
import actorq

@actorq.actor
class Counter:
    def __init__(self, start=0):
        self.value = start
    def add(self, n=1):
        self.value += n
        return self.value
    def fail(self):
        raise ValueError("bad day")
    def me(self):
        return actorq.self_ref()

async def main(rt):
    await rt.spawn(Counter, 10, name="hits")
    print("ADDRESS " + rt.address, flush=True)
    while True:
        await actorq.sleep(3600)
"""


@pytest.fixture
def service(tmp_path, no_leaks):
    write_app(tmp_path, SERVICE)
    proc = start_app(tmp_path, "app:main", "--workers", "2")
    line = proc.stdout.readline()
    assert line.startswith("ADDRESS "), proc.stderr.read() if proc.poll() is not None else line
    yield line.split()[1], tmp_path / "rt", proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    finish(proc)


def test_sync_client(service) -> None:
    address, rtdir, proc = service
    with actorq.connect(address) as client:
        hits = client.lookup("hits")
        check_counter_calls(hits)
        with pytest.raises(actorq.ActorNotFound):
            client.lookup("nobody")
        with pytest.raises(TypeError, match="argument 0"):
            hits.add(object())
        stats = client.stats()
        assert [a["name"] for a in stats["actors"]] == ["hits"]
    # the runtime directory works as an address too
    with actorq.connect(rtdir) as client:
        hits = client.lookup("hits")
        hits.stop()
        with pytest.raises(actorq.ActorDied):
            hits.add(1)
        client.shutdown()
    rc, _, err = finish(proc)
    assert rc == 0, err


def test_async_client(service) -> None:
    address, _, _ = service

    async def go() -> list[int]:
        client = actorq.connect(address, asyncio=True)
        try:
            hits = await client.lookup("hits")
            results = await asyncio.gather(*(hits.add(1) for _ in range(20)))
            with pytest.raises(actorq.RemoteError):
                await hits.fail()
            return sorted(results)
        finally:
            client.close()

    assert asyncio.run(go()) == list(range(11, 31))


def test_malformed_frames_are_answered_and_survived(service) -> None:
    address, _, proc = service
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        bad = [
            b"\xc1garbage",  # not msgpack
            msgpack.packb([99, "lookup", 1, {}]),  # wrong version
            msgpack.packb({"not": "a list"}),
            msgpack.packb([1, "no-such-op", 7, {}]),
        ]
        for frame in bad:
            sock.send(frame)
            assert sock.poll(10_000), "no answer to a malformed frame"
            reply = msgpack.unpackb(sock.recv())
            assert reply[1] == "err"
        sock.send_multipart([b"two", b"frames"])
        assert sock.poll(10_000)
        assert msgpack.unpackb(sock.recv())[1] == "err"
        # a lookup with a missing field is an error reply, not a crash
        sock.send(msgpack.packb([1, "ask", 9, {"nothing": 1}]))
        assert sock.poll(10_000)
        assert msgpack.unpackb(sock.recv())[1] == "err"
    finally:
        sock.close()
        ctx.term()
    assert proc.poll() is None
    with actorq.connect(address) as client:
        assert client.lookup("hits").add(0) == 10
        assert client.stats()["control_malformed"] >= 4


def test_actorq_stats_command(service) -> None:
    from _runtime_helpers import run_python

    _, rtdir, _ = service
    proc = run_python("-m", "actorq", "stats", str(rtdir))
    assert proc.returncode == 0, proc.stderr
    assert "2 workers" in proc.stdout
    assert "hits" in proc.stdout
    proc = run_python("-m", "actorq", "stats", str(rtdir), "--json")
    import json

    assert json.loads(proc.stdout)["actors"][0]["name"] == "hits"
