"""examples/kvserver under unexpected traffic, through actorq.net: a 3.5 MiB
request of 1-byte arguments beside PINGs on the same worker, and a client
that pipelines GETs without ever reading."""

from __future__ import annotations

import socket
import sys
import threading
import time

import psutil
import pytest
from _runtime_helpers import workers_of
from test_examples_kvserver import read_reply
from test_resp_server import start_server, stop_server

pytest.importorskip("zmq")

from examples.kvserver.resp import encode_command


def test_huge_request_of_tiny_arguments_while_ping_is_answered(no_leaks: None) -> None:
    # One worker: the big request and the PINGs share its loop.
    proc, port = start_server([sys.executable, "-m", "examples.kvserver", "--workers", "1",
                               "--port", "0"])
    try:
        n = (int(3.5 * 2**20) - 16) // 7
        wire = b"*%d\r\n$3\r\nDEL\r\n" % (n + 1) + b"$1\r\nx\r\n" * n
        pings = []
        done = threading.Event()
        errors: list[BaseException] = []

        def ping() -> None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    while not done.is_set():
                        s.sendall(encode_command("PING"))
                        pings.append((read_reply(s), time.monotonic()))
            except BaseException as exc:
                errors.append(exc)

        with socket.create_connection(("127.0.0.1", port), timeout=60) as big:
            assert (big.sendall(encode_command("SET", "x", "1")), read_reply(big))[1] == "OK"
            t = threading.Thread(target=ping)
            t.start()
            while not pings:
                time.sleep(0.01)
            start = time.monotonic()
            big.sendall(wire)
            reply = read_reply(big)
            end = time.monotonic()
            done.set()
            t.join(30)
            assert reply == 1  # the one key "x" deleted (the rest were gone already)
            assert not errors, errors
            assert all(p == "PONG" for p, _ in pings)
            # PINGs kept being answered while the big request was received and run.
            assert sum(1 for _, at in pings if start < at < end) >= 2, (len(pings), end - start)
            big.sendall(encode_command("PING"))
            assert read_reply(big) == "PONG"
    finally:
        out = stop_server(proc, timeout=20)
    assert proc.returncode == 0, out


def test_pipeliner_that_never_reads_is_disconnected_and_memory_bounded(no_leaks: None) -> None:
    """1 M pipelined GETs and no read: the worker stops reading it at 1 MiB of
    replies (back-pressure), then closes it when it takes nothing for
    send_timeout; its RSS stays bounded and other clients are served."""
    proc, port = start_server([sys.executable, "-m", "examples.kvserver", "--workers", "1",
                               "--port", "0"],
                                 env={"KVSERVER_NET": "send_timeout=2 sweep_interval=0.2"})
    try:
        (worker,) = workers_of(proc.pid)
        value = b"v" * 1000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(encode_command("SET", "k", value))
            assert read_reply(s) == "OK"
        rss0 = worker.memory_info().rss
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.setblocking(False)
        burst = encode_command("GET", "k") * 10000
        sent = 0
        closed = False
        deadline = time.monotonic() + 60
        while sent < 100 and time.monotonic() < deadline:  # up to 1 M GETs, as the client can
            try:
                s.send(burst)
                sent += 1
            except BlockingIOError:
                time.sleep(0.05)
            except OSError:
                closed = True
                break
            if not closed and psutil.pid_exists(worker.pid):
                grown = worker.memory_info().rss - rss0
                assert grown < 64 << 20, f"worker grew by {grown >> 20} MiB"
        s.setblocking(True)
        s.settimeout(30)
        if not closed:
            try:  # what the kernel still holds, then the end
                while s.recv(1 << 20):
                    pass
            except ConnectionError:
                pass
        s.close()
        grown = worker.memory_info().rss - rss0
        assert grown < 64 << 20, f"worker grew by {grown >> 20} MiB"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as other:
            other.sendall(encode_command("GET", "k"))
            assert read_reply(other) == value
    finally:
        out = stop_server(proc, timeout=20)
    assert proc.returncode == 0, out
    assert out.count("closing connections: send_timeout") == 1, out
