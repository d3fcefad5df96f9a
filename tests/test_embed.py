"""Outside clients on direct channels (actorq.connect from another process):
the blocking and asyncio forms, and what happens when something fails: no
runtime, a restarted runtime, fork, a client that dies, a worker that dies,
an ask whose deadline passes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from _procs import fork_call, reap
from _runtime_helpers import check_counter_calls, env

import actorq
from actorq.testing import running, wait_until


@actorq.actor
class Tally:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    def fail(self) -> None:
        raise ValueError("bad day")

    def me(self) -> actorq.ActorRef:
        return actorq.self_ref()

    async def hold(self, seconds: float) -> None:
        await actorq.sleep(seconds)

    def pid(self) -> int:
        return os.getpid()

    def echo(self, data: bytes) -> bytes:
        return data

    def size(self, data: bytes) -> int:
        return len(data)

    def big(self, n: int) -> bytes:
        return b"x" * n

    async def slow(self) -> None:
        await actorq.sleep(0.002)


@actorq.actor(restart="always")
class Phoenix:
    """Re-created from __init__ when its worker dies."""

    def add(self, n: int = 1) -> int:
        return n

    async def hold(self, seconds: float) -> None:
        await actorq.sleep(seconds)

    def pid(self) -> int:
        return os.getpid()


def _outside(client: actorq.client.Client, worker: int) -> dict:
    return client.stats()["workers"][worker - 1]["outside"]


def test_blocking_client_uses_a_direct_channel(tmp_path, no_leaks) -> None:
    with running(workers=2, runtime_dir=tmp_path / "rt") as rt:
        client = actorq.connect(rt.address)
        hits = client.spawn(Tally, 10, name="hits", cpu=rt.workers[0])
        check_counter_calls(hits)
        with pytest.raises(TypeError, match="argument 0"):
            hits.add(object())
        assert client.lookup("hits") == hits
        assert _outside(client, 1)["open"] == 1  # the asks went straight to worker 1
        received = client.stats()["supervisor"]["received"]
        assert hits.add(0) == 18
        assert client.stats()["supervisor"]["received"] == received  # not through it
        hits.stop()
        with pytest.raises(actorq.ActorDied):
            hits.add(1)
        client.close()
        probe = actorq.connect(rt.address)
        wait_until(lambda: _outside(probe, 1)["open"] == 0, what="channel freed on close")
        probe.close()


def test_asyncio_client_many_in_flight(tmp_path, no_leaks) -> None:
    """5,000 asks at once, on the direct channel and through the supervisor
    (whose ZeroMQ queues hold 1,000 replies per peer: the client's window
    keeps them from overflowing)."""

    async def go(address: str, direct: bool) -> list[int]:
        async with actorq.connect_async(address, direct=direct) as client:
            hits = await client.lookup("hits")
            results = await asyncio.wait_for(
                asyncio.gather(*(hits.add(1) for _ in range(5000))), 60
            )
            with pytest.raises(actorq.RemoteError):
                await hits.fail()
            hits.add.tell(0)
            await (await client.lookup("hits")).add(0)
            return sorted(results)

    with running(workers=2, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect()
        client.spawn(Tally, name="hits")
        assert asyncio.run(go(rt.address, True)) == list(range(1, 5001))
        assert asyncio.run(go(rt.address, False)) == list(range(5001, 10001))
        client.close()


def test_no_runtime_fails_at_once(tmp_path) -> None:
    began = time.monotonic()
    with pytest.raises(actorq.NoRuntime, match="no actorq runtime"):
        actorq.connect(tmp_path / "nothing")
    with pytest.raises(actorq.NoRuntime):
        actorq.connect_async(tmp_path / "nothing")
    assert time.monotonic() - began < 5  # a guard against the old 30 s hang, not a speed bound


def test_runtime_gone_during_use(tmp_path, no_leaks) -> None:
    rt = actorq.start(workers=1, runtime_dir=str(tmp_path / "rt"))
    client = rt.connect()
    hits = client.spawn(Tally, name="hits")
    assert hits.add(1) == 1
    rt.stop()
    with pytest.raises((actorq.NoRuntime, actorq.ActorDied)):
        hits.add(1)
    with pytest.raises(actorq.NoRuntime):
        client.lookup("hits")
    client.close()


def test_restarted_runtime_is_a_new_incarnation(tmp_path, no_leaks) -> None:
    rtdir = tmp_path / "rt"
    with running(workers=1, runtime_dir=rtdir) as rt:
        client = rt.connect()
        old = client.spawn(Tally, 100, name="hits")
        assert old.add(1) == 101
        zmq_client = actorq.connect(rt.address, direct=False)
        old_zmq = zmq_client.lookup("hits")
    with running(workers=1, runtime_dir=rtdir) as rt:
        with rt.connect() as fresh:
            fresh.spawn(Tally, 0, name="hits").add(0)
        for ref in (old, old_zmq):  # never the fresh actor with the same id
            with pytest.raises(actorq.ActorDied):
                ref.add(1)
            with pytest.raises(actorq.ActorDied, match="restarted"):
                ref.add(1)
        assert client.lookup("hits").add(1) == 1  # looked up again: the new one
        assert zmq_client.lookup("hits").add(1) == 2
        client.close()
        zmq_client.close()


def test_client_inherited_across_fork_is_refused(tmp_path, no_leaks) -> None:
    with running(workers=1, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect()
        hits = client.spawn(Tally, name="hits")
        assert hits.add(1) == 1

        def child() -> bool:
            try:
                hits.add(1)
            except actorq.ForkedClient:
                pass
            else:
                return False
            own = actorq.connect(rt.address)  # each process connects its own
            ok = own.lookup("hits").add(10) == 11
            own.close()
            client.close()  # the parent's: left alone
            return ok

        assert reap(fork_call(child)) == 0
        assert hits.add(0) == 11
        client.close()


def test_channel_of_a_dead_client_is_freed(tmp_path, no_leaks) -> None:
    with running(workers=1, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect()
        client.spawn(Tally, name="hits")
        code = textwrap.dedent(
            f"""
            import os, signal, actorq
            c = actorq.connect({rt.address!r})
            c.lookup("hits").add(1)
            print("asked", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60
        )
        assert "asked" in proc.stdout, proc.stderr
        assert proc.returncode == -signal.SIGKILL
        stats = wait_until(
            lambda: (s := _outside(client, 1))["open"] == 0 and s, what="dead client's channel"
        )
        assert stats["opened"] == 1
        assert client.lookup("hits").add(0) == 1
        client.close()


