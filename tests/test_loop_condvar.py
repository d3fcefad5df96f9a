"""The cross-process condition variable: real processes, real eventfds, shared memfd."""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable

import pytest
from _procs import fork_with_pipe as fork
from _procs import reap

from actorq.errors import Cancelled
from actorq.loop import CondVar, Loop, sleep


def read_line(fd: int, timeout: float = 10.0) -> bytes:
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "timed out waiting for the child"
    return os.read(fd, 100)


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def cv():
    c = CondVar.create(slots=8, size=16)
    yield c
    c.close()


def loop_waiter(cv: CondVar, name: bytes) -> Callable[[int], None]:
    """A worker-like child: a Loop whose coroutine waits on the condvar."""

    def child(w: int) -> None:
        loop = Loop()

        async def main() -> None:
            async with cv:
                ok = await cv.wait(timeout=30)
            os.write(w, name + (b":ok" if ok else b":timeout"))

        loop.run_until_complete(main())
        loop.close()

    return child


def test_wait_and_notify_across_processes(cv, no_leaks):
    def child(w: int) -> None:
        loop = Loop()

        async def main() -> None:
            async with cv:
                while struct.unpack_from("=Q", cv.buf, 0)[0] == 0:
                    await cv.wait()
                value = struct.unpack_from("=Q", cv.buf, 0)[0]
            os.write(w, b"%d" % value)

        loop.run_until_complete(main())
        stats = loop.statistics()["events"]
        loop.close()
        assert stats.get("condvar", 0) >= 1

    pid, r = fork(child)
    wait_until(lambda: cv.waiting() == 1)
    with cv:
        struct.pack_into("=Q", cv.buf, 0, 42)
        assert cv.notify() == 1
    assert read_line(r) == b"42"
    assert reap(pid) == 0
    os.close(r)
    assert cv.waiting() == 0


def test_notify_one_wakes_exactly_one_oldest_first(cv, no_leaks):
    pa, ra = fork(loop_waiter(cv, b"A"))
    wait_until(lambda: cv.waiting() == 1)
    pb, rb = fork(loop_waiter(cv, b"B"))
    wait_until(lambda: cv.waiting() == 2)

    assert cv.notify_one() == 1
    assert read_line(ra) == b"A:ok"
    # B was not woken: nothing from it, and it is still waiting.
    assert select.select([rb], [], [], 0.2)[0] == []
    assert cv.waiting() == 1
    assert cv.notify_one() == 1
    assert read_line(rb) == b"B:ok"
    assert reap(pa) == 0
    assert reap(pb) == 0
    for fd in (ra, rb):
        os.close(fd)
    assert cv.notify_one() == 0  # nobody left


def test_notify_all(cv, no_leaks):
    kids = []
    for name in (b"A", b"B", b"C"):
        kids.append(fork(loop_waiter(cv, name)))
    wait_until(lambda: cv.waiting() == 3)
    assert cv.notify_all() == 3
    got = sorted(read_line(r) for _, r in kids)
    assert got == [b"A:ok", b"B:ok", b"C:ok"]
    for pid, r in kids:
        assert reap(pid) == 0
        os.close(r)


def test_no_lost_wakeups_producer_consumer(cv, no_leaks):
    """A consumer in another process sees every one of N increments; each
    notify races with the consumer going back to sleep."""
    n = 300

    def consumer(w: int) -> None:
        loop = Loop()

        async def main() -> None:
            seen = 0
            while seen < n:
                async with cv:
                    while struct.unpack_from("=Q", cv.buf, 0)[0] == seen:
                        await cv.wait()
                    seen = struct.unpack_from("=Q", cv.buf, 0)[0]
                    struct.pack_into("=Q", cv.buf, 8, seen)  # acknowledge
                    cv.notify()
            os.write(w, b"%d" % seen)

        loop.run_until_complete(main())
        loop.close()

    pid, r = fork(consumer)
    for i in range(1, n + 1):
        with cv:
            struct.pack_into("=Q", cv.buf, 0, i)
            cv.notify()
            # wait for the acknowledgement (blocking form: this side has no loop)
            while struct.unpack_from("=Q", cv.buf, 8)[0] < i:
                assert cv.wait_blocking(timeout=10), f"lost wake-up at {i}"
    assert read_line(r) == b"%d" % n
    assert reap(pid) == 0
    os.close(r)


