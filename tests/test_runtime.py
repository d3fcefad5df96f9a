"""Termination paths and crash recovery, with real processes and real signals.

After each path the ``no_leaks`` fixture checks that no child process, memfd
or /dev/shm entry is left.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from _runtime_helpers import finish, run_app, start_app, wait_for, workers_of, write_app

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
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc, timeout=10)
    assert rc == 130, err
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / "stops.log").exists()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_sigkill_of_the_supervisor_takes_the_workers(tmp_path, monkeypatch, no_leaks) -> None:
    proc, pids = _start(tmp_path, monkeypatch)
    assert sorted(p.pid for p in workers_of(proc.pid)) == sorted(pids)
    proc.kill()
    proc.wait(timeout=10)
    t0 = time.monotonic()

    def gone() -> bool:
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                pass
        return True

    wait_for(gone, timeout=5, what="workers to die with their supervisor")
    assert time.monotonic() - t0 < 1.5
    proc.stdout.close()
    proc.stderr.close()


CRASH = r"""
import json, os, signal, time
import actorq

@actorq.actor
class Slow:
    async def wait(self, d):
        await actorq.sleep(d)
        return "late"
    def pid(self):
        return os.getpid()

@actorq.actor(restart="always")
class Phoenix:
    def __init__(self, start):
        self.n = start
    def inc(self):
        self.n += 1
        return self.n

async def main(rt):
    out = {}
    w = rt.workers[-1]
    s = await rt.spawn(Slow, cpu=w, name="slow")
    ph = await rt.spawn(Phoenix, 10, cpu=w, name="phoenix")
    await ph.inc()
    await ph.inc()
    pid = await s.pid()
    asks = [s.wait(30) for _ in range(5)]
    await actorq.sleep(0.05)  # the asks are in the worker now
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    outcomes = []
    for f in asks:
        try:
            outcomes.append(await f)
        except actorq.ActorDied:
            outcomes.append("died")
    out["asks"] = outcomes
    out["noticed_s"] = time.monotonic() - t0
    while True:
        st = await rt.stats()
        me = [x for x in st["workers"] if x["worker"] == s.worker][0]
        if me["pid"] != pid and "actors" in me:
            break
        await actorq.sleep(0.01)
    out["back_s"] = time.monotonic() - t0
    out["phoenix"] = await ph.inc()           # re-created from __init__(10)
    out["phoenix_lookup"] = (await rt.lookup("phoenix")) == ph
    try:
        await rt.lookup("slow")
    except actorq.ActorNotFound:
        out["slow_lookup"] = "gone"
    try:
        await s.pid()
    except actorq.ActorDied:
        out["slow_ask"] = "died"
    s.pid.tell()
    s.pid.tell()
    await ph.inc()  # same pair as the tells: they have been handled when this returns
    st = await rt.stats()
    out["dead_letters"] = st["dead_letters"]
    out["restarts"] = st["restarts"]
    print("RESULT " + json.dumps(out), flush=True)
"""


def test_worker_sigkill_fails_pending_asks_and_restarts(tmp_path, no_leaks) -> None:
    write_app(tmp_path, CRASH)
    proc = run_app(tmp_path, "app:main", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stderr
    out = json.loads(line[0][7:])
    assert out["asks"] == ["died"] * 5
    assert out["noticed_s"] < 1.0
    assert out["back_s"] < 1.0
    assert out["phoenix"] == 11
    assert out["phoenix_lookup"] is True
    assert out["slow_lookup"] == "gone"
    assert out["slow_ask"] == "died"
    assert out["dead_letters"] >= 2
    assert out["restarts"] == 1
    assert "died: killed by SIGKILL" in proc.stderr


def test_main_raising_exits_1_and_cleans_up(tmp_path, no_leaks) -> None:
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


def test_run_from_python_returns_mains_value(tmp_path, no_leaks) -> None:
    from _runtime_helpers import run_python

    script = write_app(
        tmp_path,
        """
        import actorq

        @actorq.actor
        class Echo:
            def echo(self, x):
                return x

        async def main(rt):
            e = await rt.spawn(Echo)
            return await e.echo({"a": [1, 2, b"x"]})

        if __name__ == "__main__":
            print(actorq.run(main, workers=1, runtime_dir=RTDIR))
    """.replace("RTDIR", repr(str(tmp_path / "rt"))),
        name="script",
    )
    proc = run_python(str(script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'a': [1, 2, b'x']}"


def test_runtime_dir_must_be_private(tmp_path) -> None:
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o755)
    os.chmod(rt, 0o755)
    write_app(tmp_path, "async def main(rt):\n    pass\n")
    proc = run_app(tmp_path, "app:main", "--workers", "1")
    assert proc.returncode == 2
    assert "0700" in proc.stderr


FLOOD = r"""
import json
import actorq

