"""Shared fixtures: real machines' sysfs trees, and leak checks.

The 14 hwloc snapshots in ``tests/fixtures/hwloc-sysfs`` (BSD-3, from hwloc; see
its README and COPYING) are extracted
once per test session (once across all xdist workers, under a file lock) and
handed out as roots for ``actorq.topology.discover``.
"""

from __future__ import annotations

import fcntl
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["actorq.testing"]  # the actorq_runtime fixture

FIXTURES = Path(
    os.environ.get(
        "ACTORQ_HWLOC_FIXTURES",
        str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "hwloc-sysfs"),
    )
)

EXPECTED: dict[str, dict] = (
    json.loads((FIXTURES / "expected.json").read_text()) if FIXTURES.is_dir() else {}
)
MACHINES = sorted(EXPECTED)


def _shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker has basetemp/popen-gwN; its parent is shared by all.
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def hwloc_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tarball name -> extracted root (the single directory holding ``sys/``)."""
    if not EXPECTED:
        pytest.skip(f"hwloc fixtures not found at {FIXTURES}")
    dest = _shared_tmp(tmp_path_factory) / "hwloc-sysfs"
    dest.mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path] = {}
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in MACHINES:
            out = dest / name.removesuffix(".tar.bz2")
            done = out / ".extracted"
            if not done.exists():
                with tarfile.open(FIXTURES / name) as tar:
                    tar.extractall(out, filter="data")
                done.touch()
            (prefix,) = [p for p in out.iterdir() if (p / "sys").is_dir()]
            roots[name] = prefix
    return roots


def _memfds() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:"):
            found.add(f"{fd}->{target}")
    return found


def _dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _children() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a memfd, a /dev/shm entry or a child process behind."""
    fds, shm, kids = _memfds(), _dev_shm(), _children()
    yield
    import time

    deadline = time.monotonic() + 5.0
    while True:
        leaked_kids = _children() - kids
        if not leaked_kids or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    leaked_fds = _memfds() - fds
    leaked_shm = {n for n in _dev_shm() - shm if "actorq" in n or n.startswith(("psm_", "wnsm_"))}
    assert not leaked_kids, f"child processes left running: {sorted(leaked_kids)}"
    assert not leaked_fds, f"memfd descriptors left open: {sorted(leaked_fds)}"
    assert not leaked_shm, f"/dev/shm entries left behind: {sorted(leaked_shm)}"


@pytest.fixture
def xdg(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR for this test (and the processes it starts): its
    runtimes' registry (rundir.py) is its own. Short, under /tmp: control
    sockets must fit a unix socket path."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="aqx", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base
    shutil.rmtree(base, ignore_errors=True)
