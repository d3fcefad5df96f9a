"""Termination paths and crash recovery, with real processes and real signals.

Tests of signals to the runtime's own process, or of what the CLI prints and
returns, run it as a program; the rest host it in this process (actors and
main are Python in this module) and read the supervisor's log with caplog.

After each path the ``no_leaks`` fixture checks that no child process, memfd
or /dev/shm entry is left.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _runtime_helpers import finish, run_app, start_app, wait_for, workers_of, write_app

import actorq

KEEPER = r"""
import os, sys
import actorq

PATH = sys.argv[0] and os.environ.get("KEEPER_LOG", "stops.log")

@actorq.actor
class Keeper:
    def __init__(self, slow_stop: bool = False) -> None:
        self.slow_stop = slow_stop
    async def on_stop(self) -> None:
        if self.slow_stop:
            with open(PATH + ".stopping", "a") as f:
                f.write(f"stopping {os.getpid()}\n")
            await actorq.sleep(60)
        with open(PATH, "a") as f:
            f.write(f"stopped {os.getpid()}\n")
    def pid(self) -> int:
        return os.getpid()

async def main(rt: actorq.Runtime) -> None:
    slow = os.environ.get("SLOW_STOP") == "1"
    refs = [await rt.spawn(Keeper, slow, cpu=c) for c in rt.workers]
    pids = [await r.pid() for r in refs]
    print("READY " + " ".join(map(str, pids)), flush=True)
    while True:
        await actorq.sleep(3600)