@actorq.actor(reentrant=True)
class Peer:
    def __init__(self):
        self.got = 0
        self.peer = None
    def set_peer(self, peer):
        self.peer = peer
    def take(self, blob):
        self.got += 1
    def count(self):
        return self.got
    async def bounce(self, n):
        # nested asks across the same two full rings
        return 0 if n == 0 else 1 + await self.peer.bounce(n - 1)
    async def flood(self, n, size):
        blob = b"x" * size
        for _ in range(n):
            self.peer.take.tell(blob)
        depth = await self.peer.bounce(20)
        return depth

async def main(rt):
    a = await rt.spawn(Peer, cpu=rt.workers[0])
    b = await rt.spawn(Peer, cpu=rt.workers[-1])
    await a.set_peer(b)
    await b.set_peer(a)
    fa, fb = a.flood(3000, 1000), b.flood(3000, 1000)
    depths = [await fa, await fb]
    counts = [await a.count(), await b.count()]
    st = await rt.stats()
    print("RESULT " + json.dumps({"depths": depths, "counts": counts, "mesh": st["mesh"]}))
"""


def test_full_rings_park_senders_and_nested_asks_finish(tmp_path, no_leaks) -> None:
    write_app(tmp_path, FLOOD)
    (tmp_path / "actorq.toml").write_text("ring_capacity = 4096\n")  # 3 MB through 4 KiB rings
    proc = run_app(tmp_path, "app:main", "--workers", "2", timeout=90)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = json.loads(line[0][7:])
    assert out["depths"] == [20, 20]
    assert out["counts"] == [3000, 3000]


CRASH_LOOP = r"""
import json, os, signal
import actorq

FLAG = "armed"

@actorq.actor(restart="always")
class Bomb:
    def __init__(self):
        if os.path.exists(FLAG):
            os.kill(os.getpid(), signal.SIGKILL)  # every re-creation kills its worker
    def arm(self):
        open(FLAG, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)

@actorq.actor
class Calm:
    def hello(self):
        return "hello"

async def main(rt):
    b = await rt.spawn(Bomb, cpu=rt.workers[-1])
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
    print("RESULT " + json.dumps({"after": after, "calm": await calm.hello(),
                                  "log": [d["method"] for d in st["dead_letter_log"]]}))
"""


def test_a_crash_looping_actor_is_stopped_and_the_rest_runs_on(tmp_path, no_leaks) -> None:
    write_app(tmp_path, CRASH_LOOP)
    proc = run_app(tmp_path, "app:main", "--workers", "2", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert out["after"] == "ActorDied"
    assert out["calm"] == "hello"
    # the first crash in arm, then __init__ each time it was re-created, until the intensity
    assert out["log"][0] == "arm"
    assert set(out["log"][1:]) == {"__init__"}
    assert len(out["log"]) == 4  # restart_intensity 3: the fourth crash stops it
    assert "restart_intensity" in proc.stderr


MAILBOX = r"""
import json
import actorq

@actorq.actor(mailbox=3)
class Narrow:
    async def slow(self, i):
        await actorq.sleep(0.2)
        return i
    def quick(self):
        return "ok"