def test_worker_death_fails_waiting_asks(tmp_path, no_leaks) -> None:
    async def go(address: str) -> None:
        async with actorq.connect_async(address) as client:
            hits = await client.lookup("hits")
            pid = await hits.pid()
            waiting = asyncio.ensure_future(hits.hold.with_timeout(60)(60))
            await asyncio.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(actorq.ActorDied):
                await asyncio.wait_for(waiting, 30)

    with running(workers=1, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect()
        client.spawn(Phoenix, name="hits")
        asyncio.run(go(rt.address))
        # the blocking form too, and the restarted worker serves a new channel
        hits = client.lookup("hits")
        wait_until(lambda: _ok(hits.add, 0), what="the restarted actor")
        pid = hits.pid()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(actorq.ActorDied):
            hits.hold.with_timeout(60)(60)
        wait_until(lambda: _ok(hits.add, 0), what="the actor, back again")
        client.close()


def _ok(fn, *args) -> bool:
    try:
        fn(*args)
    except (actorq.ActorDied, actorq.ActorNotFound):
        return False
    return True


def test_deadline_drops_the_remote_work(tmp_path, no_leaks) -> None:
    """An ask that times out while queued behind a busy actor is dropped
    unrun when its turn comes: the call's timeout cancels the remote work."""
    with running(workers=1, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect()
        hits = client.spawn(Tally, name="hits")
        hits.hold.tell(1.0)  # holds the mailbox (not reentrant) for a second
        with pytest.raises(TimeoutError, match=r"Tally\.add"):
            hits.add.with_timeout(0.1)(1)
        assert hits.add.with_timeout(10)(0) == 0  # the timed-out add never ran
        client.close()


@pytest.mark.slow
def test_connect_forms_typecheck(tmp_path) -> None:
    """``client.lookup("hits").add(5)`` and its asyncio twin type-check in mypy."""
    snippet = tmp_path / "use.py"
    snippet.write_text(
        textwrap.dedent(
            """
            import actorq

            def blocking(address: str) -> int:
                client = actorq.connect(address)
                n: int = client.lookup("hits").add(5)
                client.spawn(int, name="x").stop()
                return n

            async def in_asyncio(address: str) -> int:
                client = actorq.connect_async(address)
                also = actorq.connect(address, asyncio=True)
                hits = await client.lookup("hits")
                (await also.lookup("hits")).add.tell(1)
                n: int = await hits.add(5)
                return n
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_in_a_thread_ends_with_the_program(tmp_path) -> None:
    """``actorq.run`` in a non-daemon thread whose main serves forever: when the
    program's main thread ends, the runtime stops and the process exits."""
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import threading, actorq

            async def main(rt):
                print("serving", flush=True)
                await actorq.serve_forever()

            t = threading.Thread(
                target=actorq.run, args=(main,),
                kwargs={{"workers": 1, "runtime_dir": {str(tmp_path / "rt")!r}}},
            )
            t.start()
            import time
            deadline = time.monotonic() + 30
            while not all(
                __import__("os").path.exists({str(tmp_path / "rt")!r} + "/" + f)
                for f in ("control", "w1.chan")
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            c = actorq.connect({str(tmp_path / "rt")!r})
            print("ping", c.ping()["workers"], flush=True)
            c.close()
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "ping 1" in proc.stdout


def test_async_with_start_in_an_asgi_style_lifespan(tmp_path, no_leaks) -> None:
    """``async with actorq.start(...)`` inside a running event loop (what an
    ASGI lifespan does): the runtime comes up, an asyncio client works, and
    leaving the block stops it."""

    async def lifespan() -> int:
        async with (
            actorq.start(workers=1, runtime_dir=str(tmp_path / "rt")) as rt,
            rt.connect(asyncio=True) as client,
        ):
            hits = await client.spawn(Tally, 1, name="hits")
            return int(await hits.add(1))

    assert asyncio.run(lifespan()) == 2


def test_full_rings_wait_and_large_records_take_the_supervisor(tmp_path, no_leaks) -> None:
    """More bytes in flight than a channel's rings hold, both ways: senders
    wait for room, nothing is lost. A request over the channel's record limit
    goes through the supervisor; a reply over it fails with a clear error."""
    payload = b"p" * 1000

    async def flood(address: str) -> list[bytes]:
        async with actorq.connect_async(address) as client:
            hits = await client.lookup("hits")
            return await asyncio.wait_for(
                asyncio.gather(*(hits.echo(payload) for _ in range(3000))), 120
            )

    with running(workers=1, runtime_dir=tmp_path / "rt") as rt:
        client = rt.connect()
        hits = client.spawn(Tally, name="hits")
        assert asyncio.run(flood(rt.address)) == [payload] * 3000  # 3 MB each way
        for _ in range(300):  # the blocking form's full ring: tells wait too
            hits.echo.tell(payload)
        assert hits.size(b"b" * 300_000) == 300_000  # over the record limit: via control
        with pytest.raises(actorq.RemoteError, match="PayloadTooLarge"):
            hits.big(300_000)
        assert hits.add(0) == 0
        client.close()


def test_each_outside_client_is_a_sender_of_its_own(tmp_path, no_leaks) -> None:
    """One client floods an actor with slow tells (5,000 x 2 ms: ~10 s in
    arrival order); another client's ask is served in its fair turn, not
    behind the flood: each channel is a sender of its own to the mailbox."""
    with (
        running(workers=1, runtime_dir=tmp_path / "rt") as rt,
        rt.connect() as flooder,
        rt.connect() as polite,
    ):
        hits = flooder.spawn(Tally, name="hits")
        for _ in range(5000):
            hits.slow.tell()
        # (in one FIFO it would wait ~10 s, or be refused by the full mailbox)
        assert polite.lookup("hits").add.with_timeout(5)(1) == 1
        assert polite.stats()["workers"][0]["outside"]["open"] == 2


def test_a_refused_channel_falls_back_to_the_supervisor(tmp_path, no_leaks, monkeypatch) -> None:
    """A worker at its channel limit refuses a new one (a count, a log line);
    that client's calls then go through the supervisor and still work."""
    from actorq._runtime import outside

    monkeypatch.setattr(outside, "MAX_CHANNELS", 1)  # inherited by the forked workers
    with (
        running(workers=1, runtime_dir=tmp_path / "rt") as rt,
        rt.connect() as first,
        rt.connect() as second,
    ):
        first.spawn(Tally, name="hits").add(1)  # takes the one channel
        hits = second.lookup("hits")
        assert hits.add(1) == 2  # refused a channel: through the supervisor
        hits.add.tell(1)
        assert hits.add(0) == 3
        outside_stats = second.stats()["workers"][0]["outside"]
        assert outside_stats["open"] == 1
        assert outside_stats["refused"] == 1
