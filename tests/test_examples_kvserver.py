"""examples/kvserver started for real (2 workers, SO_REUSEPORT, sharded keys)
and driven by redis-py and raw sockets; stopped with SIGTERM and reaped."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import psutil
import pytest
import redis

pytest.importorskip("actorq.supervisor")

from test_resp_server import (
    check_client_semantics,
    check_pipeline_order,
    check_raw_protocol,
    start_server,
    stop_server,
)


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
    workers = proc.children()
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
