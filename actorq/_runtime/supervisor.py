"""The supervisor: starts pinned workers, places actors, restarts the fallen.

One supervisor per runtime; it is the process that called ``actorq.run`` (or
``actorq run``). It is node 0 of the mesh: it runs the user's ``main(rt)``
on its own loop and answers the control plane (spawn, lookup, stats, outside
clients), but hosts no actors.

Signals, and why they are blocked before the first fork
---------------------------------------------------------
SIGINT, SIGTERM and SIGCHLD are blocked in the supervisor and read from a
signalfd on its loop, so a signal is an ordinary event handled between two
callbacks, never an exception thrown into the middle of one. They are blocked
*before* forking: the blocked mask is inherited across fork, so a worker
cannot be killed by a Ctrl-C in the instant before it sets its own handling
(it then ignores SIGINT and unblocks the rest; see worker.worker_main).

- first SIGINT/SIGTERM: orderly. Cancel ``main`` if it still runs, tell each
  worker to shut down (it runs every actor's ``on_stop`` and exits 0), wait up
  to ``stop_timeout``, SIGKILL what is left, reap everything, remove the
  runtime directory. Exit 0.
- a second one: immediate. SIGKILL every worker, reap, clean up, exit 130
  (SIGINT) or 143 (SIGTERM).
- SIGKILL of the supervisor itself: each worker gets SIGKILL from the kernel
  (PR_SET_PDEATHSIG) and also notices within a second that its parent changed.
  Memory is memfd-backed, so nothing outlives the processes.

Crash recovery
--------------
SIGCHLD -> ``waitpid`` loop. A worker that died while the runtime was not
stopping is logged, every ask waiting on one of its actors fails with
``ActorDied`` (here and, by a ``peer_died`` notice, in every other worker),
and a new worker is forked on the same CPU, inheriting the same channels.
Actors declared ``restart="always"`` are re-created in it from their original
``__init__`` arguments, under the same id and name; the others are gone (an
ask to them raises ``ActorDied``, a tell is counted as a dead letter).

Delivery across a crash is at-most-once from the asker's point of view, not
exactly-once: records that were waiting in the dead worker's inbound rings
are read by its successor. A reply to an ask that already failed with
``ActorDied`` is dropped (request ids carry the incarnation), but a
``restart="always"`` actor may still run a message whose asker was told it
died. Make such methods idempotent, or do not restart those actors.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import _actor, _api
from .._actor import ActorRef
from ..config import Config, load_config
from ..errors import ActorDied, ActorNotFound, ConfigError
from . import logs

log = logging.getLogger("actorq.supervisor")
plog = logging.getLogger("actorq.placement")

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


def _worker_cpus(cfg: Config) -> list[tuple[int, int | None]]:
    """(cpu, numa node) for each worker, in worker order."""
    allowed = sorted(os.sched_getaffinity(0))
    machine = None
    try:
        from ..topology import discover

        machine = discover()
    except Exception as exc:  # discovery is best effort here: pinning still works
        log.debug("topology discovery failed (%s); using the affinity mask", exc)
    if cfg.cpus is not None:
        bad = sorted(set(cfg.cpus) - set(allowed))
        if bad:
            raise ConfigError(
                f"cpus: {bad} are not usable by this process (allowed: {_cpulist(allowed)}); "
                "check the cpuset/affinity or pick from the allowed list"
            )
        cpus = list(cfg.cpus)
    elif machine is not None:
        # one per physical core in the cpuset: the lowest allowed thread of each core
        cpus = sorted({min(c.cpus & set(allowed)) for c in machine.cores if c.cpus & set(allowed)})
        cpus = cpus or allowed
    else:
        cpus = allowed
    n = cfg.workers or len(cpus)
    chosen = [cpus[i % len(cpus)] for i in range(n)]

    def node_of(cpu: int) -> int | None:
        if machine is None or cpu not in machine.cpus:
            return None
        return machine.cpus[cpu].node

    return [(c, node_of(c)) for c in chosen]


_FDS_PER_RING = 9  # measured: ring memfd, doorbell, space eventfd, slab, inbox share


def _check_fd_limit(nodes: int) -> None:
    """Every channel is made up front: about 9 fds per ordered pair of nodes in
    the supervisor. Lift the soft limit to the hard one; if that is still not
    enough, say so before anything starts (rather than fail half-way)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.debug("could not raise RLIMIT_NOFILE: %s", exc)
    if soft == resource.RLIM_INFINITY:
        return
    need = _FDS_PER_RING * nodes * (nodes - 1) + 64
    if need > soft:
        most = 1
        while _FDS_PER_RING * (most + 2) * (most + 1) + 64 <= soft:
            most += 1
        raise ConfigError(
            f"{nodes - 1} workers need about {need} file descriptors for their rings (one per "
            f"pair of workers, made up front), but RLIMIT_NOFILE allows {soft}; raise the "
            f"limit (ulimit -n / LimitNOFILE=) or run at most {most} workers (--workers)"
        )


