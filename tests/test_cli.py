"""The ``actorq`` command's dispatch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from actorq.cli import main


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "COMMAND" in out


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "actorq", "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no-such-command" in proc.stderr


def test_a_reader_that_stops_early_is_not_an_error(hwloc_trees) -> None:
    # `actorq topology --json ... | head -1`: the pipe closes long before the end
    big = next((p for n, p in hwloc_trees.items() if "256" in n), next(iter(hwloc_trees.values())))
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorq", "topology", "--json", "--all", "--root", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # like head: read a little, then go away
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 0, err
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
