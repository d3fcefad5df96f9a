"""The asyncio-level workloads of ``python -m bench loop`` run to the end on
actorq's asyncio loop and on asyncio's, and leave no task behind."""

from __future__ import annotations

import gc

import pytest

from bench import loop as bench_loop


@pytest.mark.parametrize("workload", bench_loop.AIO_WORKLOADS)
@pytest.mark.parametrize("contender", ["actorq-aio", "asyncio"])
def test_aio_workload_runs(workload: str, contender: str, recwarn: pytest.WarningsRecorder) -> None:
    gc.collect()  # what earlier tests in this process left is theirs, not this workload's
    recwarn.clear()
    rate = bench_loop._aio(contender, workload, 400)
    assert rate > 0
    gc.collect()
    leaked = [w for w in recwarn if "unclosed" in str(w.message) or "pending" in str(w.message)]
    assert not leaked, leaked
