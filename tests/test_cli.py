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