def auto_ring_capacity(nodes: int) -> int:
    """Every ordered pair of nodes gets a ring up front, so ring memory grows
    with nodes²: 256 KiB each up to ~16 nodes, then smaller (down to 16 KiB)
    to keep the total near 64 MiB. Larger messages go through the ring's slab,
    which is only touched when used."""
    per = (64 << 20) // max(1, nodes * (nodes - 1))
    cap = 1 << max(14, min(18, per.bit_length() - 1))
    return cap


def _cpulist(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


class _WorkerSlot:
    __slots__ = (
        "cpu",
        "exited",
        "fast_crashes",
        "hello",
        "incarnation",
        "index",
        "inflight",
        "node",
        "pid",
        "ping_sent",
        "restarts",
        "stalled",
        "started",
    )

    def __init__(self, index: int, cpu: int, node: int | None) -> None:
        self.index, self.cpu, self.node = index, cpu, node
        self.pid = 0
        self.incarnation = 0
        self.hello = False
        self.exited = False
        self.started = 0.0
        self.restarts = 0
        self.fast_crashes = 0
        self.ping_sent = 0.0  # when the unanswered heartbeat was sent (0: none pending)
        self.stalled = False
        self.inflight: set[Any] = set()


class Supervisor:
    """One runtime: workers, mesh, control socket, registry (see the module docstring)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.slots: list[_WorkerSlot] = []
        self.actors: dict[int, dict[str, Any]] = {}
        self.names: dict[str, int] = {}
        self.dead: set[int] = set()
        self.seq = 0
        self.rr = 0
        self.stopping = False
        self.immediate = False
        self.exit_signal = 0
        self.restarts = 0
        self.main_task: Any = None
        self.placer: Any = None
        self.placer_error: str | None = None
        self.runtime_dir: Path | None = None
        self.created_dir = False
        self.failure: str | None = None

    # --- start -----------------------------------------------------------------
    def start(self) -> None:
        from .control import control_address, make_runtime_dir
        from .mesh import make_mesh

        cfg = self.cfg
        placements = _worker_cpus(cfg)
        self.slots = [_WorkerSlot(i + 1, cpu, node) for i, (cpu, node) in enumerate(placements)]
        self.worker_cpus = [s.cpu for s in self.slots]
        self.runtime_dir, self.created_dir = make_runtime_dir(cfg.runtime_dir)
        self.address = control_address(self.runtime_dir)
        nodes = len(self.slots) + 1
        _check_fd_limit(nodes)
        capacity = cfg.ring_capacity or auto_ring_capacity(nodes)
        self.mesh = make_mesh(nodes, capacity, [None] + [s.node for s in self.slots])
        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for slot in self.slots:
            self._fork(slot, [], [])
        self._start_loop()

    def abort_start(self) -> None:
        """``start`` failed part-way: kill what was forked and release what was made."""
        for slot in self.slots:
            if slot.pid and not slot.exited:
                self._kill(slot)
                try:
                    os.waitpid(slot.pid, 0)
                except ChildProcessError:
                    pass
                slot.exited = True
        for name in ("zsrc", "signals"):
            src = getattr(self, name, None)
            if src is not None:
                src.close()
        if getattr(self, "sock", None) is not None:
            self.sock.close(linger=0)
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
        if getattr(self, "loop", None) is not None:
            self.loop.close()
        if getattr(self, "mesh", None) is not None:
            self.mesh.close()
        if getattr(self, "old_mask", None) is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
        if self.runtime_dir is not None and self.created_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _fork(self, slot: _WorkerSlot, recreate: list[dict[str, Any]], gone: list[int]) -> None:
        from .worker import worker_main

        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child: never returns
            worker_main(
                slot.index,
                slot.cpu,
                slot.node,
                slot.incarnation,
                self.mesh,
                self.address,
                self.worker_cpus,
                parent,
                recreate,
                gone,
                logging.getLogger("actorq").getEffectiveLevel(),
            )
        slot.pid, slot.hello, slot.exited, slot.started = pid, False, False, time.monotonic()
        slot.ping_sent, slot.stalled = 0.0, False
        log.info(
            "worker %d: pid %d on CPU %d (node %s, incarnation %d)",
            slot.index,
            pid,
            slot.cpu,
            slot.node,
            slot.incarnation,
        )

    def _start_loop(self) -> None:
        import zmq

        from ..loop import Loop
        from ..loop.sources import Signals, ZmqSource
        from .control import Endpoint
        from .node import Node

        self.loop = loop = Loop()
        self.ctx = zmq.Context()
        self.sock = sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.address)
        os.chmod(self.runtime_dir / "control", 0o600)  # type: ignore[operator]
        handlers = {
            "hello": self.h_hello,
            "spawn": self.h_spawn,
            "lookup": self.h_lookup,
            "stats": self.h_stats,
            "stopped": self.h_stopped,
            "shutdown": self.h_shutdown,
            "ask": self.h_ask,
            "tell": self.h_tell,
            "stop": self.h_stop,
            "ping": self.h_ping,
            "workers": self.h_workers,
        }
        self.endpoint = Endpoint(sock, loop, handlers, router=True)
        self.zsrc = ZmqSource(sock, self.endpoint.on_message)
        loop.add_source(self.zsrc)
        self.port = self.mesh.port(0)
        self.node = Node(0, loop, self.port, worker_cpus=self.worker_cpus, address=self.address)
        self.node.control_local = self._local_control
        self.node.shutdown_hook = lambda: self.begin_shutdown("rt.shutdown()")
        self.signals = Signals(_SIGNALS, self._on_signal, reap=True)
        loop.add_source(self.signals)
        self.ready = loop.create_future()
        self.heartbeat_s = min(2.0, self.cfg.stall_timeout / 4)
        loop.call_later(self.heartbeat_s, self._heartbeat)

    def _heartbeat(self) -> None:
        """Ping every worker; say so when one stops answering (its loop is blocked)."""
        if self.stopping:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.exited or not slot.hello:
                continue
            if slot.ping_sent:
                late = now - slot.ping_sent
                if late > self.cfg.stall_timeout and not slot.stalled:
                    slot.stalled = True
                    log.warning(
                        "worker %d (pid %d, CPU %d) has not answered a heartbeat for "
                        "%.0f s: something holds its loop (a long sync method?)",
                        slot.index,
                        slot.pid,
                        slot.cpu,
                        late,
                    )
                continue
            slot.ping_sent = now
            try:
                fut = self._request(slot, "ping", {})
            except Exception:
                slot.ping_sent = 0.0
                continue
            fut.add_done_callback(lambda f, slot=slot: self._pong(slot, f))
        self.loop.call_later(self.heartbeat_s, self._heartbeat)

    def _pong(self, slot: _WorkerSlot, fut: Any) -> None:
        slot.ping_sent = 0.0
        if slot.stalled and not fut.cancelled() and fut.exception() is None:
            slot.stalled = False
            log.warning("worker %d answers again", slot.index)

    # --- main ----------------------------------------------------------------------
    def run(self, main: Callable[[_api.Runtime], Awaitable[Any]]) -> Any:
        loop = self.loop
        rt = _api.Runtime(self.node)
        _actor.ctx.node, _actor.ctx.runtime = self.node, rt
        result: dict[str, Any] = {}

        async def body() -> Any:
            await self._wait_ready()
            log.info(
                "runtime up: %d workers on CPUs %s; control %s",
                len(self.slots),
                _cpulist(self.worker_cpus),
                self.address,
            )
            return await main(rt)

        def main_done(task: Any) -> None:
            if task.cancelled():
                result["cancelled"] = True
            elif task.exception() is not None:
                result["error"] = task.exception()
            else:
                result["value"] = task.result()
            self.begin_shutdown("main returned" if "error" not in result else "main raised")

        self.main_task = loop.spawn(body())
        self.main_task.add_done_callback(main_done)
        try:
            loop.run_forever()
        finally:
            self._cleanup()
            _actor.ctx.node = _actor.ctx.runtime = None
        if self.immediate:
            raise SystemExit(128 + (self.exit_signal or signal.SIGINT))
        if self.failure is not None:
            raise RuntimeError(self.failure)
        if "error" in result:
            raise result["error"]
        return result.get("value")

    async def _wait_ready(self) -> None:
        if all(s.hello for s in self.slots):
            return
        from ..loop import wait_for

        try:
            await wait_for(self.ready, 30.0)
        except TimeoutError:
            missing = [s.index for s in self.slots if not s.hello]
            raise RuntimeError(f"workers {missing} did not start within 30 s") from None

    # --- signals and children ---------------------------------------------------------
    def _on_signal(self, info: Any) -> None:
        signo = info.signo
        if signo == signal.SIGCHLD:  # the source reaped it: pid and exit code (<0: signal)
            for slot in self.slots:
                if slot.pid == info.pid and not slot.exited:
                    self._worker_exited(slot, info.status)
                    break
            self._maybe_done()
        elif self.stopping:
            log.warning("second %s: stopping now", signal.Signals(signo).name)
            self.exit_signal = signo
            self.kill_all()
        else:
            log.warning(
                "%s: orderly shutdown (send it again to stop at once)", signal.Signals(signo).name
            )
            self.exit_signal = signo
            self.begin_shutdown(signal.Signals(signo).name)

    def _worker_exited(self, slot: _WorkerSlot, status: int) -> None:
        slot.exited = True
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit code {status}"
        for fut in slot.inflight:
            if not fut.done():
                fut.set_exception(
                    ActorDied(f"worker {slot.index} died ({how}) while creating an actor")
                )
        slot.inflight.clear()
        if self.stopping:
            log.info("worker %d (pid %d) exited: %s", slot.index, slot.pid, how)
            return
        log.warning(
            "worker %d (pid %d, CPU %d) died: %s; restarting it",
            slot.index,
            slot.pid,
            slot.cpu,
            how,
        )
        failed = self.node.peer_died(slot.index)
        for other in self.slots:
            if other is not slot and not other.exited and other.hello:
                self._notify(other, "peer_died", {"node": slot.index})
        recreate: list[dict[str, Any]] = []
        for aid, entry in list(self.actors.items()):
            if entry["worker"] != slot.index:
                continue
            if entry["restart"] == "always" and not entry.get("creating"):
                recreate.append(entry)
            else:
                self._forget(aid)
                self.dead.add(aid)
        gone = [a for a in self.dead if a >> 32 == slot.index]
        log.info(
            "worker %d: %d asks failed here, %d actors to re-create",
            slot.index,
            failed,
            len(recreate),
        )
        if self.cfg.restart == "never":
            log.error('worker %d is not restarted (restart = "never"); stopping', slot.index)
            self.begin_shutdown("worker died")
            return
        slot.fast_crashes = slot.fast_crashes + 1 if time.monotonic() - slot.started < 1.0 else 0
        if slot.fast_crashes >= 5:
            self.failure = (
                f"worker {slot.index} crashed {slot.fast_crashes} times in a row within "
                "a second of starting; giving up (see the log above for why)"
            )
            log.error("%s", self.failure)
            self.begin_shutdown("crash loop")
            return
        slot.incarnation += 1
        slot.restarts += 1
        self.restarts += 1
        self._fork(slot, recreate, gone)

    def _notify(self, slot: _WorkerSlot, op: str, body: Any) -> None:
        import zmq

        try:
            self.endpoint.notify(op, body, peer=b"w%d" % slot.index)
        except zmq.ZMQError as exc:
            log.debug("notice %s to worker %d not delivered: %s", op, slot.index, exc)

    def _request(self, slot: _WorkerSlot, op: str, body: Any) -> Any:
        fut = self.endpoint.request(op, body, peer=b"w%d" % slot.index)
        slot.inflight.add(fut)
        fut.add_done_callback(slot.inflight.discard)
        return fut

    # --- shutdown -------------------------------------------------------------------------
    def begin_shutdown(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down (%s)", why)
        if self.main_task is not None and not self.main_task.done():
            self.main_task.cancel()
        for slot in self.slots:
            if slot.exited:
                continue
            if slot.hello:
                fut = self._request(slot, "shutdown", {})
                fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            else:
                self._kill(slot)
        self.loop.call_later(self.cfg.stop_timeout, self._stop_timeout)
        self._maybe_done()

    def _stop_timeout(self) -> None:
        late = [s for s in self.slots if not s.exited]
        if late:
            log.warning(
                "workers %s did not stop within %.1f s; killing them",
                [s.index for s in late],
                self.cfg.stop_timeout,
            )
            for slot in late:
                self._kill(slot)

    def _kill(self, slot: _WorkerSlot) -> None:
        try:
            os.kill(slot.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_all(self) -> None:
        self.stopping = self.immediate = True
        if self.main_task is not None and not self.main_task.done():
            self.main_task.cancel()
        for slot in self.slots:
            if not slot.exited:
                self._kill(slot)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.stopping and all(s.exited for s in self.slots):
            self.loop.stop()

    def _cleanup(self) -> None:
        # Reap anything left (a loop that stopped for another reason).
        for slot in self.slots:
            if not slot.exited:
                self._kill(slot)
                try:
                    os.waitpid(slot.pid, 0)
                except ChildProcessError:
                    pass
                slot.exited = True
        self.zsrc.close()
        self.signals.close()
        self.port.close()
        self.mesh.close()
        self.sock.close(linger=0)
        self.ctx.term()
        self.loop.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
        if self.runtime_dir is not None:
            if self.created_dir:
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
            else:
                try:
                    (self.runtime_dir / "control").unlink()
                except FileNotFoundError:
                    pass

    # --- placement ------------------------------------------------------------------------
    def _get_placer(self) -> Any:
        if self.placer is None and self.placer_error is None:
            try:
                from ..placement import Placer
                from ..topology import build_universe, discover

                machine = discover()
                universe = build_universe(machine)
                self.placer = Placer(universe, machine, cpus=sorted(set(self.worker_cpus)))
            except Exception as exc:
                self.placer_error = f"{type(exc).__name__}: {exc}"
                log.info("placement falls back to round-robin: %s", self.placer_error)
        return self.placer

    def place(self, key: str, hints: dict[str, Any]) -> tuple[int, str]:
        """The worker for a new actor, and why (``Placer.place`` over the worker CPUs
        when placement is available, else ``cpu=`` pins and round-robin)."""
        cpu = hints.get("cpu")
        if cpu is not None and cpu not in self.worker_cpus:
            raise ValueError(
                f"cpu={cpu}: no worker runs on CPU {cpu} "
                f"(workers: {_cpulist(self.worker_cpus)}); use rt.workers to pick one"
            )
        placer = self._get_placer()
        if placer is not None:
            from ..errors import PlacementError
            from ..placement import Hints

            try:
                p = placer.place(key, Hints(**{k: v for k, v in hints.items() if v is not None}))
            except (PlacementError, TypeError) as exc:
                raise ValueError(f"cannot place {key}: {exc}") from None
            slots = [s for s in self.slots if s.cpu == p.cpu]
            if slots:
                return self._least_loaded(slots).index, p.reason
            log.warning("placer chose CPU %d, which has no worker; using round-robin", p.cpu)
        if cpu is not None:
            slots = [s for s in self.slots if s.cpu == cpu]
            return self._least_loaded(slots).index, f"pinned by cpu={cpu}"
        slot = self.slots[self.rr % len(self.slots)]
        self.rr += 1
        return slot.index, "round-robin (no placer)"

    def _least_loaded(self, slots: list[_WorkerSlot]) -> _WorkerSlot:
        counts = {s.index: 0 for s in slots}
        for entry in self.actors.values():
            if entry["worker"] in counts:
                counts[entry["worker"]] += 1
        return min(slots, key=lambda s: (counts[s.index], s.index))

    def _forget(self, aid: int) -> None:
        entry = self.actors.pop(aid, None)
        if entry is None:
            return
        if entry["name"] is not None and self.names.get(entry["name"]) == aid:
            del self.names[entry["name"]]
        if self.placer is not None:
            try:
                self.placer.release(entry["key"])
            except Exception:
                pass

    # --- control handlers -----------------------------------------------------------------
    def _local_control(self, op: str, body: Any) -> Any:
        handler = {"spawn": self.h_spawn, "lookup": self.h_lookup, "stats": self.h_stats}[op]
        return handler(None, body)

    def h_hello(self, peer: bytes | None, body: dict) -> None:
        slot = self.slots[body["node"] - 1]
        if body.get("incarnation") != slot.incarnation:
            return None
        slot.hello = True
        if slot.restarts:
            log.warning(
                "worker %d is back (pid %d, %.3f s after its start)",
                slot.index,
                body["pid"],
                time.monotonic() - slot.started,
            )
        if all(s.hello for s in self.slots) and not self.ready.done():
            self.ready.set_result(None)
        if self.stopping:
            self._request(slot, "shutdown", {})
        return None

    async def h_spawn(self, peer: bytes | None, body: dict) -> dict[str, Any]:
        if self.stopping:
            raise RuntimeError("the runtime is shutting down; no new actors")
        name = body.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"spawn: name must be a string, not {type(name).__name__}")
            if name in self.names:
                raise ValueError(
                    f"an actor named {name!r} already exists; stop it or pick another name"
                )
        cls = body["cls"]
        hints = dict(body.get("hints") or {})
        self.seq += 1
        key = name or f"{cls.rpartition(':')[2]}#{self.seq}"
        worker, reason = self.place(key, hints)
        slot = self.slots[worker - 1]
        aid = (worker << 32) | self.seq
        entry = {
            "id": aid,
            "cls": cls,
            "args": body.get("args") or [],
            "kwargs": body.get("kwargs") or {},
            "name": name,
            "restart": body.get("restart", "never"),
            "worker": worker,
            "cpu": slot.cpu,
            "reason": reason,
            "key": key,
        }
        if name is not None:
            self.names[name] = aid  # reserved now, so a concurrent spawn of the same name fails
        plog.info("place %s on worker %d (CPU %d): %s", key, worker, slot.cpu, reason)
        self.actors[aid] = entry
        try:
            if not slot.hello:
                raise ActorDied(f"worker {worker} is restarting; try again")
            entry["creating"] = True
            await self._request(slot, "create", entry)
        except BaseException:
            self._forget(aid)
            raise
        finally:
            entry.pop("creating", None)
        return {"id": aid, "worker": worker, "cpu": slot.cpu, "reason": reason}

    def h_lookup(self, peer: bytes | None, body: dict) -> dict[str, Any]:
        name = body.get("name")
        aid = self.names.get(name) if isinstance(name, str) else None
        if aid is None or aid not in self.actors:
            raise ActorNotFound(f"no actor is registered under the name {name!r}")
        entry = self.actors[aid]
        return {"id": aid, "cls": entry["cls"], "worker": entry["worker"], "cpu": entry["cpu"]}

    def h_stopped(self, peer: bytes | None, body: dict) -> None:
        self._forget(body["id"])
        self.dead.add(body["id"])

    async def h_stats(self, peer: bytes | None, body: Any) -> dict[str, Any]:
        workers = []
        for slot in self.slots:
            info: dict[str, Any] = {
                "stalled": slot.stalled,
                "worker": slot.index,
                "cpu": slot.cpu,
                "node": slot.node,
                "pid": slot.pid,
                "restarts": slot.restarts,
            }
            if slot.hello and not slot.exited:
                try:
                    info.update(await self._request(slot, "stats", {}))
                except Exception as exc:
                    info["error"] = str(exc)
            workers.append(info)
        actors = [
            {
                "id": e["id"],
                "name": e["name"],
                "cls": e["cls"],
                "worker": e["worker"],
                "cpu": e["cpu"],
                "reason": e["reason"],
                "restart": e["restart"],
            }
            for e in self.actors.values()
        ]
        return {
            "address": self.address,
            "mesh": self.mesh.kind,
            "workers": workers,
            "actors": actors,
            "dead_letters": sum(w.get("dead_letters", 0) for w in workers) + self.node.dead_letters,
            "restarts": self.restarts,
            "control_malformed": self.endpoint.malformed,
            "supervisor": {
                "pid": os.getpid(),
                "sent": self.node.sent,
                "received": self.node.received,
                "pending_asks": len(self.node.pending),
                "log_dropped": logs.dropped(),
            },
        }

    def h_shutdown(self, peer: bytes | None, body: Any) -> None:
        self.loop.call_soon(self.begin_shutdown, "shutdown requested")

    def h_ping(self, peer: bytes | None, body: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "workers": len(self.slots)}

    def h_workers(self, peer: bytes | None, body: Any) -> list[int]:
        return list(self.worker_cpus)

    def _client_ref(self, body: dict) -> ActorRef:
        aid = body.get("id")
        entry = self.actors.get(aid) if isinstance(aid, int) else None
        if entry is None:
            if aid in self.dead:
                raise ActorDied(f"actor #{aid & 0xFFFFFFFF} died or was stopped")
            raise ActorNotFound(f"no actor with id {aid!r}")
        return ActorRef(aid, entry["cls"], entry["name"])

    def h_ask(self, peer: bytes | None, body: dict) -> Any:
        if self.stopping:
            raise RuntimeError("the runtime is shutting down")
        ref = self._client_ref(body)
        return self.node.ask(
            ref, body["method"], tuple(body.get("args") or ()), body.get("kwargs") or {}
        )

    def h_tell(self, peer: bytes | None, body: dict) -> None:
        ref = self._client_ref(body)
        self.node.tell(ref, body["method"], tuple(body.get("args") or ()), body.get("kwargs") or {})

    def h_stop(self, peer: bytes | None, body: dict) -> Any:
        return self.node.stop_actor(self._client_ref(body))


def run_main(
    main: Callable[[_api.Runtime], Awaitable[Any]],
    *,
    workers: int | None = None,
    cpus: Any = None,
    config: str | None = None,
    cwd: str = ".",
    **options: Any,
) -> Any:
    """``actorq.run``: build the config, start the runtime, run ``main``, stop."""
    why = _api.check_main(main)
    if why is not None:
        raise TypeError(why)
    cfg = load_config(config, cwd=cwd).merged(workers=workers, cpus=cpus, **options)
    logs.setup(cfg.log_level, process_name="sup")
    if cfg.explain:
        logging.getLogger("actorq.placement").setLevel(logging.INFO)
    sup = Supervisor(cfg)
    try:
        sup.start()
    except BaseException:
        sup.abort_start()
        raise
    return sup.run(main)
