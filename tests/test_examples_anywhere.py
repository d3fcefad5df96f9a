"""Every example runs from a directory outside the repository, by its installed
name ``actorq.examples.NAME`` (``actorq/examples`` links to ``examples/``), and
has a README that says so. The thorough tests of each are test_examples_*.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import redis
from _runtime_helpers import REPO, actorq_cmd, env, run_cmd
from test_resp_server import start_server, stop_server

from examples.pipeline.app import expected_totals

EXAMPLES = ("hello", "kvserver", "pipeline")


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    assert REPO not in tmp_path.resolve().parents
    return tmp_path


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_has_a_readme_naming_how_to_run_it(name: str) -> None:
    readme = (REPO / "examples" / name / "README.md").read_text()
    assert f"actorq.examples.{name}" in readme
    assert "from any directory" in readme


def test_the_examples_are_part_of_the_package() -> None:
    import actorq.examples.hello

    assert Path(actorq.examples.hello.__file__).resolve().parent == REPO / "examples" / "hello"


def test_hello_from_elsewhere(elsewhere: Path, no_leaks) -> None:
    proc = run_cmd(actorq_cmd(elsewhere, "actorq.examples.hello:main", "--workers", "2"),
                   cwd=elsewhere, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "500 rallies" in proc.stdout


def test_pipeline_from_elsewhere(elsewhere: Path, no_leaks) -> None:
    proc = run_cmd([sys.executable, "-m", "actorq.examples.pipeline", "--workers", "2",
                    "--records", "2000", "--batch", "100", "--json"], cwd=elsewhere, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["totals"] == expected_totals(2000, 100)


def test_kvserver_from_elsewhere(elsewhere: Path, no_leaks) -> None:
    proc, port = start_server(
        [sys.executable, "-m", "actorq.examples.kvserver", "--workers", "1", "--port", "0"],
        env={"PYTHONPATH": env()["PYTHONPATH"]},
        cwd=elsewhere,
    )
    try:
        with redis.Redis(port=port, socket_timeout=10) as r:
            assert r.set("where", "elsewhere")
            assert r.get("where") == b"elsewhere"
    finally:
        out = stop_server(proc, timeout=20)
    assert proc.returncode == 0, out
