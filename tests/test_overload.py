"""Overload at the actor level: bounded queues, backpressure, fairness, shedding.

A hostile sender (a flood of tells, from sync and from async code) beside a
polite one, against a real runtime hosted in the test process. Each test
asserts service continuity (the polite asks are answered), bounded memory
(the workers' RSS from /proc), and that every refusal is counted; none
asserts a speed (that is bench/'s job).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import actorq
from actorq.testing import running, wait_until


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@actorq.actor
class SlowSink:
    """A consumer that takes a millisecond a message (its worker is busy meanwhile)."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, i: int) -> None:
        time.sleep(0.001)
        self.n += 1

    def count(self) -> int:
        return self.n


@actorq.actor
class Flooder:
    def flood_sync(self, sink: actorq.ActorRef, n: int) -> int:
        sent = 0
        for i in range(n):
            sink.take.tell(i)  # from sync code nothing can wait: past the bound it raises
            sent += 1
        return sent

    async def flood_async(self, sink: actorq.ActorRef, n: int) -> int:
        for i in range(n):
            await sink.take.tell(i)  # parks while the way to the sink is congested
        return n

    def ping(self) -> str:
        return "pong"


def _stats_of(client: actorq.client.Client, worker: int) -> dict:
    return client.stats()["workers"][worker - 1]


def test_a_tell_flood_from_sync_code_is_refused_at_the_bound(tmp_path, no_leaks):
    limit = 4_000
    with running(workers=2, runtime_dir=tmp_path / "rt", backlog_limit=limit) as rt:
        client = rt.connect(timeout=60)
        sink = client.spawn(SlowSink, cpu=rt.workers[1])
        flooder = client.spawn(Flooder, cpu=rt.workers[0])
        before = _rss_kib(_stats_of(client, 1)["pid"])
        with pytest.raises(actorq.RemoteError) as err:
            flooder.flood_sync.with_timeout(60)(sink, 2_000_000)
        assert err.value.type_name == "Overloaded"
        assert "backlog_limit" in str(err.value)
        worker = _stats_of(client, 1)
        assert worker["refused_sends"] == 1  # counted, and the first refusal ended the flood
        assert _rss_kib(worker["pid"]) - before < 64 * 1024  # not 2 M queued messages
        client.close()


def test_a_tell_flood_from_async_code_parks_and_loses_nothing(tmp_path, no_leaks):
    limit, n = 2_000, 6_000
    with running(workers=2, runtime_dir=tmp_path / "rt", backlog_limit=limit) as rt:
        client = rt.connect(timeout=120)
        sink = client.spawn(SlowSink, cpu=rt.workers[1])
        flooder = client.spawn(Flooder, cpu=rt.workers[0])
        assert flooder.flood_async.with_timeout(120)(sink, n) == n
        assert wait_until(lambda: sink.count() == n, timeout=60, what="every tell handled")
        worker = _stats_of(client, 1)
        assert worker["refused_sends"] == 0
        client.close()


def test_an_actor_that_parked_answers_what_queued_behind_it(tmp_path, no_leaks):
    with running(
        workers=2, runtime_dir=tmp_path / "rt", backlog_limit=400, ring_capacity=4096
    ) as rt:
        client = rt.connect(timeout=60)
        sink = client.spawn(SlowSink, name="sink", cpu=rt.workers[1])
        client.spawn(Flooder, name="flooder", cpu=rt.workers[0])
        done: dict[str, object] = {}

        def flood() -> None:
            with rt.connect(timeout=60) as own:
                done["n"] = own.lookup("flooder").flood_async.with_timeout(60)(sink, 2_000)

        t = threading.Thread(target=flood)
        t.start()
        wait_until(lambda: sink.count() > 100, timeout=30, what="the flood under way")
        # queued behind the flood (the flooder is not reentrant); answered after it
        assert client.lookup("flooder").ping.with_timeout(60)() == "pong"
        t.join(60)
        assert done == {"n": 2_000}
        assert _stats_of(client, 1)["refused_sends"] == 0
        client.close()


@actorq.actor
class Busy:
    """An async actor that takes a little while a message: its mailbox fills."""

    def __init__(self) -> None:
        self.done = 0

    async def work(self, i: int) -> None:
        await actorq.sleep(0.002)
        self.done += 1

    async def ping(self) -> str:
        await actorq.sleep(0.002)
        return "pong"


@actorq.actor
class Pelter:
    def pelt(self, target: actorq.ActorRef, n: int) -> int:
        for i in range(n):
            target.work.tell(i)
        return n


