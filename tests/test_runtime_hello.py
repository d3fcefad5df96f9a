"""The README's main command: ``actorq run actorq.examples.hello:main`` (from the repo root here;
tests/test_examples_anywhere.py runs it from elsewhere)."""

from __future__ import annotations

from _runtime_helpers import REPO, actorq_cmd, run_app, run_cmd


def test_hello_example_runs_and_explains_itself(tmp_path, no_leaks) -> None:
    proc = run_cmd(actorq_cmd(tmp_path, "actorq.examples.hello:main"), cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "10 + 5 = 15; after three tells of 1 it is 18" in out
    assert "500 rallies" in out
    assert "where everything lives" in out
    assert out.rstrip().endswith("exits 0")


def test_readme_runs_the_hello_example() -> None:
    readme = (REPO / "README.md").read_text()
    assert "&& actorq run actorq.examples.hello:main" in readme


def test_readme_api_example_runs(tmp_path, no_leaks) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.index("## Actors: the API")
    start = readme.index("```python\n", section) + len("```python\n")
    (tmp_path / "app.py").write_text(readme[start : readme.index("```", start)])
    proc = run_app(tmp_path, "app:main", timeout=120)
    assert proc.returncode == 0, proc.stderr
