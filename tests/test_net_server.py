"""actorq.net against real clients on loopback: slowloris, an fd flood, a client
that never reads, deep pipeliners beside polite clients, and the prefail order.

The server is tests/_net_server.py (a line protocol on actorq.net) in a child
process, started and reaped by each test."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_resp_server import start_server, stop_server

from actorq.net import FD_WEIGHT, Connection, Limits, prefail_order
from actorq.testing import wait_until

SERVER = str(Path(__file__).with_name("_net_server.py"))


@pytest.fixture(autouse=True)
def _nofile() -> Iterator[None]:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard one (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Server:
    def __init__(self, limits: str, *extra: str) -> None:
        self.proc, self.port = start_server([sys.executable, SERVER, limits, *extra],
                                           env={"PYTHONPATH": str(Path(SERVER).parents[1])})
        self.out = ""

    def stop(self) -> str:
        self.out = stop_server(self.proc)
        return self.out

    def stats(self) -> dict[str, int]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            return json.loads(ask(s, b"STATS"))


def ask(s: socket.socket, line: bytes) -> bytes:
    s.sendall(line + b"\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        got += chunk
    return got[:-1]


def closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def fd_limit_allows(n: int) -> int:
    return min(n, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 200) // 2)


# ------------------------------------------------------------------ unit


def test_limits_parse() -> None:
    lim = Limits.parse("idle_timeout=0, max_output=1024 sweep_interval=0.5")
    assert (lim.idle_timeout, lim.max_output, lim.sweep_interval) == (0.0, 1024, 0.5)
    assert lim.max_input == Limits().max_input
    with pytest.raises(ValueError, match="not name=value"):
        Limits.parse("bogus=1")
    with pytest.raises(ValueError, match="not a number"):
        Limits.parse("max_output=lots")


def _fake(held: int, out: int, since_progress: float, now: float = 1000.0) -> Connection:
    c = Connection.__new__(Connection)
    c.held, c.outbytes, c._t_prog = held, out, now - since_progress
    c.fd, c.peer = -1, "test"
    return c


def test_prefail_order_takes_waste_first() -> None:
    """Resources held times time without progress: the slowloris connection
    (never served, there a minute) and the stuck reader with megabytes queued
    go before the idle keep-alive; busy clients go last."""
    slowloris = _fake(held=200, out=0, since_progress=60)
    stuck_reader = _fake(held=0, out=4 << 20, since_progress=3)
    idle = _fake(held=0, out=0, since_progress=30)
    busy_big = _fake(held=16 << 10, out=16 << 10, since_progress=0)
    busy = _fake(held=0, out=0, since_progress=0)
    order = prefail_order([busy, idle, busy_big, stuck_reader, slowloris], now=1000.0)
    assert order == [stuck_reader, slowloris, idle, busy_big, busy]
    # Age without progress is what separates connections that hold the same.
    young, old = _fake(0, 0, 1), _fake(0, 0, 100)
    assert prefail_order([young, old], now=1000.0) == [old, young]
    # An empty connection still weighs its descriptor.
    assert FD_WEIGHT > 0


# ------------------------------------------------------------------ real clients


def test_slowloris_connections_are_closed_and_polite_clients_served() -> None:
    n = fd_limit_allows(2000)
    srv = Server("first_request_timeout=1 request_timeout=1 min_rate=100 sweep_interval=0.2 "
                 "max_connections=5000")
    lorises: list[socket.socket] = []
    try:
        polite = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        assert ask(polite, b"PING") == b"PONG"
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            # Half never finish a first request; half finish one, then dribble.
            s.sendall(b"GET /" if i % 2 else b"PING\nGET /")
            lorises.append(s)
        answered = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for s in lorises[answered % n :: 97][:5]:
                try:
                    s.send(b"x")  # a byte now and then: under min_rate
                except OSError:
                    pass
            assert ask(polite, b"PING") == b"PONG"
            answered += 1
            st = srv.stats()
            if st.get("closed_first_request_timeout", 0) + st.get("closed_request_timeout", 0) >= n:
                break
            time.sleep(0.05)
        st = srv.stats()
        assert st["closed_first_request_timeout"] >= n // 2 - 5, st
        assert st["closed_request_timeout"] >= n // 2 - 5, st
        assert answered > 10
        assert ask(polite, b"PING") == b"PONG"  # the polite client was never closed
        assert wait_until(lambda: all(closed_by_server(s) for s in lorises[::50]), timeout=10)
    finally:
        for s in lorises:
            s.close()
        out = srv.stop()
    # One line when each episode started (and at most one when it ended).
    for reason in ("first_request_timeout", "request_timeout"):
        assert out.count(f"closing connections: {reason}") == 1, out
        assert out.count(f": {reason} episode over") <= 1, out


def test_fd_flood_pauses_accepting_keeps_clients_and_logs_once() -> None:
    srv = Server("sweep_interval=0.2 accept_retry=0.1 prefail_after=0.5", "--nofile", "48")
    flood: list[socket.socket] = []
    try:
        polite = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(4)]
        for p in polite:
            assert ask(p, b"PING") == b"PONG"
        # The kernel completes them into the backlog; the server cannot take them all.
        for _ in range(150):
            flood.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        pid = srv.proc.pid
        assert wait_until(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= 46, timeout=10)
        t_end = time.monotonic() + 3
        rounds = 0
        while time.monotonic() < t_end:  # the flood holds on; the clients keep being served
            for p in polite:
                assert ask(p, b"PING") == b"PONG"
            rounds += 1
        assert rounds > 10
        for s in flood:
            s.close()
        flood.clear()
        # fds free up: accepting resumes, a new client is served.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as late:
            assert ask(late, b"PING") == b"PONG"
        st = srv.stats()
        assert st["accept_fd_errors"] >= 1, st
        # Flood connections that sat there without a request were reclaimed, not the clients.
        assert st.get("closed_prefail_fds", 0) >= 1, st
        for p in polite:
            assert ask(p, b"PING") == b"PONG"
            p.close()
    finally:
        for s in flood:
            s.close()
        out = srv.stop()
    assert out.count("out of file descriptors") == 1, out


def test_client_that_never_reads_is_closed_at_the_output_cap() -> None:
    srv = Server("max_output=4194304 sweep_interval=0.2")
    try:
        proc = psutil.Process(srv.proc.pid)
        rss0 = proc.memory_info().rss
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        # 200 MB of replies asked for, none read.
        burst = b"BIG 1000000\n" * 200
        s.sendall(burst)
        assert wait_until(lambda: srv.stats().get("closed_output_cap", 0) == 1, timeout=20)
        grown = proc.memory_info().rss - rss0
        assert grown < 32 << 20, f"server grew by {grown >> 20} MiB for one client"
        s.settimeout(10)
        try:  # what the kernel still held, then the end
            while s.recv(1 << 20):
                pass
        except ConnectionError:
            pass
        s.close()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as other:
            assert ask(other, b"PING") == b"PONG"
    finally:
        out = srv.stop()
    assert out.count("closing connections: output_cap") == 1, out


PIPELINER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
batch = b"PING\\n" * 1000
want = len(b"PONG\\n") * 1000
while True:
    s.sendall(batch)
    got = 0
    while got < want:
        chunk = s.recv(1 << 20)
        if not chunk:
            sys.exit(0)
        got += len(chunk)
    sys.stdout.write("."); sys.stdout.flush()
"""