async def main(rt):
    n = await rt.spawn(Narrow)
    futs = [n.slow(i) for i in range(10)]
    out = []
    for f in futs:
        try:
            out.append(await f)
        except actorq.Overloaded:
            out.append("overloaded")
    st = await rt.stats()
    print("RESULT " + json.dumps({"out": out, "after": await n.quick()}))
"""


def test_mailbox_bound_raises_overloaded(tmp_path, no_leaks) -> None:
    write_app(tmp_path, MAILBOX)
    proc = run_app(tmp_path, "app:main", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    # one runs, three wait, the other six are refused
    assert out["out"] == [0, 1, 2, 3] + ["overloaded"] * 6
    assert out["after"] == "ok"


HOG = """
import json, time
import actorq

@actorq.actor
class Hog:
    def hog(self, s):
        time.sleep(s)  # blocks the worker's loop: never do this in an actor
        return "done"

async def main(rt):
    h = await rt.spawn(Hog, cpu=rt.workers[-1])
    held = h.hog(HOLD)
    await actorq.sleep(0.2)
    st = await rt.stats()  # answered while the worker is held, naming it
    try:
        first = await held
    except actorq.ActorDied as exc:
        first = "ActorDied"
    h2 = None
    for _ in range(500):
        try:
            h2 = await rt.spawn(Hog, cpu=rt.workers[-1])
            break
        except actorq.ActorDied:
            await actorq.sleep(0.02)
    print("RESULT " + json.dumps({"first": first, "again": await h2.hog(0),
                                  "errors": [w.get("error") for w in st["workers"]]}))
"""


def test_a_stalled_worker_is_reported_killed_and_restarted(tmp_path, no_leaks) -> None:
    write_app(tmp_path, HOG.replace("HOLD", "1000"))
    (tmp_path / "actorq.toml").write_text("stall_timeout = 1.0\n")
    proc = run_app(tmp_path, "app:main", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert out["first"] == "ActorDied"
    assert out["again"] == "done"
    assert out["errors"][0] is None
    assert "did not answer stats" in out["errors"][1]
    assert "Hog #1.hog" in out["errors"][1]
    assert "held by Hog #1.hog" in proc.stderr
    assert "killing and restarting it" in proc.stderr


def test_stall_action_report_only_reports(tmp_path, no_leaks) -> None:
    write_app(tmp_path, HOG.replace("HOLD", "2.5"))
    (tmp_path / "actorq.toml").write_text('stall_timeout = 0.5\nstall_action = "report"\n')
    proc = run_app(tmp_path, "app:main", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert out["first"] == "done"
    assert "held by Hog #1.hog" in proc.stderr
    assert "answers again" in proc.stderr


def test_no_lost_wakeups_between_workers(tmp_path, no_leaks) -> None:
    # A lost doorbell shows as an ask that waits for some unrelated timer (the
    # worker's 1 s parent check): far longer than any scheduling hiccup.
    write_app(
        tmp_path,
        """
        import json, time
        import actorq

        @actorq.actor
        class E:
            def e(self, x):
                return x
            def burst(self, other, n):
                for i in range(n):
                    other.e.tell(i)
            async def relay(self, other, n):
                worst = 0.0
                for i in range(n):
                    if i % 50 == 0:
                        await other.burst(actorq.self_ref(), 20)  # traffic both ways
                    t0 = time.perf_counter()
                    await other.e(1)
                    worst = max(worst, time.perf_counter() - t0)
                return worst

        async def main(rt):
            a = await rt.spawn(E, cpu=rt.workers[0])
            b = await rt.spawn(E, cpu=rt.workers[-1])
            worst = [await a.relay(b, 3000), await b.relay(a, 3000)]
            t = 0.0
            for _ in range(1000):
                t0 = time.perf_counter()
                await a.e(1)
                t = max(t, time.perf_counter() - t0)
            print("RESULT " + json.dumps(worst + [t]))
    """,
    )
    proc = run_app(tmp_path, "app:main", "--workers", "2", timeout=120)
    assert proc.returncode == 0, proc.stderr
    worst = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
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
