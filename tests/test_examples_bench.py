"""The benchmark matrix plumbing: tox.ini's cells, and `python -m bench report`
joining cell files into one table with ratios and a plot."""

from __future__ import annotations

import configparser
import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cell(benchmark: str, payload: int, workers: int, results: list[dict], **extra) -> dict:
    return {"benchmark": benchmark,
            "factors": {"payload": payload, "workers": workers, "placement": "compact"},
            "applied": ["payload", "workers"],
            "machine": {"cpu_model": "Test CPU", "cpus": 2, "python": "3.11", "kernel": "6"},
            "results": results, "error": None, **extra}


def row(contender: str, rate: float, case: str = "") -> dict:
    return {"contender": contender, "payload": 64, "msgs_per_s": rate, "rtt_p50_us": 10.0,
            "rtt_p99_us": 20.0, "spread": 0.1, "case": case}


def test_tox_matrix_runs_every_factor_combination_in_one_env() -> None:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT / "tox.ini")
    assert cp["tox"]["labels"].split() == ["bench", "=", "bench"]
    assert not [s for s in cp.sections() if s.startswith("testenv:bench-")]  # no env per cell
    env = cp["testenv:bench"]
    commands = env["commands"].split("\n")
    assert "python -m bench matrix --all {posargs}" in commands
    assert "python -m bench report" in commands
    sys.path.insert(0, str(ROOT))
    from bench.matrix import BENCHMARKS, cells_of

    every = cells_of(None, None, None, None, matrix=True)
    assert {(c.benchmark, c.payload, c.workers, c.placement) for c in every} == set(
        itertools.product(BENCHMARKS, [64, 4096], ["2", "all"], ["compact", "spread"]))


def test_report_joins_cells_with_ratios_and_plots(tmp_path: Path) -> None:
    (tmp_path / "kv-p64-w2-compact.json").write_text(json.dumps(cell("kv", 64, 2, [
        row("actorq-kv", 200_000, "SET -P 16"), row("asyncio-resp", 100_000, "SET -P 16"),
        row("actorq-kv", 50_000, "GET -P 1"), row("redis-server", 100_000, "GET -P 1"),
    ])))
    (tmp_path / "ring-p64-w2-compact.json").write_text(json.dumps(cell(
        "ring", 64, 2, [], error="bench/ring.py does not exist (yet)")))
    (tmp_path / "kv-p64-w2-spread.json").write_text(json.dumps(cell(
        "kv", 64, 2, [], skipped="bench/kv.py takes no --placement")))
    (tmp_path / "loop.json").write_text(json.dumps([row("actorq-loop", 3.0), row("asyncio", 1.0)]))
    proc = subprocess.run([sys.executable, "-m", "bench", "report", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "REPORT.md").read_text()
    assert md.strip() in proc.stdout
    lines = md.splitlines()
    asyncio_set = next(ln for ln in lines if "asyncio-resp" in ln)
    assert "| SET -P 16 |" in asyncio_set
    assert "| 2.00 |" in asyncio_set  # actorq 200k ÷ asyncio 100k
    redis_get = next(ln for ln in lines if "redis-server" in ln)
    assert "| 0.50 |" in redis_get
    assert "| 3.00 |" in next(ln for ln in lines if "| asyncio |" in ln)
    # The reference row comes first in its group and has no ratio.
    kv_rows = [ln for ln in lines if ln.startswith("| kv |") and "SET -P 16" in ln]
    assert "actorq-kv" in kv_rows[0]
    assert "error: bench/ring.py does not exist" in md
    assert "skipped: bench/kv.py takes no --placement" in md
    assert "Machine: Test CPU, 2 CPUs" in md
    png = tmp_path / "matrix.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:  # the `bench` extra is not installed: the table is still written, and it says why
        assert "no plot" in proc.stderr


def test_report_without_results_says_what_to_run(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "report", "--results",
                           str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "tox -m bench" in proc.stderr


@pytest.mark.slow
def test_overload_quick_json_has_every_section() -> None:
    """A smoke run of `python -m bench overload`: the sections are there (no timings checked)."""
    proc = subprocess.run([sys.executable, "-m", "bench", "overload", "--quick", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert {"machine", "loadavg", "args", "kv", "greedy", "actor", "targets"} <= set(doc)
    steps = [r["offered_x"] for r in doc["kv"] if r["contender"] == "actorq-kv"]
    assert steps == [0.5, 1.0, 2.0, 5.0, 10.0]
    for r in doc["kv"]:
        assert {"contender", "msgs_per_s", "rtt_p50_us", "rtt_p99_us", "offered_per_s",
                "goodput_per_s", "errors", "unsent", "peak_rss_mib"} <= set(r)
    assert [r["case"] for r in doc["greedy"]] == ["quiet", "greedy"]
    assert "p99_x_quiet" in doc["greedy"][1]
    assert sorted((r["fair_queueing"], r["flood"]) for r in doc["actor"]) == [
        (False, False), (False, True), (True, False), (True, True)]
    flooded = [r for r in doc["actor"] if r["flood"]]
    for r in flooded:
        assert {"shed", "window", "queued", "sojourn_p99_ms", "p99_x_quiet"} <= set(r)
    assert doc["targets"]
    assert all(isinstance(t["met"], bool) for t in doc["targets"])
