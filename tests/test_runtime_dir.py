"""The runtime directory: claimed with an owner file, removed on every exit we
survive, swept at the next start when a killed runtime left it (in the
per-user registry), and named in the one line a runtime prints at the
default log level."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from _runtime_helpers import finish, run_cmd, start_app, wait_for, workers_of, write_app

from actorq._runtime import rundir
from actorq.errors import ConfigError

APP = r"""
import actorq

async def main(rt):
    print("ADDRESS " + rt.address, flush=True)
"""

FOREVER = r"""
import actorq

async def main(rt):
    print("ADDRESS " + rt.address, flush=True)
    while True:
        await actorq.sleep(3600)
"""


def _dead_owner() -> tuple[int, float]:
    """The pid and start time of a process that has exited and been reaped."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    started = psutil.Process(child.pid).create_time()
    child.communicate(b"")
    return child.pid, started


def _me() -> tuple[int, float]:
    return os.getpid(), psutil.Process().create_time()


def _runtime_dir(base: Path, name: str, owner: tuple[int, float] | None) -> Path:
    d = base / name
    d.mkdir(mode=0o700)
    (d / "control").write_text("")  # stands in for a socket
    if owner is not None:
        rundir.write_owner(d, *owner)
    return d


def _stale_socket(path: Path) -> None:
    """A unix socket file nobody listens on, as a SIGKILLed runtime leaves."""
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.fspath(path))


def test_sweep_removes_only_our_directories_whose_owner_is_gone(tmp_path) -> None:
    pid, started = _dead_owner()
    stale = _runtime_dir(tmp_path, "actorq-stale", (pid, started))
    reused = _runtime_dir(tmp_path, "actorq-reused", (os.getpid(), 12345.0))  # pid reused since
    live = _runtime_dir(tmp_path, "actorq-live", _me())
    unowned = _runtime_dir(tmp_path, "actorq-unowned", None)
    other = _runtime_dir(tmp_path, "other-stale", (pid, started))
    elsewhere = _runtime_dir(tmp_path, "elsewhere", (pid, started))
    (tmp_path / "actorq-link").symlink_to(elsewhere)

    removed = rundir.sweep_stale(tmp_path)

    assert sorted(removed) == sorted([stale, reused])
    assert not stale.exists()
    assert not reused.exists()
    for kept in (live, unowned, other, elsewhere, tmp_path / "actorq-link"):
        assert kept.exists(), kept


def test_an_explicit_directory_of_a_dead_runtime_is_reused(tmp_path) -> None:
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    _stale_socket(d / "control")
    rundir.write_owner(d, *_dead_owner())
    path, created = rundir.make_runtime_dir(str(d))
    try:
        assert (path, created) == (d, False)
        assert not (d / "control").exists()
        assert rundir.read_owner(d) == _me()
    finally:
        rundir.release_runtime_dir(path, created)
    assert sorted(os.listdir(d)) == []


def test_an_explicit_directory_with_an_unowned_dead_socket_is_reused(tmp_path) -> None:
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    _stale_socket(d / "control")
    path, created = rundir.make_runtime_dir(str(d))
    rundir.release_runtime_dir(path, created)
    assert os.listdir(d) == []


def test_an_explicit_directory_in_use_is_refused_naming_its_owner(tmp_path) -> None:
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        rundir.write_owner(d, owner.pid, psutil.Process(owner.pid).create_time())
        with pytest.raises(ConfigError, match=f"in use by a running runtime \\(pid {owner.pid}\\)"):
            rundir.make_runtime_dir(str(d))
    finally:
        owner.communicate(b"")
    assert (d / rundir.OWNER_FILE).exists()  # not ours to remove while it ran


def test_an_explicit_directory_whose_socket_answers_is_refused(tmp_path) -> None:
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.fspath(d / "control"))
        s.listen()
        with pytest.raises(ConfigError, match="answers"):
            rundir.make_runtime_dir(str(d))
    assert not (d / rundir.OWNER_FILE).exists()


def test_next_start_sweeps_the_registry_and_prints_where_it_runs(tmp_path, no_leaks) -> None:
    write_app(tmp_path, APP)
    base = Path(tempfile.mkdtemp(prefix="aqx", dir="/tmp"))  # short: the socket lives below
    try:
        reg = base / "actorq"
        reg.mkdir(mode=0o700)
        stale = _runtime_dir(reg, "stale", _dead_owner())
        live = _runtime_dir(reg, "live", _me())
        unowned = _runtime_dir(reg, "unowned", None)
        proc = run_cmd(
            [sys.executable, "-m", "actorq", "run", "app:main", "--workers", "1"],
            cwd=tmp_path,
            extra_env={"XDG_RUNTIME_DIR": str(base)},
        )
        assert proc.returncode == 0, proc.stderr
        used = Path(proc.stdout.split()[1].removeprefix("ipc://")).parent
        assert used.parent == reg
        assert not stale.exists()
        assert live.exists()
        assert unowned.exists()
        assert not used.exists()  # its own directory is gone too
        banner = [ln for ln in proc.stderr.splitlines() if "actorq.banner" in ln]
        assert len(banner) == 1, proc.stderr
        assert f"runtime {used.name} up: 1 workers on CPUs" in banner[0]
        assert f"runtime directory {used} (actorq top {used.name}" in banner[0]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_sigkilled_runtimes_directory_is_reused_by_the_next(tmp_path, no_leaks) -> None:
    write_app(tmp_path, FOREVER)
    proc = start_app(tmp_path, "app:main", "--workers", "1")
    assert proc.stdout.readline().startswith("ADDRESS ")
    workers = workers_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    wait_for(
        lambda: not any(w.is_running() and w.status() != "zombie" for w in workers),
        what="the workers to die with their supervisor",
    )
    assert (tmp_path / "rt" / "control").exists()
    assert rundir.read_owner(tmp_path / "rt")[0] == proc.pid

    write_app(tmp_path, APP)
    proc = start_app(tmp_path, "app:main", "--workers", "1")
    rc, out, err = finish(proc)
    assert rc == 0, err
    assert out.startswith("ADDRESS ")
    assert os.listdir(tmp_path / "rt") == []


def test_a_run_that_fails_to_start_leaves_no_directory(tmp_path, no_leaks) -> None:
    import resource

    def low_limit() -> None:  # fails after the directory is made: too few fds for the rings
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    write_app(tmp_path, APP)
    proc = run_cmd(
        [sys.executable, "-m", "actorq", "run", "app:main", "--workers", "40"],
        cwd=tmp_path,
        extra_env={"XDG_RUNTIME_DIR": str(tmp_path)},
        preexec_fn=low_limit,
    )
    assert proc.returncode == 2, proc.stderr
    assert "file descriptors" in proc.stderr
    assert not (tmp_path / "actorq").exists()  # nothing of it, not even the registry, stays