"""


def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: bool = False):
    write_app(tmp_path, KEEPER)
    monkeypatch.setenv("KEEPER_LOG", str(tmp_path / "stops.log"))
    monkeypatch.setenv("SLOW_STOP", "1" if slow else "0")
    proc = start_app(tmp_path, "app:main", "--workers", "2")
    line = proc.stdout.readline()
    assert line.startswith("READY"), (line, proc.stderr.read() if proc.poll() is not None else "")
    pids = [int(p) for p in line.split()[1:]]
    return proc, pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_an_orderly_stop(tmp_path, monkeypatch, no_leaks, sig) -> None:
    proc, pids = _start(tmp_path, monkeypatch)
    proc.send_signal(sig)
    rc, _, err = finish(proc)
    assert rc == 0, err
    stops = (tmp_path / "stops.log").read_text().split("\n")
    assert sorted(int(s.split()[1]) for s in stops if s) == sorted(pids)  # every on_stop ran
    assert not (tmp_path / "rt" / "control").exists()


def test_ctrl_c_to_the_process_group_is_an_orderly_stop(tmp_path, monkeypatch, no_leaks) -> None:
    # A terminal's Ctrl-C signals every process of the foreground group: the
    # workers ignore it and the supervisor stops them in order.
    write_app(tmp_path, KEEPER)
    monkeypatch.setenv("KEEPER_LOG", str(tmp_path / "stops.log"))
    monkeypatch.setenv("SLOW_STOP", "0")
    import subprocess

    from _runtime_helpers import actorq_cmd, env

    proc = subprocess.Popen(
        actorq_cmd(tmp_path, "app:main", "--workers", "2"),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    pids = [int(p) for p in line.split()[1:]]
    os.killpg(proc.pid, signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 0, err
    stops = (tmp_path / "stops.log").read_text().split("\n")
    assert sorted(int(s.split()[1]) for s in stops if s) == sorted(pids)


def test_second_sigint_stops_at_once(tmp_path, monkeypatch, no_leaks) -> None:
    proc, pids = _start(tmp_path, monkeypatch, slow=True)  # on_stop would take 60 s
    proc.send_signal(signal.SIGINT)
    stopping = tmp_path / "stops.log.stopping"
    wait_for(
        lambda: stopping.exists() and len(stopping.read_text().split()) == 2 * len(pids),
        what="every on_stop under way",
    )
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc, timeout=30)  # rather than the 60 s the on_stops would take
    assert rc == 130, err
    assert not (tmp_path / "stops.log").exists()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_sigkill_of_the_supervisor_takes_the_workers(tmp_path, monkeypatch, no_leaks) -> None:
    proc, pids = _start(tmp_path, monkeypatch)
    assert sorted(p.pid for p in workers_of(proc.pid)) == sorted(pids)
    proc.kill()
    proc.wait(timeout=10)

    def gone() -> bool:
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                pass
        return True

    wait_for(gone, timeout=10, what="workers to die with their supervisor")
    proc.stdout.close()
    proc.stderr.close()


# --- crashes, floods and stalls: hosted in this process -----------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    """What the supervisor (a thread of this process when hosted) logged."""
    return "\n".join(r.getMessage() for r in caplog.records)


@actorq.actor
class Slow:
    async def wait(self, d: float) -> str:
        await actorq.sleep(d)
        return "late"

    def pid(self) -> int:
        return os.getpid()


@actorq.actor(restart="always")
class Phoenix:
    def __init__(self, start: int) -> None:
        self.n = start

    def inc(self) -> int:
        self.n += 1
        return self.n


async def crash_main(rt: actorq.Runtime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    w = rt.workers[-1]
    s = await rt.spawn(Slow, cpu=w, name="slow")
    ph = await rt.spawn(Phoenix, 10, cpu=w, name="phoenix")
    await ph.inc()
    pid = await s.pid()
    asks = [s.wait(30) for _ in range(5)]
    await ph.inc()  # sent after the asks on the same ring: they are in the worker now
    os.kill(pid, signal.SIGKILL)
    outcomes = []
    for f in asks:
        try:
            outcomes.append(await f)
        except actorq.ActorDied:
            outcomes.append("died")
    out["asks"] = outcomes
    while True:  # until the successor is up and answers stats
        st = await rt.stats()
        me = next(x for x in st["workers"] if x["worker"] == s.worker)
        if me["pid"] != pid and "actors" in me:
            break
        await actorq.sleep(0.01)
    out["phoenix"] = await ph.inc()  # re-created from __init__(10)
    out["phoenix_lookup"] = (await rt.lookup("phoenix")) == ph
    try:
        await rt.lookup("slow")
        out["slow_lookup"] = "found"
    except actorq.ActorNotFound:
        out["slow_lookup"] = "gone"
    try:
        await s.pid()
        out["slow_ask"] = "answered"
    except actorq.ActorDied:
        out["slow_ask"] = "died"
    s.pid.tell()
    s.pid.tell()
    await ph.inc()  # same pair as the tells: they have been handled when this returns
    st = await rt.stats()
    out["dead_letters"] = st["dead_letters"]
    out["restarts"] = st["restarts"]
    return out


def test_worker_sigkill_fails_pending_asks_and_restarts(tmp_path, no_leaks, caplog) -> None:
    out = actorq.run(crash_main, workers=2, runtime_dir=str(tmp_path / "rt"))
    assert out["asks"] == ["died"] * 5
    assert out["phoenix"] == 11
    assert out["phoenix_lookup"] is True
    assert out["slow_lookup"] == "gone"
    assert out["slow_ask"] == "died"
    assert out["dead_letters"] >= 2
    assert out["restarts"] == 1
    assert "died: killed by SIGKILL" in _warnings(caplog)


async def _raising_main(rt: actorq.Runtime) -> None:
    raise RuntimeError("app broke")


def test_main_raising_raises_from_run_and_cleans_up(tmp_path, no_leaks) -> None:
    with pytest.raises(RuntimeError, match="app broke"):
        actorq.run(_raising_main, workers=1, runtime_dir=str(tmp_path / "rt"))
    assert not (tmp_path / "rt" / "control").exists()


def test_main_raising_exits_1_and_cleans_up(tmp_path, no_leaks) -> None:
    # the CLI's side of it: exit code and the traceback on stderr
    write_app(
        tmp_path,
        """
        async def main(rt):
            raise RuntimeError("app broke")
    """,
    )
    proc = run_app(tmp_path, "app:main", "--workers", "1")
    assert proc.returncode == 1
    assert "app broke" in proc.stderr
    assert not (tmp_path / "rt" / "control").exists()


@actorq.actor
class Echo:
    def echo(self, x: Any) -> Any:
        return x


async def _echo_main(rt: actorq.Runtime) -> Any:
    e = await rt.spawn(Echo)
    return await e.echo({"a": [1, 2, b"x"]})


def test_run_from_python_returns_mains_value(tmp_path, no_leaks) -> None:
    assert actorq.run(_echo_main, workers=1, runtime_dir=str(tmp_path / "rt")) == {
        "a": [1, 2, b"x"]
    }


def test_runtime_dir_must_be_private(tmp_path) -> None:
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o755)
    os.chmod(rt, 0o755)
    write_app(tmp_path, "async def main(rt):\n    pass\n")
    proc = run_app(tmp_path, "app:main", "--workers", "1")
    assert proc.returncode == 2
    assert "0700" in proc.stderr


@actorq.actor(reentrant=True)
class Peer:
    def __init__(self) -> None:
        self.got = 0
        self.peer: Any = None

    def set_peer(self, peer: actorq.ActorRef) -> None:
        self.peer = peer

    def take(self, blob: bytes) -> None:
        self.got += 1

    def count(self) -> int:
        return self.got

    async def bounce(self, n: int) -> int:
        # nested asks across the same two full rings
        return 0 if n == 0 else 1 + await self.peer.bounce(n - 1)

    async def flood(self, n: int, size: int) -> int:
        blob = b"x" * size
        for _ in range(n):
            self.peer.take.tell(blob)
        return await self.peer.bounce(20)


async def flood_main(rt: actorq.Runtime) -> dict[str, Any]:
    a = await rt.spawn(Peer, cpu=rt.workers[0])
    b = await rt.spawn(Peer, cpu=rt.workers[-1])
    await a.set_peer(b)
    await b.set_peer(a)
    fa, fb = a.flood(3000, 1000), b.flood(3000, 1000)
    depths = [await fa, await fb]
    counts = [await a.count(), await b.count()]
    return {"depths": depths, "counts": counts}


def test_full_rings_park_senders_and_nested_asks_finish(tmp_path, no_leaks) -> None:
    out = actorq.run(  # 3 MB through 4 KiB rings
        flood_main, workers=2, runtime_dir=str(tmp_path / "rt"), ring_capacity=4096
    )
    assert out["depths"] == [20, 20]
    assert out["counts"] == [3000, 3000]


@actorq.actor(restart="always")
class Bomb:
    def __init__(self, flag: str) -> None:
        self.flag = flag
        if os.path.exists(flag):
            os.kill(os.getpid(), signal.SIGKILL)  # every re-creation kills its worker

    def arm(self) -> None:
        open(self.flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


@actorq.actor
class Calm:
    def hello(self) -> str:
        return "hello"


async def crash_loop_main(rt: actorq.Runtime, flag: str) -> dict[str, Any]:
    b = await rt.spawn(Bomb, flag, cpu=rt.workers[-1])
    try:
        await b.arm()
    except actorq.ActorDied:
        pass
    for _ in range(500):  # until the runtime stops re-creating it
        st = await rt.stats()
        if not any(a["cls"].endswith(":Bomb") for a in st["actors"]):
            break
        await actorq.sleep(0.02)
    try:
        await b.arm()
        after = "answered"
    except actorq.ActorDied:
        after = "ActorDied"
    calm = None
    for _ in range(500):  # its worker is back: the rest of the application runs on
        try:
            calm = await rt.spawn(Calm, cpu=rt.workers[-1])
            break
        except actorq.ActorDied:
            await actorq.sleep(0.02)
    assert calm is not None, "no worker came back on the bomb's CPU"
    return {
        "after": after,
        "calm": await calm.hello(),
        "log": [d["method"] for d in st["dead_letter_log"]],
    }


def test_a_crash_looping_actor_is_stopped_and_the_rest_runs_on(tmp_path, no_leaks, caplog) -> None:
    flag = str(tmp_path / "armed")
    out = actorq.run(
        functools.partial(crash_loop_main, flag=flag), workers=2, runtime_dir=str(tmp_path / "rt")
    )
    assert out["after"] == "ActorDied"
    assert out["calm"] == "hello"
    # the first crash in arm, then __init__ each time it was re-created, until the intensity
    assert out["log"][0] == "arm"
    assert set(out["log"][1:]) == {"__init__"}
    assert len(out["log"]) == 4  # restart_intensity 3: the fourth crash stops it
    assert "restart_intensity" in _warnings(caplog)


@actorq.actor(mailbox=3)
class Narrow:
    async def slow(self, i: int) -> int:
        await actorq.sleep(0.2)  # slow on purpose: the others wait in the mailbox
        return i

    def quick(self) -> str:
        return "ok"


async def mailbox_main(rt: actorq.Runtime) -> dict[str, Any]:
    n = await rt.spawn(Narrow)
    futs = [n.slow(i) for i in range(10)]
    out: list[Any] = []
    for f in futs:
        try:
            out.append(await f)
        except actorq.Overloaded:
            out.append("overloaded")
    return {"out": out, "after": await n.quick()}


def test_mailbox_bound_raises_overloaded(tmp_path, no_leaks) -> None:
    out = actorq.run(mailbox_main, workers=1, runtime_dir=str(tmp_path / "rt"))
    # one runs, three wait, the other six are refused
    assert out["out"] == [0, 1, 2, 3] + ["overloaded"] * 6
    assert out["after"] == "ok"


@actorq.actor
class Hog:
    def hog(self, s: float, started: str = "") -> str:
        if started:
            open(started, "w").close()
        time.sleep(s)  # blocks the worker's loop on purpose: never do this in an actor
        return "done"


async def hog_main(rt: actorq.Runtime, hold: float, started: str) -> dict[str, Any]:
    h = await rt.spawn(Hog, cpu=rt.workers[-1])
    held = h.hog(hold, started)
    while not os.path.exists(started):  # the worker is inside hog now
        await actorq.sleep(0.01)
    st = await rt.stats()  # answered while the worker is held, naming it
    try:
        first = await held
    except actorq.ActorDied:
        first = "ActorDied"
    h2 = None
    for _ in range(500):
        try:
            h2 = await rt.spawn(Hog, cpu=rt.workers[-1])
            break
        except actorq.ActorDied:
            await actorq.sleep(0.02)
    assert h2 is not None, "no worker came back on the hog's CPU"
    return {
        "first": first,
        "again": await h2.hog(0),
        "errors": [w.get("error") for w in st["workers"]],
    }


def _run_hog(tmp_path: Path, hold: float, **options: Any) -> dict[str, Any]:
    main = functools.partial(hog_main, hold=hold, started=str(tmp_path / "started"))
    return actorq.run(main, workers=2, runtime_dir=str(tmp_path / "rt"), **options)


def test_a_stalled_worker_is_reported_killed_and_restarted(tmp_path, no_leaks, caplog) -> None:
    out = _run_hog(tmp_path, 1000, stall_timeout=1.0)
    assert out["first"] == "ActorDied"
    assert out["again"] == "done"
    assert out["errors"][0] is None
    assert "did not answer stats" in out["errors"][1]
    assert "Hog #1.hog" in out["errors"][1]
    assert "held by Hog #1.hog" in _warnings(caplog)
    assert "killing and restarting it" in _warnings(caplog)


def test_stall_action_report_only_reports(tmp_path, no_leaks, caplog) -> None:
    out = _run_hog(tmp_path, 2.5, stall_timeout=0.5, stall_action="report")
    assert out["first"] == "done"
    assert "held by Hog #1.hog" in _warnings(caplog)
    assert "answers again" in _warnings(caplog)


@actorq.actor
class E:
    def e(self, x: Any) -> Any:
        return x

    def burst(self, other: actorq.ActorRef, n: int) -> None:
        for i in range(n):
            other.e.tell(i)

    async def relay(self, other: actorq.ActorRef, n: int) -> float:
        worst = 0.0
        for i in range(n):
            if i % 50 == 0:
                await other.burst(actorq.self_ref(), 20)  # traffic both ways
            t0 = time.perf_counter()
            await other.e(1)
            worst = max(worst, time.perf_counter() - t0)
        return worst


async def wakeups_main(rt: actorq.Runtime) -> list[float]:
    a = await rt.spawn(E, cpu=rt.workers[0])
    b = await rt.spawn(E, cpu=rt.workers[-1])
    worst = [await a.relay(b, 3000), await b.relay(a, 3000)]
    t = 0.0
    for _ in range(1000):
        t0 = time.perf_counter()
        await a.e(1)
        t = max(t, time.perf_counter() - t0)
    return [*worst, t]


def test_no_lost_wakeups_between_workers(tmp_path, no_leaks) -> None:
    # A lost doorbell shows only as time: an ask that waits for some unrelated
    # timer (the worker's 1 s parent check), far longer than any scheduling
    # hiccup. This bound is the detector, not a speed target.
    worst = actorq.run(wakeups_main, workers=2, runtime_dir=str(tmp_path / "rt"))
    assert max(worst) < 0.9, worst


def test_repeated_run_in_one_process_releases_everything(tmp_path, no_leaks) -> None:
    from _runtime_helpers import run_python

    script = write_app(
        tmp_path,
        """
        import os, signal
        import psutil
        import actorq

        @actorq.actor
        class E:
            def e(self, x):
                return x

        async def main(rt):
            a = await rt.spawn(E)
            return await a.e(b"x" * 100000)

        before = sorted(os.listdir("/proc/self/fd"))
        for _ in range(3):
            assert len(actorq.run(main, workers=2)) == 100000
        after = sorted(os.listdir("/proc/self/fd"))
        print(before == after, signal.pthread_sigmask(signal.SIG_BLOCK, []) == set(),
              psutil.Process().children() == [])
    """,
        name="script",
    )
    proc = run_python(str(script), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]
