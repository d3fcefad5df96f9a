"""The documents a newcomer is pointed at exist and cover what they index:
tox.ini points to bench/README.md, which names every benchmark; the examples'
README names every example (each has its own README: test_examples_anywhere)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_readme_names_every_benchmark_and_the_matrix() -> None:
    assert "bench/README.md" in (ROOT / "tox.ini").read_text()
    readme = (ROOT / "bench" / "README.md").read_text()
    names = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))
    assert names
    for name in names:
        assert f"`{name}`" in readme, f"bench/README.md does not name {name}"
    assert "tox -m bench" in readme


def test_examples_readme_names_every_example() -> None:
    readme = (ROOT / "examples" / "README.md").read_text()
    examples = sorted(p.name for p in (ROOT / "examples").iterdir()
                      if (p / "__init__.py").is_file())
    assert examples == ["hello", "kvserver", "pipeline"]
    for name in examples:
        assert f"`{name}/`" in readme
        assert f"actorq.examples.{name}" in readme
