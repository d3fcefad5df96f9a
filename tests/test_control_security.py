"""Who may say what on the control socket: workers cannot be impersonated,
runtime-internal ops are refused from clients, and bad frames are counted
without flooding the log."""

from __future__ import annotations

import signal
import time

import msgpack
import pytest
import zmq
from _runtime_helpers import finish, start_app, wait_for, write_app
from test_client import SERVICE  # a Counter named "hits"; main prints the address

import actorq
from actorq._runtime.control import (
    CLIENT_OPS,
    INTERNAL_OPS,
    Complaints,
    Trust,
    new_secret,
    trusted_identity,
)
from actorq.cli.stats import render

HEARTBEAT_S = 0.25  # stall_timeout / 4


@pytest.fixture
def service(tmp_path, no_leaks):
    write_app(tmp_path, SERVICE)
    (tmp_path / "actorq.toml").write_text(f"stall_timeout = {HEARTBEAT_S * 4}\n")
    proc = start_app(tmp_path, "app:main", "--workers", "2")
    line = proc.stdout.readline()
    assert line.startswith("ADDRESS "), proc.stderr.read() if proc.poll() is not None else line
    yield line.split()[1], proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    finish(proc)


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _dealer(ctx: zmq.Context, address: str, identity: bytes | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(address)
    return sock


def _stats(address: str) -> dict:
    with actorq.connect(address) as client:
        return client.stats()


# --- unit: identities -------------------------------------------------------------------


def test_trusted_identities_need_the_secret() -> None:
    secret = new_secret()
    trust = Trust(secret)
    w1 = trusted_identity("w1", secret)
    assert w1.startswith(b"w1.")
    assert len(w1) > 20
    assert trust.role_of(w1) == "w1"
    assert trust.identity("main") == trusted_identity("main", secret)
    assert trust.role_of(trusted_identity("main", secret)) == "main"
    for forged in (
        b"w1",
        b"w1.",
        b"w1." + b"0" * 32,
        trusted_identity("w1", new_secret()),  # another runtime's
        w1[:-1] + (b"0" if w1[-1:] != b"0" else b"1"),
        trusted_identity("w2", secret).replace(b"w2.", b"w1."),  # a token of another role
        b"\x00random",
        b"\xff\xfe.x",
        None,
    ):
        assert trust.role_of(forged) is None, forged
    assert secret.hex() not in repr(trust)
    with pytest.raises(ValueError, match=r"without '\.'"):
        trusted_identity("w.1", secret)


def test_client_and_internal_ops_are_disjoint_and_cover_the_supervisor() -> None:
    assert not CLIENT_OPS & INTERNAL_OPS
    assert {"hello", "stopped"} <= INTERNAL_OPS
    assert {
        *("lookup", "spawn", "stats", "ping", "workers", "ask", "tell", "stop", "shutdown"),
        "channel",  # a ticket for a direct channel to a worker (outside.py)
    } == CLIENT_OPS


def test_complaints_log_the_first_then_a_summary_at_most_every_interval(caplog) -> None:
    now = [0.0]
    c = Complaints("bad things", every=10.0, clock=lambda: now[0])
    with caplog.at_level("DEBUG", logger="actorq.control"):
        for i in range(2000):
            now[0] = i * 0.001
            c("bad thing %d", i)
        now[0] = 12.0
        c("bad thing %d", 2000)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert c.count == 2001
    assert len(warnings) == 2, warnings
    assert "bad thing 0" in warnings[0]
    assert "2000 bad things in the last 12 s (2001 in all)" in warnings[1]


# --- end to end ------------------------------------------------------------------------


def test_a_peer_posing_as_a_worker_gets_nothing_and_cannot_block_shutdown(service, zctx) -> None:
    address, proc = service
    impostors = [_dealer(zctx, address, b"w%d" % i) for i in (1, 2)]
    deadline = time.monotonic() + HEARTBEAT_S * 6  # several heartbeats to each worker
    while time.monotonic() < deadline:
        for sock in impostors:
            assert not sock.poll(50), f"{sock.getsockopt(zmq.IDENTITY)!r} received {sock.recv()!r}"
    with actorq.connect(address) as client:
        assert client.lookup("hits").add(1) == 11
        assert client.stats()["workers"][0].get("error") is None
    for sock in impostors:
        sock.close()
    time.sleep(HEARTBEAT_S * 2)  # were the routes theirs, they would now be gone
    with actorq.connect(address) as client:
        assert client.lookup("hits").add(1) == 12
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc, timeout=20)
    assert rc == 0, err
    assert "did not stop" not in err


def test_internal_ops_from_a_client_are_refused_and_counted(service, zctx) -> None:
    address, proc = service
    with actorq.connect(address) as client:
        aid = client.lookup("hits").id
    sock = _dealer(zctx, address)
    hello = {"node": 1, "pid": 1, "cpu": 0, "incarnation": 0}
    sock.send(msgpack.packb([1, "hello", 5, hello]))
    assert sock.poll(10_000), "a refused request is still answered"
    reply = msgpack.unpackb(sock.recv())
    assert reply[1:3] == ["err", 5]
    assert "runtime's own processes" in reply[3]["message"]
    sock.send(msgpack.packb([1, "stopped", 0, {"id": aid}]))  # would forget the actor
    sock.send(msgpack.packb([1, "hello", 0, hello]))
    sock.send(msgpack.packb([1, "ok", 1, {"pid": 1}]))  # an answer nobody asked it for
    wait_for(lambda: _stats(address)["control_refused"] >= 3, what="3 refused frames")
    assert not sock.poll(200), "a notice or a reply got an answer"
    with actorq.connect(address) as client:
        hits = client.lookup("hits")
        assert hits.id == aid
        assert hits.add(1) == 11
        stats = client.stats()
        assert stats["control_refused"] == 3
        assert "0 malformed frames, 3 refused" in render(stats)  # actorq stats shows them
        assert all(not w.get("error") for w in stats["workers"])
    assert proc.poll() is None


def test_a_flood_of_malformed_frames_is_counted_not_logged(service, zctx) -> None:
    address, proc = service
    sock = _dealer(zctx, address)
    for i in range(2000):
        sock.send(b"\xc1garbage %d" % i)
    wait_for(lambda: _stats(address)["control_malformed"] >= 2000, what="2000 malformed frames")
    assert _stats(address)["control_malformed"] == 2000
    with actorq.connect(address) as client:
        assert client.lookup("hits").add(1) == 11
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "malformed" in ln]
    assert 1 <= len(lines) <= 3, err
