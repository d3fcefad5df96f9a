"""examples/kvserver started for real (2 workers, SO_REUSEPORT, sharded keys)
and driven by redis-py and raw sockets; stopped with SIGTERM and reaped."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from _runtime_helpers import workers_of

pytest.importorskip("zmq")

from test_resp_server import (
    check_client_semantics,
    check_pipeline_order,
    check_raw_protocol,
    start_server,
    stop_server,
)

from examples.kvserver.commands import shard_of
from examples.kvserver.resp import Decoder, Error, encode_command


@pytest.fixture(scope="module")
def kvserver() -> Iterator[tuple[int, psutil.Process]]:
    proc, port = start_server([sys.executable, "-m", "examples.kvserver", "--workers", "2",
                               "--port", "0"])
    try:
        yield port, psutil.Process(proc.pid)
    finally:
        children = psutil.Process(proc.pid).children(recursive=True)
        out = stop_server(proc, timeout=20)
        assert proc.returncode == 0, out
        _gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"workers left behind: {alive}"


def test_redis_py_semantics(kvserver: tuple[int, psutil.Process]) -> None:
    with redis.Redis(port=kvserver[0], socket_timeout=10) as r:
        check_client_semantics(r)


def test_redis_py_resp2(kvserver: tuple[int, psutil.Process]) -> None:
    with redis.Redis(port=kvserver[0], socket_timeout=10, protocol=2) as r:
        check_client_semantics(r)


def test_pipelined_replies_in_order_across_shards(kvserver: tuple[int, psutil.Process]) -> None:
    with redis.Redis(port=kvserver[0], socket_timeout=20) as r:
        check_pipeline_order(r, n=800)


def test_raw_protocol_errors_keep_the_connection(kvserver: tuple[int, psutil.Process]) -> None:
    check_raw_protocol(kvserver[0])


def test_every_worker_accepts_and_reaches_every_key(kvserver: tuple[int, psutil.Process]) -> None:
    port, proc = kvserver
    workers = workers_of(proc.pid)
    assert len(workers) == 2
    clients = [redis.Redis(port=port, socket_timeout=10) for _ in range(16)]
    try:
        for c in clients:
            assert c.ping()
        clients[0].flushdb()
        # The kernel spread the connections over both workers (SO_REUSEPORT).
        deadline = time.monotonic() + 5
        while True:
            per_worker = [
                sum(1 for c in w.net_connections("tcp")
                    if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)
                for w in workers
            ]
            if all(per_worker) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert all(per_worker), f"connections per worker: {per_worker}"
        # Every client writes its keys; every other client reads them all back: with
        # keys sharded over 2 workers and clients on both, half the reads hop workers.
        for i, c in enumerate(clients):
            c.mset({f"c{i}:k{j}": f"{i}.{j}" for j in range(20)})
        for i, c in enumerate(clients):
            other = (i + 7) % len(clients)
            keys = [f"c{other}:k{j}" for j in range(20)]
            assert c.mget(keys) == [f"{other}.{j}".encode() for j in range(20)]
        assert clients[0].dbsize() == 16 * 20
        assert clients[3].delete(*[f"c5:k{j}" for j in range(20)]) == 20
        assert clients[9].exists(*[f"c5:k{j}" for j in range(20)]) == 0
    finally:
        for c in clients:
            c.flushdb()
            c.close()


def test_client_that_vanishes_mid_pipeline_does_not_hurt_others(
    kvserver: tuple[int, psutil.Process],
) -> None:
    port = kvserver[0]
    burst = b"".join(b"*3\r\n$3\r\nSET\r\n$4\r\nk%03d\r\n$1\r\nv\r\n" % (i % 1000)
                     for i in range(20000))
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(burst[: len(burst) // 2] + b"*3\r\n$3\r\nSET")  # cut in the middle of a frame
    s.close()
    with redis.Redis(port=port, socket_timeout=10) as r:
        assert r.set("after", "ok")
        assert r.get("after") == b"ok"
        r.flushdb()


def _ask(sock: socket.socket, *args: str) -> object:
    """Send one command on a raw socket and read exactly one reply."""
    sock.sendall(encode_command(*args))
    return read_reply(sock)


def read_reply(sock: socket.socket) -> object:
    """Read exactly one reply from a raw socket."""
    dec = Decoder()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        dec.feed(chunk)
        got = dec.values()
        if got:
            return got[0]


def test_worker_crash_keeps_other_connections_and_the_shard_comes_back() -> None:
    proc, port = start_server([sys.executable, "-m", "examples.kvserver", "--workers", "2",
                               "--port", "0"])
    socks: list[socket.socket] = []
    try:
        sup = psutil.Process(proc.pid)
        workers = workers_of(sup.pid)
        assert len(workers) == 2
        # Shard i runs on the worker pinned to the i-th worker CPU.
        by_cpu = sorted(workers, key=lambda w: min(w.cpu_affinity()))
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            assert _ask(s, "PING") == "PONG"
            socks.append(s)
        owner = {}
        for w in workers:
            for c in w.net_connections("tcp"):
                if c.laddr and c.laddr.port == port and c.raddr:
                    owner[c.raddr.port] = w.pid
        victim, survivor = by_cpu[1], by_cpu[0]
        on_survivor = [s for s in socks if owner.get(s.getsockname()[1]) == survivor.pid]
        on_victim = [s for s in socks if owner.get(s.getsockname()[1]) == victim.pid]
        if not on_survivor or not on_victim:
            pytest.skip("the kernel put all 12 connections on one worker")
        keys = {shard_of(f"k{i}".encode(), 2): f"k{i}" for i in range(20)}
        mine, theirs = keys[0], keys[1]  # shard 0 survives, shard 1 dies
        c = on_survivor[0]
        assert _ask(c, "SET", mine, "kept") == "OK"
        assert _ask(c, "SET", theirs, "lost") == "OK"

        victim.kill()
        victim.wait(10)
        # The surviving worker's connection was not dropped, and its keys are there.
        assert _ask(c, "GET", mine) == b"kept"
        # The dead shard's key: an error while it is down, or nil once re-created
        # (in-memory data is gone), never the old value and never a hang.
        reply = _ask(c, "GET", theirs)
        assert reply is None or (isinstance(reply, Error) and "shard 1" in reply), reply
        # The dead worker's own connections are closed by the kernel.
        dead = on_victim[0]
        dead.settimeout(10)
        with pytest.raises((ConnectionError, OSError)):
            _ask(dead, "PING")

        # The supervisor restarts the worker; the shard accepts and answers again.
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    if _ask(s, "SET", theirs, "again") == "OK":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "shard 1 did not come back"
            time.sleep(0.1)
        assert _ask(c, "GET", theirs) == b"again"
        assert _ask(c, "GET", mine) == b"kept"
        assert len(workers_of(sup.pid)) == 2
    finally:
        for s in socks:
            s.close()
        out = stop_server(proc, timeout=20)
    assert proc.returncode == 0, out


@pytest.mark.parametrize("shard", [0, 1])
def test_client_that_does_not_read_is_paused_not_buffered(
    kvserver: tuple[int, psutil.Process], shard: int,
) -> None:
    """200 pipelined GETs of a 512 KiB value (100 MiB of replies) from a client that
    reads nothing yet: the worker stops serving it instead of buffering the replies,
    then serves them all, in order, once the client reads. Run for a key on each
    shard, so both the local path and the path through the other worker (replies
    fetched in chunks under the runtime's 8 MiB record limit) are exercised.
    Unbounded, the workers grow by ~200 MiB here; bounded, by at most 1 MiB of
    output plus 32 queued replies (16 MiB), counted in both workers."""
    port, sup = kvserver
    key = next(f"big{i}" for i in range(100) if shard_of(f"big{i}".encode(), 2) == shard)
    value = os.urandom(512 * 1024)
    with redis.Redis(port=port, socket_timeout=10) as r:
        r.set(key, value)
    workers = workers_of(sup.pid)
    rss_before = sum(w.memory_info().rss for w in workers)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        burst = encode_command("GET", key) * 200
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while sent < len(burst) and time.monotonic() < deadline:
            try:
                sent += s.send(burst[sent:])
            except BlockingIOError:
                time.sleep(0.05)
        time.sleep(0.5)  # let the server do whatever it would do with what it got
        grown = sum(w.memory_info().rss for w in workers) - rss_before
        assert grown < 64 * 2**20, f"workers grew by {grown / 2**20:.0f} MiB for one slow client"
        s.setblocking(True)
        reply = b"$%d\r\n" % len(value) + value + b"\r\n"
        want = len(reply) * 200
        got = bytearray()
        while sent < len(burst) or len(got) < want:
            if sent < len(burst):
                sent += s.send(burst[sent : sent + 65536])
            chunk = s.recv(1 << 20)
            assert chunk, "server closed the connection"
            got += chunk
            assert got[:1] != b"-", bytes(got[:200])  # an error reply instead of the value
        assert got == reply * 200
    finally:
        s.close()


def test_values_too_large_to_cross_workers_get_an_error_not_a_hang(
    kvserver: tuple[int, psutil.Process],
) -> None:
    port = kvserver[0]
    keys = [next(f"huge{i}" for i in range(100) if shard_of(f"huge{i}".encode(), 2) == sh)
            for sh in (0, 1)]
    value = os.urandom(9 << 20)  # over the runtime's 8 MiB record: cannot travel in a ring
    with redis.Redis(port=port, socket_timeout=20) as r:
        outcomes = []
        for k in keys:
            try:
                outcomes.append(r.set(k, value))
            except redis.ResponseError as exc:
                outcomes.append("error" if "too large" in str(exc) else str(exc))
        # The key on the connection's own worker is stored; the other is refused.
        assert sorted(map(str, outcomes)) == ["True", "error"]
        assert r.ping()
        stored = keys[outcomes.index(True)]
        assert r.get(stored) == value
        r.delete(*keys)


def test_second_server_on_the_same_port_refuses_instead_of_sharing_it(
    kvserver: tuple[int, psutil.Process],
) -> None:
    import subprocess

    port = kvserver[0]
    proc = subprocess.run([sys.executable, "-m", "examples.kvserver", "--port", str(port)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert f"cannot use 127.0.0.1:{port}" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "examples.kvserver"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "KVSERVER_PORT": "http"},
                         cwd=Path(__file__).resolve().parents[1])
    assert bad.returncode == 2
    assert "KVSERVER_PORT='http' is not a port number" in bad.stderr
    with redis.Redis(port=port, socket_timeout=10) as r:
        assert r.ping()
