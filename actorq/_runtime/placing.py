"""Which CPUs get workers, and which worker gets a new actor.

The rules live in ``actorq.placement`` (a pure function of the universe and
the hints); this module applies them to the runtime's workers: one discovery
of the machine, the worker CPUs chosen from the cpuset, and a ``WorkerPlacer``
that turns the placer's CPU into a worker (the least loaded one on that CPU)
or, where discovery is not possible, pins and round-robin.
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

from ..config import Config
from ..errors import ConfigError, PlacementError
from ..topology.cpulist import format_cpulist
from .directory import Directory

log = logging.getLogger("actorq.supervisor")

# Measured in the supervisor (bench/mesh.py): per node its inbox and slab
# memfds and their mmap dups, doorbell and space eventfds, and a worker's pidfd.
_FDS_PER_NODE = 8
_FDS_BASE = 64  # the loop, ZeroMQ, signals, logs, the interpreter's own


def discover_machine() -> Any:
    """The machine as topology discovery sees it, or None (pinning still works)."""
    try:
        from ..topology import discover

        return discover()
    except Exception as exc:
        log.debug("topology discovery failed (%s); using the affinity mask", exc)
        return None


def worker_cpus(cfg: Config, machine: Any) -> list[tuple[int, int | None]]:
    """(cpu, numa node) for each worker, in worker order: one per physical core
    in the cpuset unless ``cpus``/``workers`` say otherwise."""
    allowed = sorted(os.sched_getaffinity(0))
    if cfg.cpus is not None:
        bad = sorted(set(cfg.cpus) - set(allowed))
        if bad:
            raise ConfigError(
                f"cpus: {bad} are not usable by this process (allowed: "
                f"{format_cpulist(allowed)}); check the cpuset/affinity or pick from the "
                "allowed list"
            )
        cpus = list(cfg.cpus)
    elif machine is not None:
        # the lowest allowed thread of each core
        usable = set(allowed)
        cpus = sorted({min(c.cpus & usable) for c in machine.cores if c.cpus & usable}) or allowed
    else:
        cpus = allowed
    n = cfg.workers or len(cpus)
    if n > len(cpus):
        log.warning(
            "%d workers on %d CPU%s (%s): workers share CPUs round robin, so they "
            "compete for time; fine for tests and I/O-bound work, slower for CPU-bound work",
            n,
            len(cpus),
            "" if len(cpus) == 1 else "s",
            format_cpulist(cpus),
        )
    chosen = [cpus[i % len(cpus)] for i in range(n)]

    def node_of(cpu: int) -> int | None:
        if machine is None or cpu not in machine.cpus:
            return None
        node: int | None = machine.cpus[cpu].node
        return node

    return [(c, node_of(c)) for c in chosen]


def check_fd_limit(nodes: int) -> None:
    """The mesh costs a few fds per node in the supervisor (``RingMesh``: O(N);
    the socketpair fallback, when forced, one per ordered pair). Lift the soft
    limit to the hard one; if that is still not enough, say so before anything
    starts (rather than fail half-way)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.debug("could not raise RLIMIT_NOFILE: %s", exc)
    if soft == resource.RLIM_INFINITY:
        return

    def need(n: int) -> int:
        pairs = n * (n - 1) if os.environ.get("ACTORQ_MESH") == "socket" else 0
        return _FDS_PER_NODE * n + pairs + _FDS_BASE

    if need(nodes) > soft:
        most = 1
        while need(most + 3) <= soft:  # workers + supervisor + main
            most += 1
        raise ConfigError(
            f"a runtime of {nodes} processes (supervisor, workers, main) needs about "
            f"{need(nodes)} file descriptors, but "
            f"RLIMIT_NOFILE allows {soft}; raise the limit (ulimit -n / LimitNOFILE=) "
            f"or run at most {most} workers (--workers)"
        )


class WorkerPlacer:
    """``Placer.place`` over the workers' CPUs (see the module docstring)."""

    def __init__(self, cpus: list[int], machine: Any, directory: Directory) -> None:
        self.cpus = cpus  # worker i+1 runs on cpus[i]
        self.directory = directory
        self.placer: Any = None  # None: pins and round-robin only
        self._rr = 0
        if machine is None:
            return
        try:
            from ..placement import Placer
            from ..topology import build_universe

            self.placer = Placer(build_universe(machine), machine, cpus=sorted(set(cpus)))
        except Exception as exc:
            log.info("placement falls back to round-robin: %s: %s", type(exc).__name__, exc)

    def place(self, key: str, hints: dict[str, Any]) -> tuple[int, str]:
        """The worker (1-based) for a new actor, and why."""
        cpu = hints.get("cpu")
        if cpu is not None and cpu not in self.cpus:
            raise ValueError(
                f"cpu={cpu}: no worker runs on CPU {cpu} "
                f"(workers: {format_cpulist(self.cpus)}); use rt.workers to pick one"
            )
        if self.placer is not None:
            from ..placement import Hints

            try:
                p = self.placer.place(
                    key, Hints(**{k: v for k, v in hints.items() if v is not None})
                )
            except (PlacementError, TypeError) as exc:
                raise ValueError(f"cannot place {key}: {exc}") from None
            on_cpu = self._workers_on(p.cpu)
            if on_cpu:
                return self._least_loaded(on_cpu), p.reason
            log.warning("placer chose CPU %d, which has no worker; using round-robin", p.cpu)
        if cpu is not None:
            return self._least_loaded(self._workers_on(cpu)), f"pinned by cpu={cpu}"
        worker = self._rr % len(self.cpus) + 1
        self._rr += 1
        return worker, "round-robin (no placer)"

    def release(self, key: str) -> None:
        if self.placer is not None:
            try:
                self.placer.release(key)
            except Exception as exc:
                log.debug("placer.release(%s): %s", key, exc)

    def _workers_on(self, cpu: int) -> list[int]:
        return [i + 1 for i, c in enumerate(self.cpus) if c == cpu]

    def _least_loaded(self, workers: list[int]) -> int:
        counts = self.directory.count_on(set(workers))
        return min(workers, key=lambda w: (counts[w], w))
