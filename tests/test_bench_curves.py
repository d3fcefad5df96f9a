"""``python -m bench report``'s curves: the overload curve (goodput and p99 against
offered load) from an overload document, and the scaling curve (throughput
against workers) from whatever results carry two or more worker counts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_examples_bench import cell, row

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def step(contender: str, x: float, offered: float, goodput: float, p99_us: float) -> dict:
    """One open-loop step, shaped as bench/overload.py writes it."""
    return {"contender": contender, "offered_x": x, "offered_per_s": offered,
            "goodput_per_s": goodput, "msgs_per_s": goodput, "rtt_p50_us": p99_us / 4,
            "rtt_p99_us": p99_us, "errors": 0, "unsent": 0, "peak_rss_mib": 40.0}


def overload_doc() -> dict:
    kv = [step("actorq-kv", x, 10_000 * x, min(10_000 * x, 9_500), 800 * x)
          for x in (0.5, 1, 2, 5, 10)]
    kv += [step("asyncio-resp", x, 6_000 * x, min(6_000 * x, 5_000), 2_000 * x)
           for x in (0.5, 1, 2, 5, 10)]
    return {"machine": {}, "loadavg": [0, 0, 0], "args": {}, "kv": kv, "greedy": [],
            "actor": [], "targets": [], "skipped": []}


def report(results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", "report", "--results", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_overload_and_scaling_curves_are_drawn(tmp_path: Path) -> None:
    (tmp_path / "overload.json").write_text(json.dumps(overload_doc()))
    for workers, rate in ((2, 100_000), (4, 180_000), (8, 300_000)):
        (tmp_path / f"actors-p64-w{workers}.json").write_text(json.dumps(cell(
            "actors", 64, workers, [row("actorq-tell", rate), row("mp-queue", rate / 3)])))
    proc = report(tmp_path)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "REPORT.md").read_text()
    assert "Overload (open loop" in md
    actorq_10x = next(ln for ln in md.splitlines() if ln.startswith("| actorq-kv | 10 |"))
    assert "| 100,000 | 9,500 |" in actorq_10x  # offered, goodput
    assert "| 8.00 |" in actorq_10x  # p99 in ms
    assert "overload.json" not in md  # not mistaken for a matrix cell
    if HAVE_MATPLOTLIB:
        for name in ("overload.png", "scaling.png", "matrix.png"):
            assert (tmp_path / name).read_bytes()[:8] == PNG, name
    else:
        assert "no plot" in proc.stderr


def test_scaling_series_join_worker_counts() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.report import scaling_series

    rows = [
        {"benchmark": "actors", "payload": 64, "placement": None, "case": "", "contender": "a",
         "workers": w, "msgs_per_s": r} for w, r in ((2, 10.0), (8, 30.0), (2, 12.0))
    ] + [{"benchmark": "ring", "payload": 64, "placement": None, "case": "", "contender": "b",
          "workers": 2, "msgs_per_s": 5.0}]
    assert scaling_series(rows) == {"actors 64 B a": [(2, 12.0), (8, 30.0)]}


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="the bench extra draws the curves")
def test_missing_curves_say_what_would_draw_them(tmp_path: Path) -> None:
    (tmp_path / "ring-p64-w2.json").write_text(json.dumps(cell("ring", 64, 2, [row("r", 1.0)])))
    proc = report(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no overload curve" in proc.stderr
    assert "python -m bench overload --json-out" in proc.stderr
    assert "no scaling curve: no results at two or more worker counts" in proc.stderr
    assert not (tmp_path / "overload.png").exists()
    assert not (tmp_path / "scaling.png").exists()


def test_the_matrix_prints_a_line_per_cell_with_what_is_left(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "matrix", "--all", "--benchmark", "nosuch",
         "--payload", "64,4096", "--workers", "2", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1  # every cell failed: no bench/nosuch.py
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("bench matrix [")]
    assert [ln.split("]")[0] for ln in lines] == [f"bench matrix [{i}/4" for i in range(1, 5)]
    assert "nosuch-p64-w2-compact: 0m0" in lines[0]
    assert "estimate after the first measured cell" in lines[0]
    assert "left, done ~" in lines[1]
    assert "4 cells in" in proc.stderr
    assert len(list(tmp_path.glob("nosuch-*.json"))) == 4


def test_the_estimate_uses_each_benchmarks_own_pace() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.matrix import Cell, Progress

    cells = [Cell(b, p, "2", "compact") for b in ("ring", "kv") for p in (64, 4096)]
    progress = Progress(cells, will_skip={cells[3]})
    assert progress.estimate(cells) is None  # nothing measured yet
    progress.done(cells[0], 10.0, "ok")
    assert progress.estimate(cells[1:]) == 20.0  # ring 10 s; kv unknown: the overall mean
    progress.done(cells[1], 20.0, "ok")
    progress.done(cells[2], 100.0, "ok")
    progress.done(cells[3], 999.0, "skipped")  # skipped cells do not count
    assert progress.estimate(cells) == 15.0 + 15.0 + 100.0  # the skipped cell is free
