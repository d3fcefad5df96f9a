"""Every ``actorq`` command whose reader went away ends quietly: exit 0, no traceback.

``actorq stats DIR | head -1`` closes the pipe while (or before) the command
writes; Python then raises BrokenPipeError from a write or from the final
flush. The reader here is gone before the command starts, so the very first
write meets the closed pipe whatever the output's size; one case goes
through a shell pipeline into ``head -1``, as a user types it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _runtime_helpers import env

from actorq.testing import running


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    r, w = os.pipe()
    os.close(r)  # nobody will read: the first write fails with EPIPE
    try:
        return subprocess.run([sys.executable, "-m", "actorq", *args], stdout=w,
                              stderr=subprocess.PIPE, text=True, env=env(), timeout=120)
    finally:
        os.close(w)


def _quiet(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "BrokenPipe" not in proc.stderr
    assert "Exception ignored" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("topology",),
        ("topology", "--json", "--all"),
        ("place", "web=4", "kv=2,shared"),
        ("place", "--json", "web=4"),
        ("place", "--svg", "-", "web=4", "kv=2,shared"),
        ("--help",),
        ("run", "--help"),
    ],
    ids=" ".join,
)
def test_machine_commands(args: tuple[str, ...]) -> None:
    _quiet(_into_closed_pipe(*args))


def test_stats_of_a_running_runtime(tmp_path: Path, no_leaks) -> None:
    rt_dir = tmp_path / "rt"
    with running(workers=2, runtime_dir=rt_dir):
        _quiet(_into_closed_pipe("stats", str(rt_dir)))
        _quiet(_into_closed_pipe("stats", "--json", str(rt_dir)))
        line = f'set -o pipefail; "{sys.executable}" -m actorq stats "{rt_dir}" | head -1'
        piped = subprocess.run(
            ["bash", "-c", line],
            capture_output=True, text=True, env=env(), timeout=120,
        )
        _quiet(piped)
        assert len(piped.stdout.splitlines()) == 1


def test_run_whose_app_prints_into_a_closed_pipe(tmp_path: Path, no_leaks) -> None:
    (tmp_path / "app.py").write_text(
        "async def main(rt):\n    for i in range(100000):\n        print('line', i)\n"
    )
    proc = _into_closed_pipe("run", "app:main", "--workers", "1",
                             "--runtime-dir", str(tmp_path / "rt"))
    assert "Traceback" not in proc.stderr, proc.stderr
