"""Watching runtimes from outside: ``actorq ps``, ``actorq stats --watch``,
``actorq top`` (in a pseudo-terminal), and finding a runtime by name, by
directory or as the only one running. Each test has its own registry
(the ``xdg`` fixture), so it sees only its own runtimes."""

from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from _runtime_helpers import env, run_cmd, write_app

import actorq
from actorq._runtime import rundir
from actorq.testing import running, wait_until


@actorq.actor
class Echo:
    def f(self, x: int) -> int:
        return x


BUSY_APP = r"""
import actorq

@actorq.actor
class Echo:
    def f(self, x):
        return x

async def main(rt):
    e = await rt.spawn(Echo, name="echo")
    print("UP", flush=True)
    while True:
        for i in range(100):
            await e.f(i)
        await actorq.sleep(0.01)
"""


def actorq_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return run_cmd([sys.executable, "-m", "actorq", *args], timeout=timeout)


def test_ps_lists_runtimes_by_name_and_stats_finds_them(xdg, tmp_path) -> None:
    with (
        running(workers=1, name="alpha") as a,
        running(workers=1, name="beta", runtime_dir=tmp_path / "beta") as b,
    ):
        assert a.runtime_dir == xdg / "actorq" / "alpha"  # the default directory is the entry
        assert (xdg / "actorq" / "beta").resolve() == (tmp_path / "beta").resolve()  # a link
        proc = actorq_cli("ps", "--json")
        assert proc.returncode == 0, proc.stderr
        listed = {r["name"]: r for r in json.loads(proc.stdout)}
        assert sorted(listed) == ["alpha", "beta"]
        assert listed["alpha"]["pid"] == os.getpid()  # a hosted runtime's supervisor: us
        assert listed["alpha"]["workers"] == 1
        assert Path(listed["beta"]["directory"]) == (tmp_path / "beta").resolve()
        table = actorq_cli("ps").stdout.splitlines()
        assert table[0].split()[:4] == ["NAME", "PID", "WORKERS", "UPTIME"]
        assert [ln.split()[0] for ln in table[1:]] == ["alpha", "beta"]

        two = actorq_cli("stats")
        assert two.returncode == 1
        assert "2 runtimes are running (alpha, beta): name one" in two.stderr
        by_name = actorq_cli("stats", "beta", "--json")
        assert by_name.returncode == 0, by_name.stderr
        assert json.loads(by_name.stdout)["name"] == "beta"
        by_dir = actorq_cli("stats", str(b.runtime_dir))
        assert by_dir.returncode == 0
        assert "runtime beta" in by_dir.stdout
        unknown = actorq_cli("stats", "gamma")
        assert unknown.returncode == 1
        assert "no runtime named 'gamma'" in unknown.stderr
        assert "alpha, beta" in unknown.stderr

        with (
            pytest.raises(actorq.ConfigError, match="'alpha' is already running"),
            running(workers=1, name="alpha"),
        ):
            pass
        assert a.running
    assert not (xdg / "actorq").exists()  # both entries went with their runtimes, then it
    none = actorq_cli("stats")
    assert none.returncode == 1
    assert "no runtime of yours is running" in none.stderr


def test_stats_watch_json_one_document_per_line_with_rates(xdg, no_leaks) -> None:
    with running(workers=2, name="watched") as rt, rt.connect() as client:
        echo = client.spawn(Echo, name="echo")
        for i in range(100):
            echo.f(i)

        def published() -> bool:
            rows = [a for w in client.stats()["metrics"]["workers"] for a in w["actors"]]
            return [a["messages"] for a in rows] == [100]

        wait_until(published, what="the 100 messages in the published metrics")
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorq", "stats", "--watch", "0.3", "--json"],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None

            def read() -> dict:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else ""
                return json.loads(line)

            def actor(doc: dict) -> dict:
                (a,) = [a for a in doc["actors"] if a["label"] == "Echo 'echo' #1"]
                return a

            docs = [read()]
            assert docs[0]["interval"] is None
            assert docs[0]["name"] == "watched"
            assert actor(docs[0])["messages"] == 100
            assert actor(docs[0])["messages_per_s"] is None  # no rate from one snapshot
            for i in range(50):
                echo.f(i)
            while actor(docs[-1])["messages"] < 150:
                docs.append(read())
                assert len(docs) < 100
            docs += [read(), read()]  # idle after the asks
            # A document taken before the worker published again carries the
            # previous rates: the second may still have none (the first had
            # none), and the 50 asks may show in the second one already.
            rates = [actor(d)["messages_per_s"] for d in docs[1:]]
            assert all(r is None or r >= 0 for r in rates)
            assert all(r is not None for r in rates[1:])
            assert any(r is not None and r > 0 for r in rates)
            assert rates[-1] == 0
            for d in docs[1:]:
                assert d["interval"] > 0
                worker = d["workers"][0]
                assert {"cpu_percent", "received_per_s", "wakeups_per_s"} <= worker.keys()
                assert "service_buckets" not in actor(d)  # only the next rate needs it
        finally:
            assert proc.stdout is not None
            proc.stdout.close()  # the reader goes away: the next line ends it quietly
            rc = proc.wait(timeout=30)
            err = proc.stderr.read() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
        assert rc == 0, err
        assert "Traceback" not in err, err
        assert "Broken" not in err, err


