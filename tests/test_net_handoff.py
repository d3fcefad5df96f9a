"""actorq.net.Handoff between two real server processes (tests/_net_server.py):
a connection moves with its descriptor, keeps its order and its sweep clocks,
is refused by the receiver's caps like an accepted one, and a receiver that
dies with connections in flight costs those connections and nothing else."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_net_server import Server, ask, closed_by_server

from actorq.testing import wait_until


def start(limits: str, handoff: Path | None = None) -> Server:
    return Server(limits, *(["--handoff", str(handoff)] if handoff else []))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server, Path]]:
    """Server A (sends) and server B (receives at the returned path)."""
    path = tmp_path / "b.handoff"
    a = start("")
    b = start("", path)
    try:
        yield a, b, path
    finally:
        a.stop()
        b.stop()


def lines(c: socket.socket, n: int) -> list[bytes]:
    """Read exactly ``n`` reply lines."""
    got = b""
    while got.count(b"\n") < n:
        chunk = c.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    return got.split(b"\n")[:n]


def pid_of(s: Server) -> int:
    return s.proc.pid


def test_a_moved_connection_keeps_working_in_order(pair: tuple[Server, Server, Path]) -> None:
    a, b, path = pair
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as c:
        assert ask(c, b"WHERE") == b"%d" % pid_of(a)
        # MOVE and a burst behind it in one write: what A read it answers, the rest
        # waits in the socket for B; the client sees every answer once, in order.
        lines = [b"%d" % i for i in range(2000)]
        c.sendall(b"MOVE " + bytes(path) + b"\n" + b"\n".join(lines[:1000]) + b"\n")
        time.sleep(0.05)
        c.sendall(b"\n".join(lines[1000:]) + b"\n")
        got = b""
        want = b"MOVING\n" + b"\n".join(lines) + b"\n"
        while len(got) < len(want):
            chunk = c.recv(65536)
            assert chunk, "connection closed"
            got += chunk
        assert got == want
        assert ask(c, b"WHERE") == b"%d" % pid_of(b)
        assert ask(c, b"PING") == b"PONG"
    assert a.stats()["handed_off"] == 1
    assert b.stats()["adopted"] == 1


def test_sweep_clocks_travel_with_the_connection(pair: tuple[Server, Server, Path]) -> None:
    a, b, path = pair
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as c:
        assert ask(c, b"PING") == b"PONG"
        time.sleep(1.0)
        assert ask(c, b"MOVE " + bytes(path)) == b"MOVING"
        wait_until(lambda: ask(c, b"WHERE") == b"%d" % pid_of(b), timeout=10)
        # B counts the connection's age from when A accepted it, not from the move.
        assert float(ask(c, b"AGE")) >= 1.0


def test_receivers_connection_cap_refuses_a_moved_connection(tmp_path: Path) -> None:
    path = tmp_path / "b.handoff"
    a = start("")
    b = start("max_connections=1", path)
    try:
        first = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        second = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        with first, second:
            assert ask(first, b"MOVE " + bytes(path)) == b"MOVING"
            wait_until(lambda: ask(first, b"WHERE") == b"%d" % pid_of(b), timeout=10)
            assert ask(second, b"MOVE " + bytes(path)) == b"MOVING"
            second.settimeout(10)
            assert second.recv(100) == b""  # B is full: refused and closed, like at accept
            assert ask(first, b"PING") == b"PONG"
        stats = b.stats()
        assert stats["adopted"] == 1
        assert stats["refused_conn_cap"] == 1
    finally:
        a.stop()
        b.stop()


def test_a_move_to_nowhere_leaves_the_connection_where_it_is(tmp_path: Path) -> None:
    a = start("")
    try:
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as c:
            c.sendall(b"MOVE " + bytes(tmp_path / "nobody.handoff") + b"\nPING\n")
            assert lines(c, 3) == [b"MOVING", b"PONG", b"STAYED"]
            assert ask(c, b"WHERE") == b"%d" % pid_of(a)
        stats = a.stats()
        assert stats["handoff_failed"] == 1
        assert "handed_off" not in stats
    finally:
        a.stop()


def test_receiver_dying_with_moves_in_flight_loses_nothing_else(
    pair: tuple[Server, Server, Path],
) -> None:
    a, b, path = pair
    stayer = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    movers = [socket.create_connection(("127.0.0.1", a.port), timeout=10) for _ in range(5)]
    try:
        assert ask(stayer, b"PING") == b"PONG"
        os.kill(pid_of(b), signal.SIGSTOP)  # B neither adopts nor reads: the moves stay queued
        try:
            for m in movers:
                assert ask(m, b"MOVE " + bytes(path)) == b"MOVING"
            wait_until(lambda: a.stats().get("handed_off") == 5, timeout=10)
            for m in movers:
                m.sendall(b"PING\n")  # waits in the socket for B
            assert ask(stayer, b"PING") == b"PONG"
        finally:
            os.kill(pid_of(b), signal.SIGKILL)
            os.kill(pid_of(b), signal.SIGCONT)
            b.proc.wait(10)
        # The kernel closed the descriptors queued in the dead receiver: each mover
        # sees its connection end instead of hanging, and A is not hurt.
        for m in movers:
            wait_until(lambda m=m: closed_by_server(m), timeout=10)
        assert ask(stayer, b"PING") == b"PONG"
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as late:
            late.sendall(b"MOVE " + bytes(path) + b"\nPING\n")
            assert lines(late, 3) == [b"MOVING", b"PONG", b"STAYED"]
        assert a.stats()["handoff_failed"] == 1
        assert not psutil.pid_exists(pid_of(b)) or psutil.Process(pid_of(b)).status() == "zombie"
    finally:
        stayer.close()
        for m in movers:
            m.close()


def test_records_that_are_not_handoffs_are_dropped_and_counted(
    pair: tuple[Server, Server, Path],
) -> None:
    _a, b, path = pair
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as chan:
        chan.connect(str(path))
        chan.send(b"no descriptor")
        r, w = os.pipe()
        try:
            socket.send_fds(chan, [b"\x92\x90\xc0"], [r])  # no sweep counters, and a pipe
            socket.send_fds(chan, [b"not msgpack \xc1"], [w])
        finally:
            os.close(r)
            os.close(w)
    wait_until(lambda: b.stats().get("handoff_bad") == 3, timeout=10)
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as c:
        assert ask(c, b"PING") == b"PONG"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
