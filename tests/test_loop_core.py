"""The loop core: continuations, timers, edge-triggered fds, coroutines."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest

from actorq.errors import Cancelled
from actorq.loop import Future, Loop, current_loop, sleep, wait_for, wait_readable, wait_writable


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_call_soon_runs_in_order_and_cancel_skips(loop):
    out = []
    loop.call_soon(out.append, 1)
    h = loop.call_soon(out.append, 2)
    loop.call_soon(out.append, 3)
    loop.call_soon(loop.stop)
    h.cancel()
    loop.run_forever()
    assert out == [1, 3]


def test_call_soon_chain_runs_after_queued_work_and_io_is_polled(loop):
    """A callback's call_soon runs after what was already queued; a long chain
    still lets the loop poll (turn budget)."""
    order = []
    polled_turns = []

    def link(i):
        order.append(i)
        if i < 1000:
            loop.call_soon(link, i + 1)
        else:
            loop.stop()

    loop.call_soon(link, 0)
    loop.call_soon(order.append, "queued")
    loop.call_soon(lambda: polled_turns.append(loop.statistics()["turns"]))
    loop.run_forever()
    assert order[:3] == [0, "queued", 1]
    assert loop.statistics()["turns"] > 1000 // 128


def test_zero_delay_timer_goes_to_ready_queue(loop):
    h = loop.call_later(0, lambda: None)
    assert h.when is None
    assert loop.statistics()["timers"] == 0
    assert loop.statistics()["ready"] == 1


def test_timers_fire_in_order_never_early(loop):
    fired = []
    start = loop.time()
    for d in (0.03, 0.01, 0.02, 0.01):
        loop.call_later(d, lambda d=d: fired.append((d, loop.time() - start)))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert [d for d, _ in fired] == [0.01, 0.01, 0.02, 0.03]
    for d, at in fired:
        assert at >= d
        assert at < d + 1.0  # generous: CPUs are shared


def test_cancelled_timer_does_not_fire_and_heap_is_compacted(loop):
    fired = []
    hs = [loop.call_later(10 + i, fired.append, i) for i in range(200)]
    for h in hs:
        h.cancel()
    assert loop.statistics()["timers"] == 0
    assert loop._ntimers < 200  # dead entries were dropped
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert fired == []


def test_injected_clock_drives_timers_and_statistics():
    clock = FakeClock()
    lp = Loop(clock=clock, slow_callback=5.0)
    try:
        fired = []

        def slow():
            clock.now += 7.0  # "takes" 7 s of loop time

        lp.call_at(clock.now + 1.0, fired.append, "due")
        lp.call_soon(slow)
        lp.call_soon(lp.stop)
        lp.run_forever()
        # slow() moved the clock past the timer, which fires the same turn it is seen due
        lp.call_soon(lp.stop)
        lp.run_forever()
        assert fired == ["due"]
        st = lp.statistics()
        assert st["longest_callback"] == pytest.approx(7.0)
        assert "slow" in st["longest_callback_what"]
        assert st["callback_time"] >= 7.0
    finally:
        lp.close()


def test_slow_callback_is_logged(caplog):
    clock = FakeClock()
    lp = Loop(clock=clock, slow_callback=0.5)
    try:

        def hog():
            clock.now += 1.0

        lp.call_soon(hog)
        lp.call_soon(lp.stop)
        with caplog.at_level(logging.WARNING, logger="actorq.loop"):
            lp.run_forever()
        assert any(
            "hog" in r.getMessage() and "held the loop" in r.getMessage() for r in caplog.records
        )
    finally:
        lp.close()


def test_callback_exception_is_reported_and_loop_goes_on(loop):
    seen = []
    loop.set_exception_handler(lambda exc, what: seen.append(type(exc)))
    out = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(out.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [ZeroDivisionError]
    assert out == ["after"]


def test_wake_from_another_thread_interrupts_poll(loop):
    def other():
        time.sleep(0.05)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other)
    t.start()
    start = time.monotonic()
    loop.call_later(30, loop.stop)  # the loop sleeps 30 s unless the wake works
    loop.run_forever()
    t.join()
    assert time.monotonic() - start < 20


def test_wake_from_forked_child(loop, no_leaks):
    loop.call_soon(lambda: None)
    pid = os.fork()
    if pid == 0:  # child: only wake() the parent's loop
        try:
            time.sleep(0.05)
            loop.wake()
        finally:
            os._exit(0)
    try:
        woke = []
        loop._wake_entry.reader = lambda: (loop._drain_wake(), woke.append(1), loop.stop())
        loop.call_later(30, loop.stop)  # without the wake the loop sleeps until this
        loop.run_forever()
        assert woke
    finally:
        os.waitpid(pid, 0)


def test_loop_refuses_to_run_in_forked_child(loop, no_leaks):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            loop.run_forever()
            os.write(w, b"ran")
        except RuntimeError as e:
            os.write(w, b"refused" if "create a new Loop" in str(e) else b"other")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"refused"
    os.close(r)
    os.close(w)


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_reader_edge_triggered_data_during_callback_not_lost(loop):
    """Bytes that arrive while the callback runs (after its short read) raise a new edge."""
    a, b = _pair()
    got = []

    def on_read():
        while True:
            try:
                data = b.recv(4096)
            except BlockingIOError:
                break
            got.append(data)
            if len(data) < 4096:
                break  # a short read drained the stream at that instant
        if len(got) == 1:
            a.send(b"second")  # arrives while we are still in the callback
        if b"".join(got) == b"firstsecond":
            loop.stop()

    loop.add_reader(b, on_read)
    a.send(b"first")
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert b"".join(got) == b"firstsecond"
    assert loop.remove_reader(b)
    a.close()
    b.close()


def test_undrained_reader_gets_no_second_edge(loop):
    """Edge-triggered for real: a callback that leaves data behind is not called again."""
    a, b = _pair()
    calls = []

    def lazy():
        calls.append(b.recv(1))

    loop.add_reader(b, lazy)
    a.send(b"abc")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == [b"a"]
    loop.remove_reader(b)
    a.close()
    b.close()


def test_budget_limited_reader_is_resumed_without_an_edge(loop):
    a, b = _pair()
    a.send(b"x" * 100)
    got = bytearray()
    other = []

    def budgeted():
        chunk = b.recv(10)  # a budget of one 10-byte read per turn
        got.extend(chunk)
        if len(got) == 100:
            loop.stop()
            return False
        return True  # not drained: call me again

    loop.add_reader(b, budgeted)
    loop.call_soon(other.append, "ran between")
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert bytes(got) == b"x" * 100
    assert other == ["ran between"]
    loop.remove_reader(b)
    a.close()
    b.close()


def test_fd_closed_while_registered(loop):
    a, b = _pair()
    loop.add_reader(b, lambda: None)
    fd = b.fileno()
    b.close()  # closed without remove_reader: the kernel drops the registration
    assert loop.remove_reader(fd)  # no error
    c, d = _pair()  # likely reuses the number
    got = []
    loop.add_reader(d, lambda: (got.append(d.recv(10)), loop.stop()))
    c.send(b"new")
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert got == [b"new"]
    loop.remove_reader(d)
    for s in (a, c, d):
        s.close()


def test_fd_closed_while_registered_and_number_reused_without_remove(loop):
    a, b = _pair()
    loop.add_reader(b, lambda: None)
    fd = b.fileno()
    b.close()
    c, d = _pair()
    if c.fileno() == fd:
        c, d = d, c  # read on whichever end took the old number
    if d.fileno() != fd:
        assert os.dup2(d.fileno(), fd) == fd
    got = []
    loop.add_reader(fd, lambda: (got.append(os.read(fd, 10)), loop.stop()))
    c.send(b"again")
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert got == [b"again"]
    loop.remove_reader(fd)
    if d.fileno() != fd:
        os.close(fd)
    for s in (a, c, d):
        s.close()


def test_writer_edge(loop):
    a, b = _pair()
    seen = []
    loop.add_writer(a, lambda: (seen.append("w"), loop.stop()))
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert seen == ["w"]
    assert loop.remove_writer(a)
    assert not loop.remove_writer(a)
    a.close()
    b.close()


def test_coroutines_sleep_and_wait_fd(loop):
    a, b = _pair()

    async def main():
        assert current_loop() is loop
        t0 = loop.time()
        await sleep(0.02)
        assert loop.time() - t0 >= 0.02
        loop.call_later(0.01, a.send, b"ping")
        await wait_readable(b)
        assert b.recv(10) == b"ping"
        await wait_writable(a)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"
    assert loop.statistics()["fds"] == 1  # only the wake eventfd: waits unregister
    a.close()
    b.close()


def test_wait_readable_reports_readiness_present_before_the_wait(loop):
    a, b = _pair()
    a.send(b"already")

    async def main():
        await wait_readable(b)
        return b.recv(100)

    assert loop.run_until_complete(wait_for(main(), 10)) == b"already"
    a.close()
    b.close()


def test_future_resolved_by_callback(loop):
    async def main():
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, 7)
        return await fut

    assert loop.run_until_complete(main()) == 7


def test_future_exception_propagates(loop):
    async def main():
        fut = loop.create_future()
        loop.call_soon(fut.set_exception, ValueError("bad"))
        await fut

    with pytest.raises(ValueError, match="bad"):
        loop.run_until_complete(main())


def test_future_api(loop):
    f = Future(loop)
    with pytest.raises(RuntimeError):
        f.result()
    seen = []
    f.add_done_callback(seen.append)
    f.set_result(3)
    with pytest.raises(RuntimeError):
        f.set_result(4)
    assert f.done()
    assert f.result() == 3
    assert not f.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [f]


def test_cancel_runs_cleanup_and_raises_cancelled(loop):
    log = []

    async def worker():
        try:
            await sleep(100)
        except Cancelled:
            log.append("cancelled")
            raise
        finally:
            log.append("cleanup")

    async def main():
        t = loop.spawn(worker())
        await sleep(0.01)
        assert t.cancel()
        with pytest.raises(Cancelled):
            await t
        assert t.cancelled()
        return loop.statistics()["timers"]

    assert loop.run_until_complete(main()) == 0  # the sleep's timer was cancelled too
    assert log == ["cancelled", "cleanup"]


def test_cancel_wait_readable_unregisters_fd(loop):
    a, b = _pair()

    async def waiter():
        await wait_readable(b)

    async def main():
        t = loop.spawn(waiter())
        await sleep(0.01)
        assert loop.statistics()["fds"] == 2
        t.cancel()
        with pytest.raises(Cancelled):
            await t
        return loop.statistics()["fds"]

    assert loop.run_until_complete(main()) == 1
    a.close()
    b.close()


def test_cancel_before_first_step(loop):
    ran = []

    async def never():
        ran.append(1)

    async def main():
        t = loop.spawn(never())
        t.cancel()
        with pytest.raises(Cancelled):
            await t

    loop.run_until_complete(main())
    assert ran == []


def test_cancelled_is_not_caught_by_except_exception(loop):
    async def stubborn():
        try:
            await sleep(100)
        except Exception:
            return "swallowed"

    async def main():
        t = loop.spawn(stubborn())
        await sleep(0)
        t.cancel()
        with pytest.raises(Cancelled):
            await t

    loop.run_until_complete(main())


def test_wait_for_timeout_cancels_inner_and_runs_its_cleanup(loop):
    cleaned = []

    async def slow():
        try:
            await sleep(100)
        finally:
            cleaned.append(True)

    async def main():
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await wait_for(slow(), 0.02)
        return loop.time() - t0

    took = loop.run_until_complete(main())
    assert 0.02 <= took < 10
    assert cleaned == [True]


def test_wait_for_returns_result_in_time(loop):
    async def quick():
        await sleep(0.001)
        return 5

    assert loop.run_until_complete(wait_for(quick(), 10)) == 5


def test_task_exception_and_result(loop):
    async def boom():
        raise KeyError("k")

    with pytest.raises(KeyError):
        loop.run_until_complete(boom())


def test_current_loop_outside_raises():
    with pytest.raises(RuntimeError, match="no actorq loop"):
        current_loop()


def test_yielding_a_foreign_awaitable_is_an_error(loop):
    import asyncio

    class Foreign:
        def __await__(self):
            yield asyncio.Future  # what a foreign loop's future would hand up

    async def bad():
        await Foreign()

    with pytest.raises(RuntimeError, match="asyncio"):
        loop.run_until_complete(bad())


def test_statistics_count_fd_events(loop):
    a, b = _pair()
    n = []

    def on_read():
        n.append(b.recv(100))
        if len(n) == 3:
            loop.stop()
        else:
            a.send(b"x")

    loop.add_reader(b, on_read)
    a.send(b"x")
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert loop.statistics()["events"]["fd"] == 3
    loop.remove_reader(b)
    assert loop.statistics()["events"]["fd"] == 3  # kept after removal
    a.close()
    b.close()


def test_closed_loop_refuses_to_run():
    lp = Loop()
    lp.close()
    with pytest.raises(RuntimeError, match="closed"):
        lp.run_forever()
    lp.wake()  # harmless


def test_unawaited_failed_task_is_logged(loop, caplog):
    import gc

    async def boom():
        raise ValueError("lost")

    t = loop.spawn(boom())
    loop.call_later(0.01, loop.stop)
    with caplog.at_level(logging.ERROR, logger="actorq.loop"):
        loop.run_forever()
        del t
        gc.collect()
    assert any("nobody awaited" in r.getMessage() for r in caplog.records)


def test_awaited_failed_task_is_not_logged(loop, caplog):
    async def boom():
        raise ValueError("seen")

    async def main():
        with pytest.raises(ValueError):
            await loop.spawn(boom())

    with caplog.at_level(logging.ERROR, logger="actorq.loop"):
        loop.run_until_complete(main())
    assert not any("nobody awaited" in r.getMessage() for r in caplog.records)


def test_before_sleep_runs_only_when_about_to_block(loop):
    calls = []
    remove = loop.before_sleep(lambda: calls.append(loop.statistics()["ready"]))
    n = [0]

    def busy():  # 300 links of a call_soon chain: the loop never blocks meanwhile
        n[0] += 1
        if n[0] < 300:
            loop.call_soon(busy)

    loop.call_soon(busy)
    loop.call_later(0.05, loop.stop)  # after the chain the loop sleeps until this
    loop.run_forever()
    assert n[0] == 300
    assert calls  # it ran before blocking for the timer ...
    assert all(r == 0 for r in calls)  # ... and never while work was queued
    assert len(calls) < 10
    remove()
    remove()  # harmless twice


def test_before_sleep_hook_that_finds_work_keeps_the_loop_awake(loop):
    found = []
    pending = ["work"]

    def hook():
        if pending:
            loop.call_soon(found.append, pending.pop())

    loop.before_sleep(hook)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert found == ["work"]


def test_every_turns_runs_while_busy(loop):
    seen = []
    remove = loop.every_turns(lambda: seen.append(True))
    n = [0]

    def busy():
        n[0] += 1
        if n[0] < 128 * 200:
            loop.call_soon(busy)
        else:
            loop.stop()

    loop.call_soon(busy)
    loop.run_forever()
    assert len(seen) >= 2  # 200 turns of 128 callbacks each: every 64 turns
    remove()


def test_timer_times_must_be_finite(loop):
    with pytest.raises(ValueError, match="finite"):
        loop.call_later(float("inf"), print)
    with pytest.raises(ValueError, match="finite"):
        loop.call_at(float("nan"), print)
    assert loop.statistics()["timers"] == 0
