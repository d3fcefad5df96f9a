"""examples/kvserver moves a connection to the worker owning its keys.

Two workers, raw sockets: a connection whose keys live on the other worker
ends up there (its socket in that worker's descriptor table) and its
replies stay complete and in order across the move; one spreading its keys
over both shards stays put; and killing a worker while connections are
moving to it costs the connections on it and nothing else."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import psutil
import pytest
from _runtime_helpers import workers_of
from test_resp_server import start_server, stop_server

pytest.importorskip("zmq")

from actorq.testing import wait_until
from examples.kvserver.commands import shard_of
from examples.kvserver.resp import Decoder, Error, encode_command

ROUND = 20  # pipelined requests per round


def key_on(shard: int, tag: str, start: int = 0) -> str:
    return next(k for i in range(start, start + 1000)
                if shard_of((k := f"{tag}{i}").encode(), 2) == shard)


def replies(sock: socket.socket, n: int) -> list[object]:
    """Read exactly ``n`` replies."""
    dec = Decoder()
    got: list[object] = []
    while len(got) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        dec.feed(chunk)
        got += dec.values()
    assert len(got) == n, got
    return got


def incr_round(sock: socket.socket, key: str, done: int) -> int:
    """ROUND pipelined INCRs of ``key``: each reply must be the next integer."""
    sock.sendall(encode_command("INCR", key) * ROUND)
    assert replies(sock, ROUND) == list(range(done + 1, done + ROUND + 1))
    return done + ROUND


def holder(workers: list[psutil.Process], port: int, sock: socket.socket) -> int | None:
    """The pid of the worker whose descriptors hold the server end of ``sock``."""
    mine = sock.getsockname()[1]
    for w in workers:
        for c in w.net_connections("tcp"):
            if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == mine:
                return w.pid
    return None


class KvServer:
    def __init__(self) -> None:
        self.proc, self.port = start_server([sys.executable, "-m", "examples.kvserver",
                                             "--workers", "2", "--port", "0"])
        self.sup = psutil.Process(self.proc.pid)

    def shard_workers(self) -> list[psutil.Process]:
        """Worker of shard 0, worker of shard 1 (shard i runs on the i-th worker CPU)."""
        return sorted(workers_of(self.sup.pid), key=lambda w: min(w.cpu_affinity()))

    def stop(self) -> None:
        children = self.sup.children(recursive=True)
        out = stop_server(self.proc, timeout=20)
        assert self.proc.returncode == 0, out
        _gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"workers left behind: {alive}"


@pytest.fixture(scope="module")
def kv() -> Iterator[KvServer]:
    server = KvServer()
    try:
        yield server
    finally:
        server.stop()


def test_connections_move_to_their_keys_worker_and_stay_ordered(kv: KvServer) -> None:
    workers = kv.shard_workers()
    socks = [socket.create_connection(("127.0.0.1", kv.port), timeout=20) for _ in range(24)]
    try:
        keys = [key_on(i % 2, f"mv{i}-") for i in range(len(socks))]
        done = [0] * len(socks)
        for _ in range(3):
            for i, s in enumerate(socks):
                done[i] = incr_round(s, keys[i], done[i])
        # Each connection now lives on the worker owning its key (the kernel put
        # about half of them on the other one), and keeps being served, in order.
        for i, s in enumerate(socks):
            want = workers[i % 2].pid
            wait_until(lambda s=s, want=want: holder(workers, kv.port, s) == want,
                       timeout=20, what=f"connection {i} on the worker of its key")
            done[i] = incr_round(s, keys[i], done[i])
            s.sendall(encode_command("SET", keys[i] + "v", "x" * 100)
                      + encode_command("GET", keys[i] + "v") + encode_command("GET", keys[i]))
            assert replies(s, 3) == ["OK", b"x" * 100, str(done[i]).encode()]
        # A key on the other shard is still reached from a moved connection.
        s = socks[0]
        other = key_on(1, "mv-other")
        s.sendall(encode_command("SET", other, "there") + encode_command("GET", other))
        assert replies(s, 2) == ["OK", b"there"]
    finally:
        for s in socks:
            s.close()


def test_a_connection_spreading_its_keys_stays_until_its_keys_change(kv: KvServer) -> None:
    workers = kv.shard_workers()
    with socket.create_connection(("127.0.0.1", kv.port), timeout=20) as s:
        keys = [key_on(0, "spread"), key_on(1, "spread")]
        s.sendall(encode_command("PING"))
        assert replies(s, 1) == ["PONG"]
        first = holder(workers, kv.port, s)
        assert first is not None
        for n in range(1, 11):
            s.sendall(b"".join(encode_command("INCR", keys[j % 2]) for j in range(ROUND)))
            half = ROUND // 2
            assert replies(s, ROUND) == [half * (n - 1) + j // 2 + 1 for j in range(ROUND)]
            assert holder(workers, kv.port, s) == first
        s.sendall(encode_command("GET", keys[0]) + encode_command("GET", keys[1]))
        assert replies(s, 2) == [b"100", b"100"]
        # Its habits change: now it asks only for the other worker's key. Its
        # old counts fade (halved every 64 requests) and it moves after all.
        there = 1 - [w.pid for w in workers].index(first)
        done = 100

        def moved() -> bool:
            nonlocal done
            done = incr_round(s, keys[there], done)
            return holder(workers, kv.port, s) == workers[there].pid

        wait_until(moved, timeout=30, what="the connection moved once its keys changed")
        done = incr_round(s, keys[there], done)


def test_worker_killed_while_connections_move_to_it_loses_nothing_else() -> None:
    kv = KvServer()
    try:
        workers = kv.shard_workers()
        victim = workers[1]
        stay = [socket.create_connection(("127.0.0.1", kv.port), timeout=20) for _ in range(10)]
        move = [socket.create_connection(("127.0.0.1", kv.port), timeout=20) for _ in range(30)]
        try:
            stay_keys = [key_on(0, f"stay{i}-") for i in range(len(stay))]
            done = [incr_round(s, k, 0) for s, k in zip(stay, stay_keys, strict=True)]
            for s in stay:  # all on shard 0's worker before the kill
                wait_until(lambda s=s: holder(workers, kv.port, s) == workers[0].pid,
                           timeout=20, what="connection on shard 0's worker")
            move_keys = [key_on(1, f"move{i}-") for i in range(len(move))]
            for s, k in zip(move, move_keys, strict=True):
                s.sendall(encode_command("INCR", k) * ROUND)
            # Kill shard 1's worker while those connections are served, hop, or move.
            victim.kill()
            victim.wait(10)
            for s in move:
                # Each either was answered in full before the kill, or gets error
                # replies for the dead shard, or sees its connection closed: never a hang.
                try:
                    got = replies(s, ROUND)
                except (ConnectionError, OSError):
                    continue
                assert all(isinstance(r, int | Error) for r in got), got
            # The connections on the surviving worker lost nothing and kept their order.
            for i, s in enumerate(stay):
                done[i] = incr_round(s, stay_keys[i], done[i])
            # The shard comes back (empty) and connections move to its new worker again.
            new_key = key_on(1, "after")

            def fresh_connection_served() -> bool:
                try:
                    with socket.create_connection(("127.0.0.1", kv.port), timeout=5) as s:
                        s.sendall(encode_command("SET", new_key, "1"))
                        return replies(s, 1) == ["OK"]
                except OSError:
                    return False

            wait_until(fresh_connection_served, timeout=60, what="shard 1 back")
            reborn = kv.shard_workers()[1]
            assert reborn.pid != victim.pid
            # Both workers accept again: every new connection is answered, whichever
            # listener the kernel picks (a restarted worker once kept its listener
            # on the supervisor's loop, and connections it took hung).
            for _ in range(8):
                with socket.create_connection(("127.0.0.1", kv.port), timeout=20) as s:
                    s.sendall(encode_command("PING"))
                    assert replies(s, 1) == ["PONG"]
            with socket.create_connection(("127.0.0.1", kv.port), timeout=20) as s:
                n = 1

                def moved() -> bool:
                    nonlocal n
                    s.sendall(encode_command("INCR", new_key) * ROUND)
                    assert replies(s, ROUND) == list(range(n + 1, n + ROUND + 1))
                    n += ROUND
                    return holder(kv.shard_workers(), kv.port, s) == reborn.pid

                wait_until(moved, timeout=30, what="a connection moved to the new worker")
            for i, s in enumerate(stay):
                done[i] = incr_round(s, stay_keys[i], done[i])
        finally:
            for s in stay + move:
                s.close()
    finally:
        kv.stop()
