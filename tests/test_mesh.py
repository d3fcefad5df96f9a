"""The O(N) ring mesh: fds and touched memory grow with the nodes, not their
pairs; rings come into being on first write; one slab and one space doorbell
per writer serve all of its destinations; a restarted node finds what waits."""

from __future__ import annotations

import os
import select
import time

import pytest
from _procs import fork_call, kill_if_running, reap, rec

from actorq._runtime.mesh import RingMesh
from actorq.errors import RingFull
from actorq.shm import Ring, Slab
from actorq.shm.slab import SlabWriter


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _touched_kib(mesh: RingMesh) -> int:
    """KiB allocated in the mesh's memfds (a sparse memfd allocates on first touch)."""
    segs = [i.segment for i in mesh.inboxes] + [s.segment for s in mesh.slabs if s is not None]
    return sum(os.fstat(seg.fd).st_blocks // 2 for seg in segs)


def test_a_mesh_costs_fds_and_memory_per_node_not_per_pair(no_leaks: None) -> None:
    before = _open_fds()
    mesh = RingMesh(65, 1 << 18)
    try:
        fds = _open_fds() - before
        assert fds <= 6 * 65  # inbox + slab memfds (and mmap's dups), doorbell, space
        assert _touched_kib(mesh) <= 2 * 4 * 65  # a header page per inbox and per slab
        assert mesh.inboxes[7].capacity == 1 << 18  # full-size rings however many nodes
    finally:
        mesh.close()
    assert _open_fds() == before


def _build_257_within_4096_fds() -> bool:
    import resource

    from actorq._runtime.placing import check_fd_limit

    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))  # in this child only
    check_fd_limit(257)  # the runtime's own up-front check agrees
    mesh = RingMesh(257, 1 << 18)
    try:
        ok = _touched_kib(mesh) < 64 << 10 and mesh.inboxes[256].capacity == 1 << 18
        # every ring of one node in use at once still fits
        port = mesh.port(5)
        for dest in range(257):
            if dest != 5:
                port.writers[dest].send_nowait(b"x" * 64)
        return ok and _open_fds() < 4096
    finally:
        mesh.close()


def test_a_257_node_mesh_builds_inside_4096_fds_with_full_size_rings(no_leaks: None) -> None:
    assert reap(fork_call(_build_257_within_4096_fds), timeout=120) == 0


def test_a_pair_touches_its_ring_only_when_it_first_writes(no_leaks: None) -> None:
    mesh = RingMesh(17, 1 << 18)
    try:
        start = _touched_kib(mesh)
        a, b = mesh.port(3), mesh.port(9)
        assert _touched_kib(mesh) == start  # ports make nothing up front
        a.writers[9].send_nowait(b"hello")
        got: list[tuple[int, bytes]] = []
        b.inbox.drain(lambda s, x: got.append((s, bytes(x))))
        assert got == [(3, b"hello")]
        assert _touched_kib(mesh) - start <= 8  # the one slot's first page (and a spare)
        assert sorted(a.writers) == [9]
        with pytest.raises(KeyError):
            a.writers[3]  # no ring to oneself
    finally:
        mesh.close()


def test_large_records_use_the_writers_one_slab_for_every_destination(no_leaks: None) -> None:
    mesh = RingMesh(4, 4096)
    try:
        src, d1, d2 = mesh.port(1), mesh.port(2), mesh.port(3)
        big = [rec(i, 100_000 + i) for i in range(3)]
        src.writers[2].send_nowait(big[0])
        src.writers[3].send_nowait(big[1])
        src.writers[2].send_nowait(big[2])
        got: dict[int, list[bytes]] = {2: [], 3: []}
        d1.inbox.drain(lambda s, x: got[2].append(bytes(x)))
        d2.inbox.drain(lambda s, x: got[3].append(bytes(x)))
        assert got == {2: [big[0], big[2]], 3: [big[1]]}
        assert src.writers[2].ring.slab is src.writers[3].ring.slab is mesh.slabs[1]
    finally:
        mesh.close()


def _take_some(mesh: RingMesh, limit: int | None, expect: list[bytes]) -> bool:
    got: list[bytes] = []
    port = mesh.port(2)  # what a (restarted) worker does after fork
    port.inbox.drain(lambda s, x: got.append(bytes(x)), limit)
    return got == expect


def test_a_restarted_node_finds_the_records_waiting_in_its_slots(no_leaks: None) -> None:
    mesh = RingMesh(3, 4096)
    try:
        w = mesh.port(1).writers[2]
        sent = [rec(i, 8) for i in range(5)] + [rec(9, 50_000)]  # the last through the slab
        for x in sent:
            w.send_nowait(x)
        assert reap(fork_call(_take_some, mesh, 3, sent[:3])) == 0  # then it dies
        assert reap(fork_call(_take_some, mesh, None, sent[3:])) == 0  # its successor
    finally:
        mesh.close()