def test_a_polite_asker_beside_a_flood_is_served(tmp_path, no_leaks):
    with running(workers=2, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect(timeout=60)
        busy = client.spawn(Busy, name="busy", cpu=rt.workers[1])
        pelter = client.spawn(Pelter, cpu=rt.workers[0])
        stop = threading.Event()

        def flood() -> None:
            with rt.connect(timeout=60) as own:
                p = own.lookup("busy")
                ref = own.spawn(Pelter, cpu=rt.workers[0])
                while not stop.is_set():
                    ref.pelt(p, 2_000)

        t = threading.Thread(target=flood)
        t.start()
        try:
            pelter.pelt(busy, 2_000)
            wait_until(
                lambda: _actor_row(client, "busy")["shed"] > 0,
                timeout=30,
                what="the flood to be shed",
            )
            # the polite asker is a sender of its own: round robin lets it in, and
            # the flood's own messages are the ones shed
            answers = [busy.ping.with_timeout(30)() for _ in range(20)]
            assert answers == ["pong"] * 20
        finally:
            stop.set()
            t.join(60)
        row = _actor_row(client, "busy")
        assert row["window"] < 1024  # the window found a level far below where it started
        assert row["congested"] > 0
        assert row["sojourn_p99_ms"] is not None
        shed = _stats_of(client, 2)["shed_tells"]
        assert shed > 0
        assert _stats_of(client, 1)["held_back"] > 0  # the receiver pushed back on the source
        assert _stats_of(client, 2)["dead_letters"] == 0  # shed is not "does not exist"
        client.close()


def _actor_row(client: actorq.client.Client, name: str) -> dict:
    st = client.stats()
    (aid,) = [a["id"] for a in st["actors"] if a["name"] == name]
    for w in st["workers"]:
        for row in w.get("actors", []):
            if row["id"] == aid:
                return row
    raise AssertionError(f"{name} not in any worker's stats")


@actorq.actor
class Gate:
    """Holds its mailbox while ``hold`` waits, so asks queue behind it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ran = 0

    async def hold(self) -> None:
        while not os.path.exists(self.path):
            await actorq.sleep(0.01)

    def touch(self) -> int:
        self.ran += 1
        return self.ran

    def runs(self) -> int:
        return self.ran


def test_an_ask_past_its_deadline_is_dropped_unrun(tmp_path, no_leaks):
    release = tmp_path / "release"
    with running(workers=1, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect(timeout=30)
        gate = client.spawn(Gate, str(release))
        gate.hold.tell()
        with pytest.raises(TimeoutError):
            gate.touch.with_timeout(0.2)()  # queued behind hold, and given up on
        release.touch()
        assert gate.runs() == 0  # queued behind hold too: the abandoned ask did not run late
        row = _actor_row_by_cls(client, "Gate")
        assert row["expired"] == 1
        client.close()


def _actor_row_by_cls(client: actorq.client.Client, cls: str) -> dict:
    for w in client.stats()["workers"]:
        for row in w.get("actors", []):
            if row["cls"].endswith(":" + cls):
                return row
    raise AssertionError(f"no {cls} in stats")


@actorq.actor(mailbox=2)
class Narrow:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def slow(self, path: str) -> None:
        while not os.path.exists(path):
            await actorq.sleep(0.01)

    def fast(self) -> str:
        return "ok"

    def note(self, tag: str) -> None:
        self.seen.append(tag)

    def notes(self) -> list[str]:
        return self.seen


def test_tells_refused_by_a_full_mailbox_are_counted_as_shed(tmp_path, no_leaks):
    release = tmp_path / "release"
    with running(workers=1, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect(timeout=30)
        narrow = client.spawn(Narrow)
        narrow.slow.tell(str(release))  # runs and holds the actor
        for _ in range(10):
            narrow.fast.tell()
        worker = wait_until(
            lambda: (w := _stats_of(client, 1))["shed_tells"] == 8 and w,
            timeout=10,
            what="eight tells shed (two fit in the mailbox)",
        )
        assert worker["dead_letters"] == 0  # shed, not "sent to an actor that does not exist"
        release.touch()
        wait_until(lambda: _actor_row_by_cls(client, "Narrow")["queued"] == 0, timeout=10)
        assert narrow.fast() == "ok"
        client.close()


@pytest.mark.parametrize(
    ("policy", "kept"),
    [("fattest", ["a", "b"]), ("newest", ["a", "b"]), ("oldest", ["b", "c"])],
)
def test_the_shed_policy_picks_who_is_refused(tmp_path, no_leaks, policy, kept):
    release = tmp_path / "release"
    with running(workers=1, runtime_dir=tmp_path / "rt", shed_policy=policy) as rt:
        client = rt.connect(timeout=30)
        narrow = client.spawn(Narrow)
        narrow.slow.tell(str(release))
        for tag in "abc":  # the mailbox holds two: one of the three is refused
            narrow.note.tell(tag)
        wait_until(lambda: _stats_of(client, 1)["shed_tells"] == 1, timeout=10)
        release.touch()
        wait_until(lambda: _actor_row_by_cls(client, "Narrow")["queued"] == 0, timeout=10)
        assert narrow.notes() == kept
        client.close()


async def _async_main_floods(rt: actorq.Runtime) -> int:
    sink = await rt.spawn(SlowSink, cpu=rt.workers[-1])
    for i in range(3_000):
        await sink.take.tell(i)  # main is a sender like any other: it parks too
    return int(await sink.count.with_timeout(60)())


def test_main_parks_on_a_congested_actor(tmp_path, no_leaks):
    got = actorq.run(
        _async_main_floods, workers=2, runtime_dir=str(tmp_path / "rt"), backlog_limit=1_000
    )
    assert got == 3_000

