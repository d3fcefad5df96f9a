"""Each event source fires for real: kernel timers, signals, inotify, netlink in
a network namespace, zmq, eventfd doorbells.

Signal tests run in a forked child: the test process may have other threads
(pytest-xdist's I/O thread) that do not block the signal, and the kernel may
deliver a process-directed signal to any of them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _procs import fork_with_pipe, reap

from actorq.loop import Loop
from actorq.loop.sources import (
    EventfdSource,
    FdSource,
    Inotify,
    Signals,
    Timer,
    ZmqSource,
    blocked_signals,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


def in_child(fn: Callable[[], object], timeout: float = 30.0) -> object:
    """Run ``fn`` in a forked child (one thread) and return what it returned."""

    def child(w: int) -> None:
        try:
            result: object = ("ok", fn())
        except BaseException as e:
            result = ("err", f"{type(e).__name__}: {e}")
        os.write(w, pickle.dumps(result))

    pid, r = fork_with_pipe(child)
    try:
        status = reap(pid, timeout)
    except AssertionError:
        os.close(r)
        raise
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert data, f"child died without a result (status {status})"
    kind, value = pickle.loads(data)
    if kind == "err":
        pytest.fail(f"in the child: {value}")
    return value


# --- timers ----------------------------------------------------------------------
def test_timer_one_shot_fires_once_never_early(loop):
    fired = []
    start = time.monotonic()
    t = Timer.once(0.03, lambda n: (fired.append((n, time.monotonic() - start)), loop.stop()))
    loop.add_source(t)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    n, at = fired[0]
    assert n == 1
    assert 0.03 <= at < 5
    assert t.remaining() == (0.0, 0.0)
    t.close()
    assert loop.statistics()["events"]["timer"] == 1


def test_timers_fire_in_order(loop):
    order = []
    timers = [Timer.once(d, lambda n, d=d: order.append(d)) for d in (0.06, 0.02, 0.04)]
    for t in timers:
        loop.add_source(t)
    loop.call_later(0.3, loop.stop)
    loop.run_forever()
    assert order == [0.02, 0.04, 0.06]
    for t in timers:
        t.close()


def test_periodic_timer_reports_missed_expirations(loop):
    counts = []
    t = Timer.periodic(0.02, counts.append)
    loop.add_source(t)
    time.sleep(0.11)  # the loop is not running: expirations pile up in the kernel
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert counts
    assert counts[0] >= 4  # 5 expected; generous for a busy machine
    assert t.expirations == sum(counts)
    t.close()


def test_absolute_realtime_timer(loop):
    fired = []
    when = time.time() + 0.05
    t = Timer.at(when, lambda n: (fired.append((n, time.time())), loop.stop()))
    assert t.clock == "realtime"
    loop.add_source(t)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    assert fired[0][1] >= when - 0.001  # realtime may be stepped by NTP; never early otherwise
    t.close()


def test_absolute_deadline_in_the_past_fires_at_once(loop):
    fired = []
    t = Timer.at(time.time() - 10, lambda n: (fired.append(n), loop.stop()))
    loop.add_source(t)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert fired == [1]
    t.close()


def test_timer_disarm_and_reset(loop):
    fired = []
    t = Timer(fired.append)
    t.set(0.01)
    t.disarm()
    loop.add_source(t)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert fired == []
    t.set(0.01)
    loop.call_later(0.2, loop.stop)
    loop.run_forever()
    assert fired == [1]
    t.close()
    assert t.closed
    with pytest.raises(ValueError, match="unknown clock"):
        Timer(print, clock="sundial")


# --- signals ---------------------------------------------------------------------
def test_signals_via_signalfd_with_os_kill():
    def child():
        loop = Loop()
        seen = []
        s = Signals([signal.SIGUSR1, signal.SIGUSR2], seen.append)
        assert {signal.SIGUSR1, signal.SIGUSR2} <= blocked_signals()
        loop.add_source(s)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        s.close()
        stats = loop.statistics()["events"]
        loop.close()
        return [(i.signo, i.pid, i.name) for i in seen], stats

    seen, stats = in_child(child)
    assert sorted(name for _, _, name in seen) == ["SIGUSR1", "SIGUSR2"]
    pids = {pid for _, pid, _ in seen}
    assert len(pids) == 1  # both sent by the child itself
    assert 0 not in pids
    assert stats["signal"] >= 1


def test_realtime_signals_queue_and_carry_values():
    from actorq.loop._libc import sigqueue

    def child():
        loop = Loop()
        seen = []
        rt = signal.SIGRTMIN + 2
        s = Signals([rt], seen.append)
        loop.add_source(s)
        for v in (7, 8, 9):
            sigqueue(os.getpid(), rt, v)
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        s.close()
        loop.close()
        return [(i.value, i.name) for i in seen]

    assert in_child(child) == [(7, "SIGRTMIN+2"), (8, "SIGRTMIN+2"), (9, "SIGRTMIN+2")]


def test_sigterm_and_sigint_are_termination_requests():
    def child():
        loop = Loop()
        requests = []
        s = Signals(
            [signal.SIGTERM, signal.SIGINT],
            on_terminate=lambda n: (requests.append(n), n >= 2 and loop.stop()),
        )
        loop.add_source(s)
        os.kill(os.getpid(), signal.SIGTERM)
        loop.call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
        loop.call_later(10, loop.stop)
        loop.run_forever()
        s.close()
        loop.close()
        return requests, s.termination_requests

    assert in_child(child) == ([1, 2], 2)


def test_sigchld_reports_pid_and_reaps_every_child():
    def child():
        loop = Loop()
        exits = {}
        s = Signals([signal.SIGCHLD], lambda i: exits.__setitem__(i.pid, i.status))
        loop.add_source(s)
        pids = []
        for code in (3, 4, 5):
            pid = os.fork()
            if pid == 0:
                os._exit(code)
            pids.append(pid)

        def check():
            if len(exits) == 3:
                loop.stop()
            else:
                loop.call_later(0.01, check)

        loop.call_soon(check)
        loop.call_later(10, loop.stop)
        loop.run_forever()
        s.close()
        loop.close()
        leftover = []
        try:
            leftover.append(os.waitpid(-1, os.WNOHANG))
        except ChildProcessError:
            pass
        return {p: exits.get(p) for p in pids}, pids, leftover

    exits, pids, leftover = in_child(child)
    assert exits == {pids[0]: 3, pids[1]: 4, pids[2]: 5}
    assert leftover == []  # nothing left to reap


def test_signal_mask_is_inherited_by_exec():
    """The trap from linux-primitives.md: blocked signals stay blocked across exec."""

    def child():
        Signals([signal.SIGUSR1], print).close()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import signal; "
                "print(int(signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, [])))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out

    assert in_child(child) == "1"


def test_reblock_after_something_unblocked():
    def child():
        s = Signals([signal.SIGTERM], print)
        signal.pthread_sigmask(
            signal.SIG_UNBLOCK, [signal.SIGTERM]
        )  # what the resource tracker does
        fixed = s.reblock()
        still = signal.SIGTERM in blocked_signals()
        s.close()
        return fixed, still

    fixed, still = in_child(child)
    assert fixed == {signal.SIGTERM}
    assert still


# --- inotify ---------------------------------------------------------------------
def test_inotify_create_modify_move_delete(loop, tmp_path):
    events = []
    ino = Inotify(events.append)
    ino.watch(tmp_path)
    loop.add_source(ino)
    a = tmp_path / "a.txt"
    a.write_text("hello")
    with open(a, "a") as f:
        f.write(" world")
    a.rename(tmp_path / "b.txt")
    (tmp_path / "b.txt").unlink()
    (tmp_path / "sub").mkdir()
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    kinds = [
        (sorted(e.kinds - {"close_write"}), e.name) for e in events if e.kinds - {"close_write"}
    ]
    assert (["create"], "a.txt") in kinds
    assert (["modify"], "a.txt") in kinds
    assert (["delete"], "b.txt") in kinds
    assert (["create", "isdir"], "sub") in kinds
    moved_from = next(e for e in events if "moved_from" in e.kinds)
    moved_to = next(e for e in events if "moved_to" in e.kinds)
    assert moved_from.cookie == moved_to.cookie != 0
    assert moved_from.path == str(tmp_path / "a.txt")
    assert moved_to.path == str(tmp_path / "b.txt")
    ino.close()


def test_inotify_delete_self_forgets_the_watch(loop, tmp_path):
    d = tmp_path / "watched"
    d.mkdir()
    events = []
    ino = Inotify(events.append)
    wd = ino.watch(d)
    loop.add_source(ino)
    d.rmdir()
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    kinds = [e.kinds for e in events if e.wd == wd]
    assert any("delete_self" in k for k in kinds)
    assert any("ignored" in k for k in kinds)
    assert next(e for e in events if "delete_self" in e.kinds).path == str(d)
    assert wd not in ino.watched
    ino.close()


def test_inotify_budget_resumes_a_long_burst(loop, tmp_path):
    events = []
    ino = Inotify(events.append)
    ino.budget = 1
    ino._buf = bytearray(1024)  # small reads: many turns for the burst
    ino.watch(tmp_path)
    loop.add_source(ino)
    for i in range(200):
        (tmp_path / f"f{i:03d}").touch()
    loop.call_later(0.2, loop.stop)
    loop.run_forever()
    created = {e.name for e in events if "create" in e.kinds}
    assert created == {f"f{i:03d}" for i in range(200)}
    ino.close()


def test_inotify_missing_path_error_names_it(tmp_path):
    ino = Inotify(print)
    try:
        with pytest.raises(FileNotFoundError, match="nope"):
            ino.watch(tmp_path / "nope")
    finally:
        ino.close()


# --- eventfd and plain fds --------------------------------------------------------------
def test_eventfd_doorbell_drains_in_one_read(loop):
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    values = []
    src = EventfdSource(efd, values.append, own=True)
    loop.add_source(src)
    for _ in range(5):
        os.eventfd_write(efd, 1)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert values == [5]
    os.eventfd_write(efd, 2)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert values == [5, 2]
    src.close()
    with pytest.raises(OSError):
        os.fstat(efd)  # own=True: closed with the source


def test_eventfd_callback_not_done_is_called_again(loop):
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    backlog = [10]
    seen = []

    def drain(value):
        seen.append(value)
        backlog[0] -= 3  # a ring drained with a limit of 3 records
        return backlog[0] > 0

    src = EventfdSource(efd, drain)
    loop.add_source(src)
    os.eventfd_write(efd, 1)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert seen == [1, 0, 0, 0]
    src.close()
    os.close(efd)


def test_fd_source_reader_and_writer(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = []
    wrote = []
    src = FdSource(
        b, on_readable=lambda: got.append(b.recv(100)), on_writable=lambda: wrote.append(1)
    )
    loop.add_source(src)
    a.send(b"hey")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert got == [b"hey"]
    assert wrote
    with pytest.raises(RuntimeError, match="already registered"):
        loop.add_source(FdSource(b, on_readable=print))
    src.close()
    assert b.fileno() >= 0  # not ours to close
    a.close()
    b.close()


# --- zmq -------------------------------------------------------------------------
def test_zmq_source_receives_everything_even_when_edges_are_consumed(loop):
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PAIR)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PAIR)
    push.connect(f"tcp://127.0.0.1:{port}")
    got = []

    def on_msg(frames):
        got.append(frames[0])
        # Sending on the same socket processes zmq's commands and can eat the
        # FD's edge for messages that arrived meanwhile.
        pull.send(b"ack:" + frames[0])
        if len(got) == 50:
            loop.stop()

    src = ZmqSource(pull, on_msg)
    loop.add_source(src)
    for i in range(50):
        push.send(b"%d" % i)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert got == [b"%d" % i for i in range(50)]
    acks = 0
    while push.poll(1000):
        push.recv()
        acks += 1
        if acks == 50:
            break
    assert acks == 50
    assert loop.statistics()["events"].get("zmq", 0) >= 1
    src.close()
    push.close(0)
    pull.close(0)
    ctx.term()


def test_zmq_before_sleep_check_finds_messages_without_an_edge(loop):
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    a = ctx.socket(zmq.PAIR)
    a.bind("inproc://aq-zmq-edge")
    b = ctx.socket(zmq.PAIR)
    b.connect("inproc://aq-zmq-edge")
    got = []
    src = ZmqSource(a, lambda f: (got.append(f[0]), loop.stop()))
    b.send(b"early")
    # Consume the edge before the loop ever sees it: EVENTS processes the command.
    assert a.getsockopt(zmq.EVENTS) & zmq.POLLIN
    loop.add_source(src)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert got == [b"early"]
    src.close()
    a.close(0)
    b.close(0)
    ctx.term()


# --- netlink in a private network namespace -----------------------------------------------
NETLINK_SCRIPT = textwrap.dedent(
    """
    import json, subprocess
    from actorq.loop import Loop
    from actorq.loop.sources import Netlink

    loop = Loop()
    events = []
    nl = Netlink(events.append)
    loop.add_source(nl)

    def sh(cmd):
        subprocess.run(cmd, shell=True, check=True, capture_output=True)

    def settle(seconds=0.2):
        loop.call_later(seconds, loop.stop)
        loop.run_forever()

    sh("ip link add aqv0 type veth peer name aqv1")
    settle()
    sh("ip link set aqv0 up")
    settle()
    sh("ip addr add 10.77.0.1/24 dev aqv0")
    settle()
    sh("ip addr del 10.77.0.1/24 dev aqv0")
    settle()
    sh("ip link set aqv0 down")
    settle()
    sh("ip link del aqv0")
    settle()
    out = {"events": [[e.kind, e.action, e.link.name if e.link else None,
                       e.addr.address if e.addr else None] for e in events]}

    # Overflow: a tiny receive buffer and a burst we do not read in time.
    small = Netlink(events.append, rcvbuf=1)
    loop.add_source(small)
    for i in range(40):
        sh(f"ip link add aqx{i} type veth peer name aqy{i}")
    settle(0.3)
    out["overflows"] = small.overflows
    out["resyncs"] = sum(1 for e in events if e.kind == "resync")
    out["links_after"] = len(small.links)
    out["stats"] = loop.statistics()["events"].get("netlink", 0)
    small.close(); nl.close(); loop.close()
    print(json.dumps(out))
    """
)


def test_netlink_link_and_address_events_in_a_namespace(tmp_path, no_leaks):
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs unshare(1) and ip(8) to make a private network namespace")
    script = tmp_path / "nl.py"
    script.write_text(NETLINK_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip(f"the kernel refused a network namespace: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    ev = [tuple(e) for e in out["events"]]
    assert ("link", "new", "aqv0", None) in ev
    assert ("link", "new", "aqv1", None) in ev
    assert ("link", "up", "aqv0", None) in ev
    assert ("addr", "new", None, "10.77.0.1") in ev
    assert ("addr", "del", None, "10.77.0.1") in ev
    assert ("link", "down", "aqv0", None) in ev
    assert ("link", "del", "aqv0", None) in ev
    assert ev.index(("link", "up", "aqv0", None)) < ev.index(("link", "down", "aqv0", None))
    assert out["overflows"] >= 1
    assert out["resyncs"] >= 1
    assert out["links_after"] >= 81  # lo + 80 veth ends, from the dump
    assert out["stats"] >= 1


def test_zmq_message_with_eaten_edge_is_found_while_the_loop_never_sleeps(loop):
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    a = ctx.socket(zmq.PAIR)
    a.bind(f"inproc://aq-zmq-busy-{os.getpid()}")
    b = ctx.socket(zmq.PAIR)
    b.connect(f"inproc://aq-zmq-busy-{os.getpid()}")
    got = []
    src = ZmqSource(a, lambda f: got.append(f[0]))
    loop.add_source(src)
    b.send(b"busy")
    assert a.getsockopt(zmq.EVENTS) & zmq.POLLIN  # eats the edge

    def spin():  # a chain of call_soon's: the loop never blocks, so before_sleep never runs
        if got:
            loop.stop()
        else:
            loop.call_soon(spin)

    loop.call_soon(spin)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert got == [b"busy"]
    src.close()
    a.close(0)
    b.close(0)
    ctx.term()


def test_a_source_belongs_to_one_loop_and_a_closed_fd_is_refused(loop):
    other = Loop()
    try:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        src = EventfdSource(efd, print, own=True)
        loop.add_source(src)
        with pytest.raises(RuntimeError, match="another Loop"):
            other.add_source(src)
        assert other.statistics()["fds"] == 1  # nothing half-registered
        src.close()
        r, w = os.pipe()
        os.close(r)
        with pytest.raises(OSError):
            loop.add_source(FdSource(r, on_readable=print))
        assert loop.statistics()["fds"] == 1
        os.close(w)
    finally:
        other.close()
