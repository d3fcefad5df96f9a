"""examples/pool for real: a multiprocessing.Pool whose processes each connect
after the fork and merge their results into one shared actor."""

from __future__ import annotations

import json

from _runtime_helpers import run_python


def test_pool_pushes_work_to_actors() -> None:
    proc = run_python("-m", "examples.pool", "--docs", "120", "--processes", "3", timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["summary"] == {"docs": 120, "words": 120 * 200}
    assert result["top"] == result["expected_top"]
    assert result["merges_seen"] == 120
    # each pool process that did work had a channel of its own (a process the
    # pool started but never gave a task may have opened one too)
    assert 1 <= result["task_processes"] <= result["channels_opened"] <= 3