def test_wait_timeout_returns_false_and_frees_the_slot(cv):
    loop = Loop()

    async def main() -> bool:
        async with cv:
            return await cv.wait(timeout=0.05)

    t0 = time.monotonic()
    assert loop.run_until_complete(main()) is False
    assert time.monotonic() - t0 >= 0.05
    assert cv.waiting() == 0
    with cv:
        assert cv.wait_blocking(timeout=0.02) is False
    loop.close()


def test_cancelled_waiter_passes_its_notification_on(cv):
    loop = Loop()
    woke = []

    async def waiter(name: str) -> None:
        async with cv:
            woke.append((name, await cv.wait()))

    async def main() -> None:
        t1 = loop.spawn(waiter("t1"))
        await sleep(0.01)
        t2 = loop.spawn(waiter("t2"))
        await sleep(0.01)
        assert cv.waiting() == 2
        assert cv.notify_one() == 1  # picks t1 (oldest) ...
        t1.cancel()  # ... which is cancelled before it runs
        with pytest.raises(Cancelled):
            await t1
        await t2

    loop.run_until_complete(main())
    assert woke == [("t2", True)]
    assert cv.waiting() == 0
    loop.close()


def test_dead_waiter_does_not_swallow_a_notify(cv, no_leaks):
    pd, rd = fork(loop_waiter(cv, b"dead"))
    wait_until(lambda: cv.waiting() == 1)
    os.kill(pd, signal.SIGKILL)
    os.waitpid(pd, 0)
    pa, ra = fork(loop_waiter(cv, b"alive"))
    wait_until(lambda: cv.waiting() == 2)
    assert cv.notify_one() == 1
    assert read_line(ra) == b"alive:ok"
    assert reap(pa) == 0
    for fd in (rd, ra):
        os.close(fd)


def test_attach_from_fds_passed_over_a_socket(cv, no_leaks):
    a, b = socket.socketpair()

    def child(w: int) -> None:
        _msg, fds, _flags, _addr = socket.recv_fds(b, 16, 64)
        other = CondVar.attach(*fds)
        with other:
            struct.pack_into("=Q", other.buf, 0, 7)
            other.notify()
        other.close()
        os.write(w, b"done")

    pid, r = fork(child)
    with cv:
        socket.send_fds(a, [b"cv"], list(cv.handles()))
        while struct.unpack_from("=Q", cv.buf, 0)[0] != 7:
            assert cv.wait_blocking(timeout=10)
    assert read_line(r) == b"done"
    assert reap(pid) == 0
    os.close(r)
    a.close()
    b.close()


def test_errors_name_the_problem(cv):
    with pytest.raises(RuntimeError, match="lock held"):
        cv.wait_blocking(0.01)
    with pytest.raises(RuntimeError, match="without holding"):
        cv.release()
    small = CondVar.create(slots=1)
    try:
        with small:
            small._claim()
            with pytest.raises(RuntimeError, match="more slots"):
                small._claim()
    finally:
        small.close()
    with pytest.raises(ValueError, match="at least one"):
        CondVar.create(slots=0)


def test_coroutines_of_one_process_take_turns_on_the_lock(cv, no_leaks):
    """Several coroutines contend for the lock, holding it across awaits, while
    another process also takes it: never two inside at once, nobody stuck."""
    loop = Loop()
    inside = []
    overlaps = []
    done = []

    async def worker(name: str) -> None:
        for _ in range(5):
            async with cv:
                if inside:
                    overlaps.append((name, list(inside)))
                inside.append(name)
                await sleep(0.002)
                inside.remove(name)
        done.append(name)

    def other(w: int) -> None:
        for _ in range(20):
            with cv:
                time.sleep(0.001)
        os.write(w, b"ok")

    async def main() -> None:
        tasks = [loop.spawn(worker(n)) for n in "abc"]
        for t in tasks:
            await t

    pid, r = fork(other)
    loop.run_until_complete(main())
    assert sorted(done) == ["a", "b", "c"]
    assert overlaps == []
    assert read_line(r) == b"ok"
    assert reap(pid) == 0
    os.close(r)
    assert loop.statistics()["fds"] == 1  # the lock's registration went away
    loop.close()