def test_one_space_doorbell_wakes_a_writer_for_any_of_its_rings(no_leaks: None) -> None:
    mesh = RingMesh(3, 256)
    try:
        src = mesh.port(0)
        w1, w2 = src.writers[1], src.writers[2]
        assert w1.space_fd == w2.space_fd == mesh.space_fds[0]
        while True:
            try:
                w2.send_nowait(bytes(100))
            except RingFull:
                break
        assert not w2.wait_for_space(100)
        assert not select.select([src.space_fd], [], [], 0)[0]
        mesh.port(2).inbox.drain(lambda s, x: None)
        assert select.select([src.space_fd], [], [], 1)[0]  # the reader of ring 0->2 rang
        assert w2.wait_for_space(100)
    finally:
        mesh.close()


# -- one slab, many readers ----------------------------------------------------------
def test_a_writer_waiting_for_a_buffer_is_rung_by_whichever_reader_returns_one(
    no_leaks: None,
) -> None:
    slab = Slab.create(((8192, 1),), readers=2)
    space = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    a = Ring.create(4096, slab=None)
    b = Ring.create(4096, slab=None)
    try:
        # Two rings sharing one slab (readers 0 and 1) and one space doorbell.
        for ring, reader in ((a, 0), (b, 1)):
            ring.slab, ring.slab_reader, ring.slab_threshold = slab, reader, 100
            os.close(ring.space_fd)
            ring.space_fd = os.dup(space)
        wa, wb = a.writer(), b.writer()
        ra, rb = a.reader(zero_copy=True), b.reader()
        wa.send_nowait(b"A" * 5000)  # takes the only buffer
        leases = []
        ra.drain(lambda v: leases.append(ra.hold()))
        with pytest.raises(RingFull, match="held by a reader"):
            wb.send_nowait(b"B" * 5000)
        assert not wb.wait_for_space(5000)  # waits on the slab, not on ring b
        leases[0].release()  # reader 0 gives it back...
        assert select.select([space], [], [], 1)[0]  # ...and rings the writer for ring b
        assert wb.wait_for_space(5000)
        wb.send_nowait(b"B" * 5000)
        got: list[bytes] = []
        rb.drain(got.append)
        assert got == [b"B" * 5000]
    finally:
        a.slab = b.slab = None  # the slab is closed once, below
        a.close()
        b.close()
        slab.close()
        os.close(space)


def test_a_new_slab_writer_recovers_who_holds_which_buffer() -> None:
    slab = Slab.create(((4096, 3),), readers=3)
    try:
        old = SlabWriter(slab)
        _h0, v0 = old.alloc(100, reader=0)
        h1, v1 = old.alloc(100, reader=2)
        h2, v2 = old.alloc(100, reader=2)
        for v in (v0, v1, v2):
            v.release()
        r2 = slab.reader(2)
        r2.free(h1)  # returned, never consumed by the old writer
        old.close()
        new = SlabWriter(slab)  # a restarted writer
        h, v = new.alloc(100, reader=1)
        v.release()
        assert (h >> 32) & 0xFF_FFFF == (h1 >> 32) & 0xFF_FFFF  # the one returned buffer
        with pytest.raises(RingFull):
            new.alloc(100, reader=1)  # h0 and h2 are still out
        r2.free(h2)
        assert new.can_alloc(100)
        r2.close()
        new.close()
    finally:
        slab.close()


def test_slab_reader_ids_are_checked() -> None:
    slab = Slab.create(((4096, 1),), readers=2)
    try:
        with pytest.raises(ValueError, match=r"readers 0\.\.1"):
            slab.reader(2)
    finally:
        slab.close()


# -- a port parked on several destinations at once ----------------------------------
def _slow_node(mesh: RingMesh, index: int, n: int) -> bool:
    from actorq._codec import unpack

    port = mesh.port(index)
    got = [0]

    def count(s: int, record: memoryview) -> None:
        got[0] += len(unpack(record))

    deadline = time.monotonic() + 60
    while got[0] < n and time.monotonic() < deadline:
        port.inbox.wait(timeout=1)
        port.inbox.drain(count, 1)  # slower than the sender: it must park
        time.sleep(0.001)
    return got[0] == n


def test_one_space_doorbell_resumes_every_parked_destination(no_leaks: None) -> None:
    import msgpack

    from actorq.loop import Loop

    n = 3000
    mesh = RingMesh(3, 4096)
    pids = []
    loop = Loop()
    try:
        pids = [fork_call(_slow_node, mesh, d, n) for d in (1, 2)]
        port = mesh.port(0)
        port.start(loop, lambda s, msgs: None)
        message = msgpack.packb(b"m" * 100)
        parked = set()

        async def flood() -> None:
            from actorq.loop import sleep

            for i in range(n):
                for d in (1, 2):
                    port.send(d, message)
                    if port.queued(d):
                        parked.add(d)
                if i % 20 == 0:
                    port.flush()
                    await sleep(0)
            port.flush()
            deadline = time.monotonic() + 60
            while port.backlog_total and time.monotonic() < deadline:
                await sleep(0.005)

        loop.run_until_complete(flood())
        assert parked == {1, 2}  # both rings filled: both waited on the one space fd
        assert port.backlog_total == 0
        assert [reap(p, timeout=60) for p in pids] == [0, 0]
        port.close()
    finally:
        loop.close()
        for p in pids:
            kill_if_running(p)
        mesh.close()
