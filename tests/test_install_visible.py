"""The README's install leaves actorq visible to type checkers and the examples
importable from anywhere; CI installs the same way.

setuptools' default editable install is an import hook that mypy and pyright
cannot follow (``import actorq`` is "not found" for them). The slow test
installs a copy of the project the way the README says, into a fresh
virtualenv, and runs mypy against it from a directory outside the project.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _runtime_helpers import REPO


def _readme_install() -> list[str]:
    """The ``pip install`` words of the README's first command."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("```sh\n", readme.index("## Start here")) + len("```sh\n")
    first = readme[start:].splitlines()[0]
    for part in first.split("&&"):
        words = shlex.split(part)
        if words[:2] == ["pip", "install"]:
            return words[2:]
    raise AssertionError(f"no pip install in the README's first command: {first}")


def test_ci_installs_as_the_readme_says() -> None:
    args = _readme_install()
    assert "editable_mode=strict" in args
    ci = (REPO / ".ci" / "run").read_text()
    installs = [shlex.split(ln, comments=True) for ln in ci.splitlines() if " -e " in ln]
    assert installs == [["python", "-m", "pip", "install", "-q", *args]], ci


@pytest.mark.slow
def test_the_editable_install_is_visible_to_mypy(tmp_path: Path) -> None:
    proj, venv, elsewhere = tmp_path / "proj", tmp_path / "venv", tmp_path / "elsewhere"
    proj.mkdir()
    elsewhere.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, proj / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("actorq", "examples"):  # actorq/examples is a link to ../examples
        shutil.copytree(REPO / name, proj / name, symlinks=True, ignore=ignore)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    args = [str(proj) if a.startswith(".") else a for a in _readme_install()[1:]]
    # --no-deps: the dependencies are not what is tested, and mypy finds their types in
    # its own environment's stubs or skips them (pyproject's overrides).
    install = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", *args],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    (elsewhere / "use.py").write_text("import actorq\n\nreveal_type(actorq.run)\n")
    check = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", py, "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), "use.py"],
        cwd=elsewhere, capture_output=True, text=True, timeout=300,
    )
    assert "import-not-found" not in check.stdout, check.stdout
    assert "Revealed type" in check.stdout, check.stdout
    assert "actorq._api.Runtime" in check.stdout, check.stdout
    spec = "import importlib.util as u; print(u.find_spec('actorq.examples.hello').origin)"
    found = subprocess.run(
        [py, "-c", spec],
        cwd=elsewhere, capture_output=True, text=True, timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert "examples" in found.stdout
