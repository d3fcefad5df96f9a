"""examples/pipeline run for real: the totals are right, every stage saw every
record, and a slow stage slows the producer with at most `window` batches per link."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("zmq")

from examples.pipeline.app import expected_totals, generate, parse, transform

ROOT = Path(__file__).resolve().parents[1]


def run_pipeline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "examples.pipeline", "--workers", "2", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_stage_functions() -> None:
    batch = generate(3, 5)
    assert batch.count(b"\n") == 4
    recs = parse(batch)
    assert len(recs) == 5
    assert all(isinstance(u, str) and isinstance(c, int) for u, c in recs)
    assert transform([["a", 99], ["b", 100], ["c", 1234]]) == [["b", 120], ["c", 1481]]


def test_pipeline_totals_and_stage_counts() -> None:
    proc = run_pipeline("--records", "20000", "--batch", "200", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["totals"] == expected_totals(20000, 200)
    by = {s["stage"]: s for s in result["stages"]}
    assert by["producer"]["records"] == by["parse"]["records"] == by["transform"]["records"]
    assert by["parse"]["records"] == 20000
    kept = sum(1 for b in range(100) for _ in transform(parse(generate(b, 200))))
    assert by["aggregate"]["records"] == kept
    assert {s["stage"] for s in result["stages"]} == {"producer", "parse", "transform",
                                                      "aggregate"}
    assert by["parse"]["cpu"] != by["transform"]["cpu"]  # stages on different workers
    for s in result["stages"]:
        assert s["max_inflight"] <= result["window"]


def test_slow_stage_slows_the_producer_with_bounded_batches_in_flight() -> None:
    proc = run_pipeline("--records", "4000", "--batch", "100", "--window", "2",
                        "--slow", "transform:150", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    by = {s["stage"]: s for s in result["stages"]}
    # Backpressure reached the producer: it had to wait for window slots ...
    assert by["producer"]["waits"] > 0
    assert by["producer"]["blocked_s"] > 0
    # ... because parse, in front of the slow stage, was waiting for transform.
    assert by["parse"]["waits"] > 0
    # Memory bound: never more than `window` batches on any link.
    assert max(s["max_inflight"] for s in result["stages"]) == 2
    assert result["totals"] == expected_totals(4000, 100)


def test_table_output_and_bad_option() -> None:
    proc = run_pipeline("--records", "3000", "--batch", "300")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["stage", "cpu", "records", "rec/s"]
    assert [ln.split()[0] for ln in lines[1:5]] == ["producer", "parse", "transform", "aggregate"]
    assert lines[-1].startswith("checksum ")
    bad = run_pipeline("--slow", "sort:10")
    assert bad.returncode == 2
    assert "STAGE:USEC" in bad.stderr
