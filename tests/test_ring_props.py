"""Property tests across real processes: whatever the sizes, speeds and sleeps,
every record arrives exactly once, in order, intact.

Each example forks a consumer that checks the stream against the expected
records and exits 0 only if it saw exactly them; the parent produces.
"""

from __future__ import annotations

import os
import select
import sys
import time

from _procs import fork_call as child
from _procs import kill_if_running, memfd_maps, reap, rec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorq.errors import RingFull
from actorq.shm import Inbox, Ring, RingWriter

SLAB = ((2048, 2), (8192, 2))
# ACTORQ_PROP_EXAMPLES=300 for a soak run; CI keeps it small (2 busy cores).
EXAMPLES = int(os.environ.get("ACTORQ_PROP_EXAMPLES", "12"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # no_leaks wraps all examples of a test: it checks once, after the last one.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    database=None,
)


@st.composite
def workloads(draw: st.DrawFn) -> tuple[int, bool, list[int]]:
    capacity = draw(st.sampled_from([256, 1024, 4096]))
    slab = draw(st.booleans())
    max_inline = min(capacity // 2 - 8, 200) if slab else capacity // 2 - 8
    biggest = SLAB[-1][0] if slab else max_inline
    size = st.one_of(
        st.just(0),
        st.just(biggest),
        st.just(max_inline),
        st.integers(0, min(max_inline, 64)),
        st.integers(0, max_inline),
        st.integers(max_inline + 1, biggest) if slab else st.integers(0, max_inline),
    )
    sizes = draw(st.lists(size, min_size=1, max_size=400))
    return capacity, slab, sizes


def consume(ring: Ring, sizes: list[int], style: str, zero_copy: bool) -> bool:
    r = ring.reader(zero_copy=zero_copy)
    got: list[bytes] = []
    add = (lambda v: got.append(bytes(v))) if zero_copy else got.append
    n = len(sizes)
    k = 0
    while len(got) < n:
        k += 1
        if not r.wait(timeout=20):
            print(f"consumer: no record for 20 s after {len(got)} of {n}", file=sys.stderr)
            return False
        if style == "slow":
            time.sleep(0.0003)
            r.drain(add, limit=1 + k % 3)
        elif style == "sleepy" and k % 7 == 0:
            time.sleep(0.003)  # the producer fills the ring and parks; we are asleep
            r.drain(add)
        else:
            r.drain(add)
    want = [rec(i, s) for i, s in enumerate(sizes)]
    if got != want:
        bad = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        print(
            f"consumer: record {bad} differs: {got[bad][:16]!r} vs {want[bad][:16]!r}",
            file=sys.stderr,
        )
        return False
    return r.drain(add) == 0  # and nothing extra


def produce(w: RingWriter, sizes: list[int], style: str) -> None:
    batch = 1 + len(sizes) % 7
    for i, n in enumerate(sizes):
        data = rec(i, n)
        if style == "batched":
            while True:
                try:
                    w.write(data)
                    break
                except RingFull:
                    w.publish()
                    if not w.wait_for_space(n):
                        assert select.select([w.space_fd], [], [], 20)[0], "never got space"
            if i % batch == 0:
                w.publish()
        else:
            w.send(data, timeout=20)
            if style == "slow" and i % 5 == 0:
                time.sleep(0.0002)
    w.publish()


@SETTINGS
@given(
    workloads(),
    st.sampled_from(["fast", "slow", "batched"]),
    st.sampled_from(["fast", "slow", "sleepy"]),
    st.booleans(),
)
def test_every_record_arrives_once_in_order_intact(
    no_leaks: None,
    workload: tuple[int, bool, list[int]],
    producer: str,
    consumer: str,
    zero_copy: bool,
) -> None:
    capacity, slab, sizes = workload
    before = memfd_maps()
    ring = Ring.create(capacity, slab=SLAB if slab else None, slab_threshold=200)
    pid = -1
    try:
        pid = child(consume, ring, sizes, consumer, zero_copy)
        produce(ring.writer(), sizes, producer)
        assert reap(pid, 60.0) == 0, "consumer saw loss, duplication, reordering or corruption"
    finally:
        if pid > 0:
            kill_if_running(pid)
        ring.close()
    assert memfd_maps() == before, "a ring mapping outlived close()"


def send_all(ring: Ring, sid: int, sizes: list[int]) -> bool:
    w = ring.writer()
    for i, n in enumerate(sizes):
        w.send(sid.to_bytes(2, "little") + rec(i, n), timeout=20)
        if (i + sid) % 50 == 0:
            time.sleep(0.001)
    return True


@settings(SETTINGS, max_examples=max(1, EXAMPLES // 2))
@given(
    st.integers(2, 5),
    st.lists(st.integers(0, 300), min_size=1, max_size=150),
)
def test_inbox_merges_senders_without_loss(no_leaks: None, senders: int, sizes: list[int]) -> None:
    with Inbox.create(8, 1024) as inbox:
        rings = [inbox.ring(s) for s in range(senders)]
        got: dict[int, list[bytes]] = {s: [] for s in range(senders)}

        def cb(s: int, x: bytes) -> None:
            assert int.from_bytes(x[:2], "little") == s
            got[s].append(x[2:])

        pids = [child(send_all, rings[s], s, sizes) for s in range(senders)]
        try:
            deadline = time.monotonic() + 60
            while sum(map(len, got.values())) < senders * len(sizes):
                assert time.monotonic() < deadline, "records missing"
                inbox.wait(timeout=1)
                inbox.drain(cb)
            assert [reap(p, 60.0) for p in pids] == [0] * senders
        finally:
            for p in pids:
                kill_if_running(p)
        assert inbox.drain(cb) == 0
        for s in range(senders):
            assert got[s] == [rec(i, n) for i, n in enumerate(sizes)]