def _read_until(fd: int, want: bytes, count: int, deadline: float, got: bytearray) -> None:
    while got.count(want) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"waited for {count} x {want!r}; got:\n{got.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                chunk = b""
            assert chunk, f"top ended early:\n{got.decode(errors='replace')}"
            got += chunk


def test_top_in_a_pseudo_terminal_refreshes_sorts_and_quits(xdg, tmp_path, no_leaks) -> None:
    write_app(tmp_path, BUSY_APP)
    app = subprocess.Popen(
        [sys.executable, "-m", "actorq", "run", "app:main", "--workers", "2", "--name", "busy"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    master, slave = os.openpty()
    top = None
    try:
        assert app.stdout is not None
        assert app.stdout.readline() == "UP\n"
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        top = subprocess.Popen(
            [sys.executable, "-m", "actorq", "top", "--interval", "0.3"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env(), "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"},
            start_new_session=True,
        )
        os.close(slave)
        slave = -1
        got = bytearray()
        deadline = time.monotonic() + 60
        _read_until(master, b"actorq top: busy", 3, deadline, got)  # three refreshes
        assert b"sorted by cpu" in got
        _read_until(master, b"Echo 'echo' #1", 1, deadline, got)  # the busy actor has a line
        os.write(master, b"m")
        _read_until(master, b"sorted by mailbox", 1, deadline, got)
        os.write(master, b"l")
        _read_until(master, b"sorted by latency", 1, deadline, got)
        os.write(master, b"q")
        assert top.wait(timeout=30) == 0
    finally:
        if slave >= 0:
            os.close(slave)
        if top is not None and top.poll() is None:
            top.kill()
            top.wait()
        os.close(master)
        app.terminate()
        app.communicate(timeout=30)


def test_top_without_a_runtime_says_so(xdg) -> None:
    proc = actorq_cli("top")
    assert proc.returncode == 1
    assert "no runtime of yours is running" in proc.stderr


def test_the_banner_names_the_runtime_and_its_directory(xdg, tmp_path, no_leaks) -> None:
    write_app(tmp_path, "async def main(rt):\n    pass\n")
    proc = run_cmd(
        [sys.executable, "-m", "actorq", "run", "app:main", "--workers", "1"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    (banner,) = [ln for ln in proc.stderr.splitlines() if "actorq.banner" in ln]
    name = f"app-{banner.split('[')[1].split()[0]}"  # the app's name and the supervisor's pid
    assert f"runtime {name} up: 1 workers" in banner
    assert f"runtime directory {xdg / 'actorq' / name} " in banner
    assert f"actorq top {name}" in banner


def test_registry_must_be_private(xdg) -> None:
    (xdg / "actorq").mkdir(mode=0o755)
    os.chmod(xdg / "actorq", 0o755)
    with pytest.raises(actorq.ConfigError, match="mode 0700"):
        rundir.registry()


def test_names_are_checked(xdg) -> None:
    for bad in ("", "../x", ".hidden", "-x", "a/b", "x" * 65):
        with pytest.raises(actorq.ConfigError, match="runtime name"):
            rundir.check_name(bad)
    assert rundir.default_name("examples.hello") == f"hello-{os.getpid()}"
    assert rundir.default_name("examples.hello.app") == f"hello-{os.getpid()}"
    assert rundir.default_name("app") == f"app-{os.getpid()}"
    assert rundir.default_name(None) == f"actorq-{os.getpid()}"


def test_a_stale_link_is_swept_and_its_directory_kept(xdg, tmp_path) -> None:
    from test_runtime_dir import _dead_owner

    target = tmp_path / "explicit"
    target.mkdir(mode=0o700)
    rundir.write_owner(target, *_dead_owner())
    reg = rundir.registry()
    (reg / "gone").symlink_to(target)
    path, created = rundir.make_runtime_dir(None, "next")
    try:
        assert not (reg / "gone").is_symlink()
        assert target.exists()
        assert (target / rundir.OWNER_FILE).exists()
        assert [r["name"] for r in rundir.running_runtimes()] == ["next"]
    finally:
        rundir.release_runtime_dir(path, created)
    assert not path.exists()


def test_two_runtimes_of_one_process_get_names_of_their_own(xdg) -> None:
    with running(workers=1) as a, running(workers=1) as b:
        assert a.runtime_dir.name == f"actorq-{os.getpid()}"
        assert b.runtime_dir.name == f"actorq-{os.getpid()}-2"


def test_stats_watch_ends_quietly_on_ctrl_c(xdg) -> None:
    import signal

    with running(workers=1, name="interrupted") as rt, rt.connect() as client:
        client.spawn(Echo, name="echo").f(1)
        wait_until(
            lambda: (
                [a["messages"] for a in client.stats()["metrics"]["workers"][0]["actors"]] == [1]
            ),
            what="the message in the published metrics",
        )
        text = actorq_cli("stats")
        assert text.returncode == 0, text.stderr
        assert "1 messages (1 asks answered), 0 errors, queued 0, shed 0" in text.stdout
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorq", "stats", "--watch", "0.2"],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert "interrupted" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert err == ""


def test_the_last_runtime_out_removes_the_registry(xdg) -> None:
    with running(workers=1):
        assert (xdg / "actorq").is_dir()
    assert not (xdg / "actorq").exists()  # nothing of actorq stays behind
    assert rundir.running_runtimes() == []
    assert not (xdg / "actorq").exists()  # looking does not make it
