"""``python -m bench embed`` runs end to end (tiny sizes: a smoke test of the
plumbing, never a speed check) and reports every contender or why it skipped."""

from __future__ import annotations

import json

import pytest
from _runtime_helpers import run_python

pytest.importorskip("uvicorn")


@pytest.mark.slow
def test_bench_embed_reports_every_contender() -> None:
    proc = run_python(
        "-m",
        "bench",
        "embed",
        "--calls",
        "300",
        "--seconds",
        "0.3",
        "--repeat",
        "1",
        "--connections",
        "4",
        "--json",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    contenders = {(r["contender"], r["mode"], r.get("in_flight")) for r in doc["asks"]}
    for form in (("blocking", 1), ("asyncio", 1), ("asyncio", 64)):
        assert ("actorq-direct", *form) in contenders
        assert ("actorq-zmq", *form) in contenders
    assert ("mp-manager", "blocking", 1) in contenders
    assert any(r["contender"] == "ray" for r in doc["asks"])  # measured, or why not
    handlers = {r["handler"] for r in doc["web"]}
    assert {"/noop", "/ask"} <= handlers
    assert all(r["req_s"] > 0 for r in doc["web"])
    assert doc["ratios"]["outside_ask_p50_us"] > 0
