"""The SPSC ring: records, wrap-around, batching, doorbells, backpressure,
corruption, slabs and the inbox. Cross-process tests fork real children."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from _procs import fork_call, kill_if_running, memfd_maps, reap, rec

from actorq.errors import PayloadTooLarge, RingCorrupt, RingFull
from actorq.shm import Inbox, Ring
from actorq.shm import ring as ringmod

_forked: list[int] = []


@pytest.fixture(autouse=True)
def _kill_leftover_children(no_leaks: None) -> Iterator[None]:
    """A test that fails before reaping its child must not also leak it (this
    runs before no_leaks checks, because it depends on it)."""
    yield
    while _forked:
        kill_if_running(_forked.pop())


def fork(fn, *args) -> int:  # type: ignore[no-untyped-def]
    """Run fn(*args) in a forked child (killed after the test if still running)."""
    pid = fork_call(fn, *args)
    _forked.append(pid)
    return pid


# -- single process ---------------------------------------------------------------------
def test_records_come_out_in_order_across_many_wraps(no_leaks: None) -> None:
    with Ring.create(256, slab=None) as ring:
        w, r = ring.writer(), ring.reader()
        assert ring.max_record == 120
        got: list[bytes] = []
        sizes = [i % (ring.max_record + 1) for i in range(2000)]
        for i, n in enumerate(sizes):
            while True:
                try:
                    w.send_nowait(rec(i, n))
                    break
                except RingFull:
                    assert r.drain(got.append) > 0
        r.drain(got.append)
        assert got == [rec(i, n) for i, n in enumerate(sizes)]


def test_batched_write_is_invisible_until_publish() -> None:
    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        for i in range(10):
            w.write(rec(i, 16))
        assert not r.pending()
        assert r.drain(print) == 0
        w.publish()
        got: list[bytes] = []
        assert r.drain(got.append) == 10
        assert got == [rec(i, 16) for i in range(10)]


def test_drain_limit_and_callback_errors_keep_order() -> None:
    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        for i in range(10):
            w.send_nowait(rec(i, 8))
        got: list[bytes] = []
        assert r.drain(got.append, limit=3) == 3

        def boom(x: bytes) -> None:
            got.append(x)
            if len(got) == 5:
                raise KeyError("callback failed")

        with pytest.raises(KeyError):
            r.drain(boom)
        assert r.drain(got.append) == 5
        assert got == [rec(i, 8) for i in range(10)]


def test_zero_copy_views_are_released_after_the_callback() -> None:
    with Ring.create(4096, slab=None) as ring:
        w, r = ring.writer(), ring.reader(zero_copy=True)
        w.send_nowait(b"abcdef")
        kept: list[memoryview] = []
        seen: list[bytes] = []

        def cb(v: memoryview) -> None:
            assert isinstance(v, memoryview)
            seen.append(bytes(v))
            kept.append(v)

        r.drain(cb)
        assert seen == [b"abcdef"]
        with pytest.raises(ValueError):
            bytes(kept[0])  # released: no reading the ring after the writer may reuse it


def test_full_ring_raises_ringfull_and_payload_too_large_names_sizes() -> None:
    with Ring.create(256, slab=None) as ring:
        w = ring.writer()
        with pytest.raises(PayloadTooLarge, match="121-byte record"):
            w.send_nowait(bytes(121))
        w.send_nowait(bytes(120))
        w.send_nowait(bytes(120))  # 2 x (8 + 120) = 256: exactly full
        with pytest.raises(RingFull, match="is full"):
            w.send_nowait(b"")


def test_busy_ring_rings_no_doorbell_and_a_sleeping_reader_is_woken() -> None:
    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        for i in range(100):
            w.send_nowait(rec(i, 32))
            if i % 10 == 0:
                r.drain(lambda x: None)
        assert w.doorbells == 0  # reader never announced sleep: no syscall per record
        r.drain(lambda x: None)
        assert r.prepare_sleep()  # empty: safe to sleep
        assert not select.select([r.doorbell_fd], [], [], 0)[0]
        w.send_nowait(b"wake")
        assert w.doorbells == 1
        assert select.select([r.doorbell_fd], [], [], 1)[0]
        r.wake_up()
        assert not select.select([r.doorbell_fd], [], [], 0)[0]  # reset
        w.send_nowait(b"again")
        assert w.doorbells == 1  # awake again: no more rings


def test_prepare_sleep_refuses_when_work_is_waiting() -> None:
    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        w.send_nowait(b"x")
        assert not r.prepare_sleep()
        w.send_nowait(b"y")
        assert w.doorbells == 0  # the announcement was withdrawn


# -- corruption -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "why"),
    [
        (0xDEAD_BEEF_0000_0010, "impossible record header"),
        ((ringmod._TAG_INLINE << 32) | 5000, "runs past"),
        ((ringmod._TAG_WRAP << 32) | 3, "wrap marker"),
    ],
)
def test_impossible_header_raises_ringcorrupt_naming_ring_and_offset(header: int, why: str) -> None:
    with Ring.create(4096, name="actorq-corrupt") as ring:
        w, r = ring.writer(), ring.reader()
        w.send_nowait(b"good")
        w.send_nowait(b"soon-bad")
        r.drain(lambda x: None, limit=1)
        dq = ring.segment.buf[ringmod.HDR :].cast("Q")
        dq[2] = header  # second record's header word, at data offset 16
        dq.release()
        got: list[bytes] = []
        with pytest.raises(RingCorrupt, match=rf"actorq-corrupt.*{why}.*offset 16"):
            r.drain(got.append)
        assert got == []  # never hands garbage to the caller
        with pytest.raises(RingCorrupt):
            r.drain(got.append)  # stays poisoned


def test_head_beyond_capacity_is_corruption() -> None:
    with Ring.create(4096, name="actorq-corrupt2") as ring:
        r = ring.reader()
        ctl = ring.segment.buf[: ringmod.HDR].cast("Q")
        ctl[ringmod._HEAD] = 1 << 40
        ctl.release()
        with pytest.raises(RingCorrupt, match=r"actorq-corrupt2.*not within one ring"):
            r.drain(print)


def test_not_a_ring_is_refused() -> None:
    from actorq.shm import Segment

    seg = Segment.create(8192, name="actorq-notring")
    with pytest.raises(RingCorrupt, match="bad magic"):
        Ring.attach(os.dup(seg.fd), -1, -1)
    with pytest.raises(ValueError, match="not an actorq inbox"):
        Ring.slot(seg, 0, doorbell_fd=-1, space_fd=-1)
    seg.close()


def test_non_x86_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ringmod, "_ARCH_OK", False)
    with pytest.raises(ringmod.RingError, match="total store order"):
        Ring.create(4096)


# -- slab -------------------------------------------------------------------------------
def test_large_records_go_through_the_slab_and_buffers_recycle(no_leaks: None) -> None:
    classes = ((8192, 3), (65536, 1))
    with Ring.create(4096, slab=classes, slab_threshold=1000) as ring:
        w, r = ring.writer(), ring.reader()
        got: list[bytes] = []
        sizes = [5000, 100, 8192, 20000, 1001, 3]
        for rnd in range(5):  # more rounds than buffers: they must come back
            for i, n in enumerate(sizes):
                w.send_nowait(rec(rnd * 10 + i, n))
            r.drain(got.append)
        assert got == [rec(rnd * 10 + i, n) for rnd in range(5) for i, n in enumerate(sizes)]
        with pytest.raises(PayloadTooLarge, match="largest class"):
            w.send_nowait(bytes(65537))
        w.send_nowait(bytes(9000))  # takes the only 64 KiB buffer
        with pytest.raises(RingFull, match="slab"):
            w.send_nowait(bytes(9000))


def test_zero_copy_slab_record_can_be_held_and_released() -> None:
    with Ring.create(4096, slab=((8192, 1),), slab_threshold=100) as ring:
        w, r = ring.writer(), ring.reader(zero_copy=True)
        w.send_nowait(b"L" * 5000)
        leases = []
        r.drain(lambda v: leases.append(r.hold()))
        (lease,) = leases
        assert bytes(lease.view) == b"L" * 5000
        assert not w.wait_for_space(5000)  # the only buffer is held
        lease.release()
        assert select.select([w.space_fd], [], [], 1)[0]  # release rang the space doorbell
        assert w.wait_for_space(5000)
        w.send_nowait(b"M" * 5000)
        assert r.drain(lambda v: None) == 1


# -- backpressure -----------------------------------------------------------------------
def test_wait_for_space_rings_once_the_reader_frees_room() -> None:
    with Ring.create(256, slab=None) as ring:
        w, r = ring.writer(), ring.reader()
        w.send_nowait(bytes(100))
        w.send_nowait(bytes(100))
        assert w.wait_for_space(100) is False
        assert not select.select([w.space_fd], [], [], 0)[0]
        r.drain(lambda x: None, limit=1)
        assert select.select([w.space_fd], [], [], 1)[0]
        assert w.wait_for_space(100) is True
        w.send_nowait(bytes(100))
        r.drain(lambda x: None)
        assert r.space_rings == 1  # once per request, not per drain


def _slow_reader(ring: Ring, n: int) -> bool:
    r = ring.reader()
    got: list[bytes] = []
    while len(got) < n:
        if not r.wait(timeout=10):
            return False
        time.sleep(0.01)  # slower than the writer: it must park
        r.drain(got.append, limit=3)
    return got == [rec(i, 100) for i in range(n)]


def test_full_ring_parks_the_sender_and_resumes_it(no_leaks: None) -> None:
    with Ring.create(512, slab=None) as ring:
        pid = fork(_slow_reader, ring, 40)
        w = ring.writer()
        parked = 0
        for i in range(40):
            data = rec(i, 100)
            try:
                w.send_nowait(data)
            except RingFull:
                parked += 1
                w.send(data, timeout=20)  # parks on space_fd until the reader frees room
        assert reap(pid) == 0
        assert parked > 0


# -- cross-process ----------------------------------------------------------------------
def _echo(ring_in: Ring, ring_out: Ring, n: int) -> bool:
    r, w = ring_in.reader(), ring_out.writer()
    done = 0
    while done < n:
        if not r.wait(timeout=10):
            return False
        done += r.drain(w.send)
    return True


def test_ping_pong_between_processes_with_sleeping_readers(no_leaks: None) -> None:
    before = memfd_maps()
    a, b = Ring.create(4096), Ring.create(4096)
    pid = fork(_echo, a, b, 200)
    w, r = a.writer(), b.reader()
    for i in range(200):
        w.send_nowait(rec(i, i % 64))
        got: list[bytes] = []
        while not got:
            assert r.wait(timeout=10)
            r.drain(got.append)
        assert got == [rec(i, i % 64)]
        if i % 50 == 0:
            time.sleep(0.02)  # let the echo side fall asleep: it must be woken
    assert reap(pid) == 0
    assert w.doorbells > 0
    a.close()
    b.close()
    assert memfd_maps() == before


def test_ring_handles_work_in_an_unrelated_interpreter(no_leaks: None) -> None:
    ring = Ring.create(4096, name="actorq-handles")
    parent, child = socket.socketpair()
    code = textwrap.dedent(
        """
        import socket, sys
        from actorq.shm import Ring
        s = socket.socket(fileno=int(sys.argv[1]))
        msg, fds, _, _ = socket.recv_fds(s, 64, 8, socket.MSG_CMSG_CLOEXEC)
        handles = list(fds) + [int(x) for x in msg.split()]
        ring = Ring.attach(*handles)
        w = ring.writer()
        for i in range(1000):
            w.send(str(i).encode(), timeout=10)
        ring.close()
        """
    )
    h = ring.handles()
    fds = [fd for fd in h[:4] if fd >= 0]
    assert h[4:] == (-1, 0)
    with parent, child:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(child.fileno())], pass_fds=[child.fileno()]
        )
        got: list[bytes] = []
        try:
            socket.send_fds(parent, [b"-1 0"], fds)  # no sender id (not a slot), slab reader 0
            r = ring.reader()
            while len(got) < 1000:
                assert r.wait(timeout=10), f"child exited with {proc.poll()}"
                r.drain(got.append)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            ring.close()
    assert got == [str(i).encode() for i in range(1000)]


# -- inbox ------------------------------------------------------------------------------
def test_inbox_finds_flagged_rings_and_keeps_per_sender_order(no_leaks: None) -> None:
    with Inbox.create(64, 4096, name="actorq-inbox-test") as inbox:
        rings = {s: inbox.ring(s) for s in (3, 17, 63)}
        writers = {s: ring.writer() for s, ring in rings.items()}
        got: list[tuple[int, bytes]] = []
        assert inbox.drain(lambda s, x: got.append((s, x))) == 0
        assert inbox.senders() == [3, 17, 63]  # a writer opens its slot
        writers[17].send_nowait(b"a")
        writers[63].send_nowait(b"b")
        writers[17].send_nowait(b"c")
        assert inbox._flags.tobytes().count(1) == 2  # only the senders with work are flagged
        assert inbox.drain(lambda s, x: got.append((s, x))) == 3
        assert sorted(got) == [(17, b"a"), (17, b"c"), (63, b"b")]
        assert not inbox.pending()
        assert inbox.prepare_sleep()
        writers[3].send_nowait(b"z")
        assert writers[3].doorbells == 1
        assert writers[17].doorbells == 0
        assert inbox.wait(timeout=1)
        got.clear()
        inbox.drain(lambda s, x: got.append((s, x)))
        assert got == [(3, b"z")]


def _touched_kib(seg: object) -> int:
    return os.fstat(seg.fd).st_blocks // 2  # type: ignore[attr-defined]


def test_inbox_slots_cost_memory_only_once_written(no_leaks: None) -> None:
    with Inbox.create(256, 1 << 18, name="actorq-inbox-sparse") as inbox:
        assert inbox.segment.size > 256 << 18  # a full ring for every sender
        assert _touched_kib(inbox.segment) <= 4  # only the header page
        rings = [inbox.ring(s) for s in range(256)]  # slots as rings: still nothing touched
        assert _touched_kib(inbox.segment) <= 4
        assert inbox.drain(print) == 0
        w = rings[200].writer()
        w.send_nowait(b"x" * 1000)
        got: list[tuple[int, bytes]] = []
        inbox.drain(lambda s, x: got.append((s, bytes(x))))
        assert got == [(200, b"x" * 1000)]
        assert _touched_kib(inbox.segment) <= 8  # header + the one slot's first page


def _drain_one_and_die(inbox: Inbox) -> bool:
    def die(s: int, x: bytes) -> None:
        os._exit(0)  # a worker killed while handling its first record

    inbox.drain(die)
    return False


def test_a_resumed_inbox_reader_finds_records_its_predecessor_unflagged(no_leaks: None) -> None:
    with Inbox.create(4, 4096) as inbox:
        w = inbox.ring(2).writer()
        for i in range(3):
            w.send_nowait(rec(i, 8))
        assert reap(fork(_drain_one_and_die, inbox)) == 0  # cleared the flag, then died
        assert not inbox.pending()  # nothing points at the records any more...
        inbox.resume()  # ...until a new reader looks at every opened slot once
        got: list[bytes] = []
        inbox.drain(lambda s, x: got.append(x))
        assert got == [rec(i, 8) for i in range(3)]  # not yet consumed: the tail never moved


def test_inbox_drain_limit_leaves_the_rest_flagged() -> None:
    with Inbox.create(4, 4096) as inbox:
        writers = [inbox.ring(s).writer() for s in range(4)]
        for w in writers:
            for i in range(5):
                w.send_nowait(rec(i, 8))
        inbox.drain(lambda s, x: None)
        for w in writers:
            for i in range(5):
                w.send_nowait(rec(i, 8))
        got: list[tuple[int, bytes]] = []
        # a limit is shared equally: 8 over 4 flagged senders is 2 records each
        assert inbox.drain(lambda s, x: got.append((s, x)), limit=8) == 8
        assert sorted(t for t, _ in got) == [0, 0, 1, 1, 2, 2, 3, 3]
        assert inbox.pending()
        assert inbox.drain(lambda s, x: got.append((s, x))) == 12
        for s in range(4):
            assert [x for t, x in got if t == s] == [rec(i, 8) for i in range(5)]


def test_inbox_drain_is_fair_to_a_quiet_sender_beside_a_flooding_one() -> None:
    with Inbox.create(2, 1 << 16) as inbox:
        flood, quiet = inbox.ring(0).writer(), inbox.ring(1).writer()
        for i in range(1000):
            flood.send_nowait(rec(i, 8))
        quiet.send_nowait(rec(0, 8))
        got: list[int] = []
        inbox.drain(lambda s, x: got.append(s), limit=64)
        # the quiet sender's one record is in the first call, not after 1000 others
        assert got.count(1) == 1
        assert got.count(0) == 32


def _inbox_sender(ring: Ring, sid: int, n: int) -> bool:
    w = ring.writer()
    for i in range(n):
        w.send(sid.to_bytes(2, "little") + rec(i, 8 + i % 40), timeout=20)
        if i % 97 == 0:
            time.sleep(0.003)  # let the reader fall asleep now and then
    return True


def test_inbox_many_senders_across_processes(no_leaks: None) -> None:
    n = 500
    with Inbox.create(8, 1024) as inbox:
        rings = [inbox.ring(s) for s in range(4)]
        pids = [fork(_inbox_sender, rings[s], s, n) for s in range(4)]
        got: dict[int, list[bytes]] = {s: [] for s in range(4)}

        def cb(s: int, x: bytes) -> None:
            assert int.from_bytes(x[:2], "little") == s
            got[s].append(x[2:])

        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < 4 * n and time.monotonic() < deadline:
            inbox.wait(timeout=1)
            inbox.drain(cb)
        assert [reap(p) for p in pids] == [0, 0, 0, 0]
        for s in range(4):
            assert got[s] == [rec(i, 8 + i % 40) for i in range(n)]


def test_a_replacement_writer_never_reuses_a_slab_buffer_still_in_flight() -> None:
    with Ring.create(4096, slab=((8192, 2),), slab_threshold=100) as ring:
        r = ring.reader()
        w1 = ring.writer()
        w1.send_nowait(b"A" * 5000)  # in flight: unread
        w1.send_nowait(b"B" * 5000)
        got: list[bytes] = []
        r.drain(got.append, limit=1)  # A's buffer comes back, B's is still out
        w1.close()
        w2 = ring.writer()  # e.g. a restarted worker
        w2.send_nowait(b"C" * 5000)  # must take A's old buffer, not B's
        with pytest.raises(RingFull, match="slab"):
            w2.send_nowait(b"D" * 5000)
        r.drain(got.append)
        assert got == [b"A" * 5000, b"B" * 5000, b"C" * 5000]


def test_send_async_parks_a_coroutine_while_the_loop_keeps_running(no_leaks: None) -> None:
    from actorq.loop import Loop

    with Ring.create(256, slab=None) as ring:
        pid = fork(_slow_reader, ring, 40)
        w = ring.writer()
        loop = Loop()
        ticks = []

        def tick() -> None:  # other work the loop does while the sender is parked
            ticks.append(1)
            loop.call_later(0.002, tick)

        async def sender() -> None:
            for i in range(40):
                await w.send_async(rec(i, 100))

        loop.call_soon(tick)
        try:
            loop.run_until_complete(sender())
        finally:
            loop.close()
        assert reap(pid) == 0
        assert len(ticks) > 5


def test_inbox_ring_attached_from_handles_notifies_the_inbox(no_leaks: None) -> None:
    with Inbox.create(4, 4096, name="actorq-inbox-attach") as inbox:
        ring = inbox.ring(2)
        h = ring.handles()
        assert h[0] == inbox.segment.fd  # a slot travels as its inbox's segment
        assert h[4:] == (2, 0)
        other = Ring.attach(*[os.dup(fd) if fd >= 0 else -1 for fd in h[:4]], *h[4:])
        try:
            w = other.writer()
            assert inbox.drain(print) == 0
            assert inbox.prepare_sleep()
            w.send_nowait(b"via handles")
            assert w.doorbells == 1
            assert inbox.wait(timeout=1)
            got: list[tuple[int, bytes]] = []
            inbox.drain(lambda s, x: got.append((s, x)))
            assert got == [(2, b"via handles")]
        finally:
            other.close()


def test_ring_memory_is_bound_to_the_requested_node(no_leaks: None) -> None:
    from actorq.shm import numa_nodes
    from actorq.shm import segment as segmod

    if segmod._libnuma() is None:
        pytest.skip("libnuma not available here")
    node = numa_nodes()[0]
    with Ring.create(1 << 16, node=node, slab=((65536, 2),)) as ring:
        line = ring.segment.numa_maps()
        assert line is not None
        assert f"bind:{node}" in line
        slab_line = ring.slab.segment.numa_maps()
        assert slab_line is not None
        assert f"bind:{node}" in slab_line  # bound, populated lazily on that node


def _sleep_and_die(inbox: Inbox) -> bool:
    return inbox.prepare_sleep()  # announces sleep, then exits without waking


def test_a_restarted_inbox_reader_never_reuses_a_sleep_epoch(no_leaks: None) -> None:
    with Inbox.create(2, 4096) as inbox:
        w = inbox.ring(0).writer()
        inbox.drain(print)
        assert reap(fork(_sleep_and_die, inbox)) == 0  # a worker that died asleep
        w.send_nowait(b"a")
        assert w.doorbells == 1  # rang for the dead reader's epoch
        inbox.wake_up()
        inbox.drain(lambda s, x: None)
        # The replacement reader (this process never slept) announces sleep:
        # it must pick a new epoch, or the writer thinks it already rang.
        assert inbox.prepare_sleep()
        w.send_nowait(b"b")
        assert w.doorbells == 2
        inbox.wake_up()


def _spin_policy() -> bool:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        before = r.spinner.budget
        assert not r.spin()  # same CPU as the writer: a single look, no spin
        same_cpu_ok = r.spinner.budget == before  # a spin that missed would halve it
        w.close()
        ctl = ring.segment.buf[: ringmod.HDR].cast("Q")
        ctl[ringmod._WRITER_CPU] = 0  # a writer that may run anywhere
        ctl.release()
        assert not r.spin()
        return same_cpu_ok and r.spinner.budget < before  # it spun and missed


def test_a_reader_never_spins_on_its_writers_cpu(no_leaks: None) -> None:
    assert reap(fork(_spin_policy)) == 0


def _inbox_echo(inbox: Inbox, out: Ring, n: int) -> bool:
    inbox.spinner.max_s = inbox.spinner.min_s = inbox.spinner.budget = 0.0
    w = out.writer()
    seen = [0]

    def cb(s: int, x: bytes) -> None:
        seen[0] += 1
        w.send_nowait(x)

    while seen[0] < n:
        if not inbox.wait(timeout=10):
            return False  # a lost wake-up: the peer is always waiting for us
        inbox.drain(cb)
    return True


def test_no_wake_up_is_lost_when_both_sides_always_sleep(no_leaks: None) -> None:
    n = 2000
    with Inbox.create(2, 4096) as mine, Inbox.create(2, 4096) as theirs:
        to_them = theirs.ring(0)
        to_me = mine.ring(1)
        mine.spinner.max_s = mine.spinner.min_s = mine.spinner.budget = 0.0
        pid = fork(_inbox_echo, theirs, to_me, n)
        w = to_them.writer()
        got: list[bytes] = []
        for i in range(n):
            w.send_nowait(i.to_bytes(4, "little"))
            while len(got) <= i:
                assert mine.wait(timeout=10), f"lost wake-up at round trip {i}"
                mine.drain(lambda s, x: got.append(x))
        assert reap(pid) == 0
        assert got == [i.to_bytes(4, "little") for i in range(n)]
        assert w.doorbells > 0


def test_a_drain_that_keeps_finding_records_frees_their_space_as_it_goes() -> None:
    # A callback that answers at once (here: writes the next record into the same
    # ring) keeps one drain call going; the writer must see the space it freed.
    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        w.send_nowait(rec(0, 8))
        w.publish()
        seen: list[bytes] = []

        def again(x: bytes) -> None:
            seen.append(bytes(x))
            if len(seen) < 2000:  # far more than 4096 bytes' worth in one drain call
                w.send_nowait(rec(len(seen), 8))
                w.publish()

        assert r.drain(again) == 2000
        assert seen == [rec(i, 8) for i in range(2000)]


def test_stats_show_positions_and_doorbells_from_shared_memory() -> None:
    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        w.send_nowait(bytes(10))
        st = ring.stats()
        assert (st["head"], st["tail"], st["used"]) == (24, 0, 24)
        assert r.prepare_sleep() is False  # work is waiting
        r.drain(lambda x: None)
        assert r.prepare_sleep()
        assert ring.stats()["reader_sleeping"] == 1
        w.send_nowait(b"x")
        r.wake_up()
        st = ring.stats()
        assert st["doorbells"] == 1
        assert st["reader_sleeping"] == 0
        assert st["tail"] == 24


def test_release_fds_keeps_the_ring_working_with_two_fds(no_leaks: None) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with Ring.create(4096) as ring:
        w, r = ring.writer(), ring.reader()
        before = open_fds()
        ring.release_fds()  # ring and slab memfds; mmap's own dups stay
        assert open_fds() == before - 2
        with pytest.raises(ringmod.RingError, match="release_fds"):
            ring.handles()
        w.send_nowait(b"still" * 5000)  # through the slab
        w.send_nowait(b"works")
        got: list[bytes] = []
        r.drain(got.append)
        assert got == [b"still" * 5000, b"works"]


def test_inbox_zero_copy_slab_record_can_be_held() -> None:
    with Inbox.create(2, 4096, zero_copy=True, slab_threshold=100) as inbox:
        w = inbox.ring(1, slab=((8192, 1),)).writer()
        w.send_nowait(b"S" * 3000)
        leases = []
        inbox.drain(lambda s, v: leases.append(inbox.hold(s)))
        (lease,) = leases
        assert bytes(lease.view) == b"S" * 3000
        assert not w.wait_for_space(3000)  # the only buffer is held
        lease.release()
        assert w.wait_for_space(3000)
