"""redis-py against the asyncio reference RESP server (bench/resp_asyncio.py).

This proves the protocol layer with a standard client before the actorq
kvserver (tests/test_examples_kvserver.py) is judged by the same checks:
``check_client_semantics`` and friends are imported there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from actorq.testing import wait_until

ROOT = Path(__file__).resolve().parents[1]
# Loaded now, not in the forked child: preexec_fn must not take locks (dlopen's).
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if pytest dies (killed, not torn down),
    so a server started by a test never outlives the test run."""
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def start_server(argv: list[str], env: dict[str, str] | None = None,
                 timeout: float = 90.0, cwd: Path = ROOT) -> tuple[subprocess.Popen[str], int]:
    """Start a server that prints ``listening on HOST:PORT``; return it and the port."""
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})}, start_new_session=True, preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + timeout
    lines = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1])
    stop_server(proc)
    raise AssertionError(f"{argv} did not start listening: {''.join(lines)}")


def stop_server(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """SIGTERM, wait, SIGKILL the whole group if needed; return what it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    return out


def raw_exchange(port: int, data: bytes, expect_bytes: int | None = None,
                 timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until ``expect_bytes`` arrived or the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while expect_bytes is None or len(got) < expect_bytes:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def check_client_semantics(r: redis.Redis) -> None:
    """What a kv server must do for redis-py, one command family at a time."""
    r.flushdb()
    assert r.ping() is True
    assert r.echo("hello") == b"hello"
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True) is True
    assert r.set("fresh", "1", xx=True) is None
    assert r.set("e", "1", ex=100) is True
    assert 99 <= r.ttl("e") <= 100
    assert r.set("p", "1", px=50) is True
    assert r.ttl("k") == -1
    assert r.ttl("missing") == -2
    assert r.incr("n") == 1
    assert r.incrby("n", 10) == 11
    assert r.decr("n") == 10
    assert r.decrby("n", 3) == 7
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("k")
    assert r.mset({"m1": "a", "m2": "b", "m3": "c"}) is True
    assert r.mget(["m1", "nope", "m3", "k"]) == [b"a", None, b"c", b"w"]
    assert r.exists("m1", "m2", "nope") == 2
    assert r.delete("m1", "m2", "nope") == 2
    assert r.expire("m3", 50) is True
    assert r.expire("nope", 50) is False
    wait_until(lambda: r.get("p") is None, what="p to expire (px=50)")
    assert r.dbsize() == 4  # k e n m3, and not the expired p
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("HSET", "h", "f", "v")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    assert r.get("k") == b"w"  # the connection survived the errors
    big = os.urandom(300_000)
    assert r.set("big", big) is True
    assert r.get("big") == big
    assert r.flushdb() is True
    assert r.dbsize() == 0


def check_pipeline_order(r: redis.Redis, n: int = 500) -> None:
    """Pipelined replies come back in request order, errors in their place."""
    r.flushdb()
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.set(f"key:{i}", i)
        p.incr(f"key:{i}")
        if i % 50 == 0:
            p.execute_command("NOSUCH", i)
        p.get(f"key:{i}")
    out = p.execute(raise_on_error=False)
    expect: list[object] = []
    for i in range(n):
        expect += [True, i + 1]
        if i % 50 == 0:
            expect.append("error")
        expect.append(str(i + 1).encode())
    got = ["error" if isinstance(x, redis.ResponseError) else x for x in out]
    assert got == expect
    assert r.dbsize() == n


def check_raw_protocol(port: int) -> None:
    """Inline commands, malformed frames answered with errors, QUIT closes."""
    assert raw_exchange(port, b"HELLO 4\r\nHELLO x\r\nQUIT\r\n") == (
        b"-NOPROTO unsupported protocol version\r\n"
        b"-ERR Protocol version is not an integer or out of range\r\n+OK\r\n"
    )
    reply = raw_exchange(port, b"PING\r\n*1\r\n$zz\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nQUIT\r\n")
    assert reply.startswith(b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n")
    assert reply.endswith(b"$2\r\nhi\r\n+OK\r\n")


@pytest.fixture(scope="module")
def asyncio_server() -> Iterator[int]:
    proc, port = start_server([sys.executable, "-m", "bench", "resp_asyncio", "--port", "0"])
    try:
        yield port
    finally:
        stop_server(proc)
        assert proc.returncode == 0


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_semantics(asyncio_server: int, protocol: int) -> None:
    with redis.Redis(port=asyncio_server, socket_timeout=10, protocol=protocol) as r:
        check_client_semantics(r)


def test_redis_py_pipeline(asyncio_server: int) -> None:
    with redis.Redis(port=asyncio_server, socket_timeout=10) as r:
        check_pipeline_order(r)


def test_raw_protocol(asyncio_server: int) -> None:
    check_raw_protocol(asyncio_server)