def test_deep_pipeliners_do_not_starve_polite_clients() -> None:
    """Four clients pipelining 1,000 deep beside ten that ask one at a time: every
    polite client keeps getting answers all along (continuity and counts; speed
    is the benchmark's business), and the pipeliners are served too."""
    srv = Server("sweep_interval=0.5")
    pipers = [subprocess.Popen([sys.executable, "-c", PIPELINER, str(srv.port)],
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        time.sleep(0.5)
        counts = [0] * 10
        gaps = [0.0] * 10
        errors: list[BaseException] = []
        stop = time.monotonic() + 3

        def polite(i: int) -> None:
            try:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                    last = time.monotonic()
                    while time.monotonic() < stop:
                        assert ask(s, b"PING") == b"PONG"
                        now = time.monotonic()
                        gaps[i] = max(gaps[i], now - last)
                        last = now
                        counts[i] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=polite, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert all(c > 5 for c in counts), counts
        # Continuity: no polite client went a whole second without an answer.
        assert max(gaps) < 1.0, gaps
    finally:
        for p in pipers:
            p.kill()
        piped = [p.communicate()[0].count(".") for p in pipers]
        srv.stop()
    assert all(n > 0 for n in piped), piped


def test_a_request_and_the_clients_close_in_one_edge_end_the_connection_at_once() -> None:
    """The last bytes and the FIN arrive together: the short read is not the end
    of the story; the server reads on to the end of file (no idle timeout wait)."""
    srv = Server("idle_timeout=60 first_request_timeout=60")
    try:
        for _ in range(20):
            # a server that missed the FIN would keep the connection until its
            # idle timeout (60 s): recv below would time out instead of ending
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"PING\n")
            s.shutdown(socket.SHUT_WR)  # our FIN follows the request at once
            got = b""
            while chunk := s.recv(4096):  # the server closes after answering
                got += chunk
            assert got == b"PONG\n"
            s.close()
        # only the stats connection itself is open (it closes when this one does)
        assert wait_until(lambda: srv.stats()["open"] == 1, timeout=10)
    finally:
        srv.stop()
