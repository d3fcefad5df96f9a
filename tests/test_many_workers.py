"""Many workers on few CPUs, on purpose: a 64-worker runtime on this 2-CPU
machine starts (with one warning), serves asks between workers, restarts a
killed worker and stops cleanly, with fds that grow with the workers, not
with their pairs."""

from __future__ import annotations

import logging
import os
import signal

import psutil
import pytest

import actorq
from actorq.testing import running, wait_until

WORKERS = 64


@actorq.actor(restart="always")
class Neighbour:
    def pid(self) -> int:
        return os.getpid()

    async def ask(self, other: actorq.ActorRef) -> int:
        return int(await other.pid())


def _try(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except Exception:
        return None


def test_more_workers_than_cpus_share_them_round_robin_with_one_warning(caplog) -> None:
    from actorq._runtime.placing import worker_cpus
    from actorq.config import Config

    cpus = sorted(os.sched_getaffinity(0))
    caplog.set_level(logging.WARNING, logger="actorq")
    chosen = worker_cpus(Config(workers=3 * len(cpus), cpus=tuple(cpus)), None)
    assert [c for c, _ in chosen] == cpus * 3
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{3 * len(cpus)} workers on {len(cpus)} CPU" in warning.getMessage()
    caplog.clear()
    worker_cpus(Config(workers=len(cpus), cpus=tuple(cpus)), None)
    assert not caplog.records  # one worker per CPU: nothing to say


@pytest.mark.slow
def test_64_workers_on_2_cpus_start_serve_restart_and_stop(tmp_path, no_leaks, caplog):
    rt_dir = tmp_path / "rt"
    caplog.set_level(logging.WARNING, logger="actorq")
    with running(workers=WORKERS, runtime_dir=rt_dir) as rt:
        cpus = rt.workers
        assert len(cpus) == WORKERS
        shared = [r for r in caplog.records if "share CPUs round robin" in r.getMessage()]
        assert len(shared) == (1 if len(set(cpus)) < WORKERS else 0)

        me = psutil.Process()
        nodes = WORKERS + 1
        # The old layout needed ~9 fds per ordered pair of nodes (38,000 here).
        assert me.num_fds() < 12 * nodes + 300, me.num_fds()
        kids = me.children()
        assert len(kids) == WORKERS
        assert max(k.num_fds() for k in kids) < 6 * nodes + 100

        client = rt.connect(timeout=60)
        refs = [client.spawn(Neighbour, name=f"n{i}", cpu=cpus[i]) for i in range(WORKERS)]
        pids = [r.pid() for r in refs]
        assert len(set(pids)) == WORKERS  # one actor per worker
        # every worker asks its neighbour over the mesh
        for i, r in enumerate(refs):
            assert r.ask(refs[(i + 1) % WORKERS]) == pids[(i + 1) % WORKERS]

        victim = 17
        os.kill(pids[victim], signal.SIGKILL)
        new_pid = wait_until(
            lambda: _try(lambda: refs[victim - 1].ask.with_timeout(5)(refs[victim])),
            timeout=60,
            what="the killed worker's successor answering its neighbour",
        )
        assert new_pid != pids[victim]
        assert refs[victim].ask(refs[victim + 1]) == pids[victim + 1]
        assert client.stats()["restarts"] == 1
        client.close()
    assert not rt_dir.exists()
    assert not [p for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
