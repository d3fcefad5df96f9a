"""mypy over the actorq package, with the settings in pyproject.toml.

CI runs only pytest, so type checking runs as a test. It needs no network:
mypy, and the packages it reads, come with the ``test`` extra.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Held to strict in pyproject.toml: their errors are reported by
# test_runtime_is_strict_clean.
RUNTIME = ("actorq/_runtime/", "actorq/_actor.py", "actorq/_api.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """mypy's error lines (with the notes that follow each), as ``path:line: ...``."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        pytest.fail(f"mypy exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("actorq/")]
    if proc.returncode == 1 and not any(": error:" in line for line in lines):
        pytest.fail(f"mypy failed without naming a file:\n{proc.stdout}{proc.stderr}")
    return lines


def test_package_typechecks(mypy_errors: list[str]) -> None:
    outside = [line for line in mypy_errors if not line.startswith(RUNTIME)]
    assert not outside, "mypy reports:\n" + "\n".join(outside)


def test_runtime_is_strict_clean(mypy_errors: list[str]) -> None:
    inside = [line for line in mypy_errors if line.startswith(RUNTIME)]
    assert not inside, "mypy (strict) reports:\n" + "\n".join(inside)
