"""Every source at once in a pinned worker-like process, driven from outside:
real signals with os.kill, files touched, an eventfd doorbell rung, a condvar
notified, a zmq message sent; SIGTERM ends it in order."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from actorq.loop import CondVar

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, os, signal, sys
    cpu, watch_dir, efd, zmq_addr, *cv_fds = sys.argv[1:]
    os.sched_setaffinity(0, {int(cpu)})
    from actorq.loop import Loop, CondVar, block_signals
    from actorq.loop.sources import (EventfdSource, Inotify, Netlink, Signals,
                                     Timer, ZmqSource)
    import zmq

    def say(**kw):
        sys.stdout.write(json.dumps(kw) + "\\n"); sys.stdout.flush()

    loop = Loop()
    sig = Signals(
        [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD],
        lambda i: say(ev="signal", name=i.name, pid=i.pid, status=i.status),
        on_terminate=lambda n: loop.stop(),
    )
    ticks = []
    timer = Timer.periodic(
        0.005, lambda n: (ticks.append(n), len(ticks) == 1 and say(ev="tick", n=n))
    )
    ino = Inotify(lambda e: say(ev="inotify", kinds=sorted(e.kinds), path=e.path))
    ino.watch(watch_dir)
    bell = EventfdSource(int(efd), lambda v: say(ev="doorbell", value=v))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.connect(zmq_addr)
    zsrc = ZmqSource(sock, lambda f: say(ev="zmq", data=f[0].decode()))
    nl = Netlink(lambda e: None)
    cv = CondVar.attach(*map(int, cv_fds))
    for s in (sig, timer, ino, bell, zsrc, nl):
        loop.add_source(s)

    async def cv_waiter():
        async with cv:
            ok = await cv.wait(timeout=60)
        say(ev="condvar", ok=ok)

    loop.spawn(cv_waiter())

    def fork_child():
        pid = os.fork()
        if pid == 0:
            os._exit(9)
        say(ev="forked", pid=pid)

    loop.call_soon(fork_child)
    cpus = sorted(os.sched_getaffinity(0))
    loop.call_soon(lambda: say(ev="ready", cpu=cpus, links=len(nl.links)))
    loop.run_forever()
    stats = loop.statistics()
    for s in (sig, timer, ino, bell, zsrc, nl):
        s.close()
    cv.close(); sock.close(0); ctx.term(); loop.close()
    say(ev="bye", ticks=sum(ticks), terms=sig.termination_requests, events=stats["events"])
    """
)


def test_all_sources_in_a_pinned_worker(tmp_path, no_leaks):
    zmq = pytest.importorskip("zmq")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    watch = tmp_path / "watched"
    watch.mkdir()
    cpu = max(os.sched_getaffinity(0))
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    cv = CondVar.create(slots=4)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    fds = [efd, *cv.handles()]
    for fd in fds:
        os.set_inheritable(fd, True)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cpu), str(watch), str(efd), f"tcp://127.0.0.1:{port}"]
        + [str(fd) for fd in cv.handles()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=fds,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    lines: list[dict] = []
    buf = b""

    def expect(pred, timeout=20.0):
        nonlocal buf
        deadline = time.monotonic() + timeout
        while True:
            for ev in lines:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            assert left > 0, (
                f"worker never reported it; got {lines}, stderr: {proc.stderr.read1()!r}"
            )
            if select.select([proc.stdout], [], [], left)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"worker exited early: {proc.wait()} {proc.stderr.read()!r}"
                buf += chunk
                *full, buf = buf.split(b"\n")
                lines.extend(json.loads(x) for x in full if x)

    try:
        ready = expect(lambda e: e["ev"] == "ready")
        assert ready["cpu"] == [cpu]
        assert ready["links"] >= 1  # netlink snapshot of this namespace (lo at least)
        forked = expect(lambda e: e["ev"] == "forked")
        chld = expect(lambda e: e["ev"] == "signal" and e["name"] == "SIGCHLD")
        assert chld["pid"] == forked["pid"]
        assert chld["status"] == 9

        os.kill(proc.pid, signal.SIGUSR1)
        usr1 = expect(lambda e: e["ev"] == "signal" and e["name"] == "SIGUSR1")
        assert usr1["pid"] == os.getpid()

        (watch / "new.txt").write_text("x")
        expect(
            lambda e: (
                e["ev"] == "inotify" and "create" in e["kinds"] and e["path"].endswith("new.txt")
            )
        )

        os.eventfd_write(efd, 3)
        assert expect(lambda e: e["ev"] == "doorbell")["value"] == 3

        sock.send(b"hello")
        expect(lambda e: e["ev"] == "zmq" and e["data"] == "hello")

        deadline = time.monotonic() + 20
        while cv.waiting() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert cv.notify_one() == 1
        assert expect(lambda e: e["ev"] == "condvar")["ok"] is True

        assert expect(lambda e: e["ev"] == "tick")["n"] >= 1
        os.kill(proc.pid, signal.SIGTERM)  # a termination request: orderly stop
        bye = expect(lambda e: e["ev"] == "bye")
        assert bye["terms"] == 1, bye
        assert bye["ticks"] >= 1, bye
        for kind in ("signal", "timer", "inotify", "eventfd", "zmq", "condvar"):
            assert bye["events"].get(kind, 0) >= 1, kind
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        sock.close(0)
        ctx.term()
        cv.close()
        os.close(efd)
