"""Helpers for the end-to-end runtime tests: write an app, run it as a real runtime.

Every runtime gets its own runtime directory under the test's tmp_path, so
tests are safe under pytest-xdist; nothing listens on a TCP port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import actorq
from actorq.testing import wait_until

REPO = Path(__file__).resolve().parents[1]


def write_app(tmp_path: Path, source: str, name: str = "app") -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")])
    e.pop("ACTORQ_FSROOT", None)
    return e


def actorq_cmd(tmp_path: Path, target: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "actorq",
        "run",
        target,
        "--runtime-dir",
        str(tmp_path / "rt"),
        *extra,
    ]


def run_cmd(
    cmd: list[str],
    cwd: Path | None = None,
    timeout: float = 60.0,
    extra_env: dict[str, str] | None = None,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with this checkout importable (plus ``extra_env``); output
    captured as text."""
    e = env()
    e.update(extra_env or {})
    return subprocess.run(
        cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout, **kw
    )


def run_python(
    *args: str, cwd: Path | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python ARGS...`` with this checkout importable (see run_cmd)."""
    return run_cmd([sys.executable, *args], cwd=cwd, timeout=timeout)


def run_app(
    tmp_path: Path, target: str, *extra: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return run_cmd(actorq_cmd(tmp_path, target, *extra), cwd=tmp_path, timeout=timeout)


def start_app(tmp_path: Path, target: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        actorq_cmd(tmp_path, target, *extra),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """``actorq.testing.wait_until`` with this file's historical defaults."""
    return wait_until(pred, timeout=timeout, interval=0.02, what=what)


def workers_of(pid: int) -> list[psutil.Process]:
    """The worker processes of the runtime whose supervisor is ``pid`` (not its main process)."""
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for kid in kids:
        try:
            if kid.name() != "actorq-main":
                out.append(kid)
        except psutil.NoSuchProcess:
            pass
    return out


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"runtime did not exit; stderr:\n{err}") from None
    return proc.returncode, out, err


def check_counter_calls(hits: Any) -> None:
    """The calls every client test makes on a ``hits`` counter holding 10 (add,
    a tell, a remote failure, a ref inside a reply): asks, tells and refs work
    through whichever client ``hits`` is bound to. Leaves it at 18."""
    assert hits.add(5) == 15
    hits.add.tell(2)
    assert hits.add(0) == 17
    with pytest.raises(actorq.RemoteError, match="bad day"):
        hits.fail()
    me = hits.me()  # a ref inside a reply is bound to the same client
    assert me == hits
    assert me.add(1) == 18
