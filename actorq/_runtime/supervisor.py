"""The supervisor: forks the runtime's processes, watches them, stops them.

One supervisor per runtime, in the process (or thread) that called
``actorq.run``, ``actorq.start`` or ``actorq run``. It runs runtime code only:
the user's ``main(rt)`` runs in a process of its own (worker.py), actors run
in workers. So whatever user code does (block in ``time.sleep``, spin, call C
for minutes, ``os._exit``), the supervisor's loop keeps handling signals,
restarts and control requests within milliseconds.

Its roles, each in its own module: ``directory`` (where actors live),
``placing`` (which worker gets a new actor), ``service`` (the answers on the
control plane), ``procs`` (one child slot), ``board`` (what a stalled or dead
worker can still tell). This module is the lifecycle.

Signals
-------
When it runs in the main thread, SIGINT and SIGTERM are blocked and read from
a signalfd on its loop, so a signal is an ordinary event handled between two
callbacks. Children are watched through pidfds, never SIGCHLD, so a runtime
in a thread reaps only its own children (and leaves the host program's
signals to the host: stop it with ``handle.stop()``).

- first SIGINT/SIGTERM: orderly. Arm the stop deadline first; cancel ``main``;
  once it has ended (or at half the deadline, if it is blocked) tell each
  worker to shut down (every actor's ``on_stop`` runs); at ``stop_timeout``
  SIGKILL whatever is left; reap; remove the runtime directory. Whatever is
  blocked where, the process exits within ``stop_timeout`` plus a small bound.
- a second one: immediate. SIGKILL every child, reap, clean up, exit 130
  (SIGINT) or 143 (SIGTERM).
- SIGKILL of the supervisor: each child gets SIGKILL from the kernel
  (PR_SET_PDEATHSIG) and also notices within a second that its parent changed.
  Memory is memfd-backed or anonymous, so nothing outlives the processes.

Failures
--------
A worker that dies is restarted on its CPU at once. Its board says which actor
and method were running (the culprit) and how many messages it held:

- asks waiting on its actors fail with ``ActorDied`` (here, in the main
  process and in every other worker);
- the message that was running is not redelivered (records leave the rings
  before they run: at most once) and is recorded as a dead letter naming the
  actor and method; every other message lost in the crash (queued in its
  mailboxes, taken but not yet routed) is counted in dead letters, per actor,
  and logged once for the crash;
- ``restart="always"`` actors are re-created from ``__init__``; a culprit
  that crashed its worker more than ``restart_intensity`` times within
  ``restart_period`` seconds is not: it is stopped and its refs get
  ``ActorDied``, and the rest of the application keeps running.

A worker whose loop does not answer a heartbeat for ``stall_timeout`` is
reported with the actor and method holding it and, with
``stall_action = "restart"`` (the default), killed and handled like a crash.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Config, load_config
from ..errors import ActorDied, ShutdownTimeout
from ..topology.cpulist import format_cpulist
from . import logs
from .board import Board, Snapshot
from .directory import Directory
from .placing import WorkerPlacer, check_fd_limit, discover_machine, worker_cpus
from .procs import Proc, describe_exit
from .worker import ChildSpec, child_main

log = logging.getLogger("actorq.supervisor")

_TERMINATE = (signal.SIGINT, signal.SIGTERM)
_START_TIMEOUT = 30.0  # seconds for every worker to say hello
_GIVE_UP_AFTER_DEADLINE = 2.0  # reaping SIGKILLed children takes milliseconds; this is a bound
_FAST_CRASHES = 5  # a worker that dies this often in a row within 1 s of starting, with no
# culprit actor, cannot run at all here: stop the runtime and say so


class Supervisor:
    """One runtime: its processes, mesh, control socket and directory."""

    def __init__(
        self,
        cfg: Config,
        main: Callable[[Any], Awaitable[Any]] | None = None,
        *,
        handle_signals: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.main = main
        if handle_signals is None:
            handle_signals = threading.current_thread() is threading.main_thread()
        self.handle_signals = handle_signals
        self.directory = Directory()
        self.workers: list[Proc] = []
        self.main_proc: Proc | None = None
        self.worker_cpus: list[int] = []
        self.address = ""
        self.stopping = False
        self.immediate = False
        self.exit_signal = 0
        self.restarts = 0
        self.failure: str | None = None
        self.outcome: tuple[Any, ...] | None = None  # ("value"|"error"|"cancelled", x[, tb])
        self.lost = 0  # messages lost in crashes
        self.carried_dead_letters = 0  # dead letters counted by workers that died since
        self.dead_letter_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.ready_event = threading.Event()  # set when every worker is up (or start failed)
        self.up = False  # every worker said hello once
        self.workers_told = False  # the stop reached the workers
        self.runtime_dir: Any = None
        self.created_dir = False
        self.name = ""  # in the per-user registry (rundir.py)
        self.metrics_endpoint: Any = None  # prometheus.Endpoint with --metrics
        self.loop: Any = None
        self._result_buf = bytearray()
        self._result_fd = -1
        self._old_mask: Any = None

    # --- start ---------------------------------------------------------------------------
    def start(self) -> None:
        """Make the mesh, fork every child, and start the loop (not yet running)."""
        from . import metrics
        from .control import Trust, control_address, new_secret
        from .mesh import make_mesh
        from .rundir import make_runtime_dir, name_of

        cfg = self.cfg
        metrics.settings.enabled = cfg.metrics  # the children inherit it
        machine = discover_machine()
        placements = worker_cpus(cfg, machine)
        self.worker_cpus = [cpu for cpu, _ in placements]
        self.trust = Trust(new_secret())  # before any fork: the children inherit it
        self.runtime_dir, self.created_dir = make_runtime_dir(
            cfg.runtime_dir, cfg.name, _app_name(self.main)
        )
        self.name = name_of(self.runtime_dir)
        self.address = control_address(self.runtime_dir)
        nodes = len(placements) + 1 + (1 if self.main is not None else 0)
        check_fd_limit(nodes)
        numa = [None] + [node for _, node in placements] + [None]
        self.mesh = make_mesh(nodes, cfg.ring_capacity, numa[:nodes])
        self.workers = [
            Proc("worker", i + 1, self.trust.identity(f"w{i + 1}"), Board(), cpu, node)
            for i, (cpu, node) in enumerate(placements)
        ]
        self.placer = WorkerPlacer(self.worker_cpus, machine, self.directory)
        if self.handle_signals:
            self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _TERMINATE)
        for proc in self.workers:
            self._fork(proc)
        if self.main is not None:
            self.main_proc = Proc(
                "main", len(self.workers) + 1, self.trust.identity("main"), Board()
            )
            self._fork(self.main_proc)
        self._start_loop()
        self._start_metrics_endpoint()

    def _start_metrics_endpoint(self) -> None:
        """Serve Prometheus metrics if asked, and say in runtime.json where
        (actorq ps). After the first forks, so those children do not inherit
        the listener (a worker restarted later holds a copy of its fd, never
        accepting on it, until it exits)."""
        from .rundir import write_info

        if self.cfg.metrics_address:
            from .prometheus import Endpoint

            try:
                self.metrics_endpoint = Endpoint(self, self.cfg.metrics_address)
            except OSError as exc:
                from ..errors import ConfigError

                raise ConfigError(
                    f"metrics_address {self.cfg.metrics_address}: cannot listen there ({exc})"
                ) from None
        write_info(
            self.runtime_dir,
            {
                "name": self.name,
                "workers": len(self.workers),
                "cpus": self.worker_cpus,
                "app": _app_name(self.main),
                "metrics": self.metrics_endpoint.address if self.metrics_endpoint else None,
            },
        )

    def abort_start(self) -> None:
        """``start`` failed part-way: kill what was forked and release what was made."""
        self._cleanup()

    def procs(self) -> list[Proc]:
        return self.workers + ([self.main_proc] if self.main_proc is not None else [])

    def _fork(
        self,
        proc: Proc,
        recreate: list[dict[str, Any]] | None = None,
        gone: list[int] | None = None,
    ) -> None:
        result_w = -1
        if proc.role == "main":
            self._result_fd, result_w = os.pipe()
            os.set_blocking(self._result_fd, False)
        spec = ChildSpec(
            role=proc.role,
            index=proc.index,
            incarnation=proc.incarnation,
            mesh=self.mesh,
            address=self.address,
            identity=proc.identity,
            worker_cpus=self.worker_cpus,
            parent=os.getpid(),
            log_level=logging.getLogger("actorq").getEffectiveLevel(),
            board=proc.board,
            ask_timeout=self.cfg.ask_timeout,
            admission=self.cfg.admission(),
            cpu=proc.cpu,
            numa_node=proc.numa_node,
            recreate=recreate or [],
            gone=gone or [],
            result_fd=result_w,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: never returns
            if self._result_fd >= 0:
                os.close(self._result_fd)
            child_main(spec, self.main if proc.role == "main" else None)
        if result_w >= 0:
            os.close(result_w)
        proc.started_now(pid)
        if self.loop is not None:
            self._watch(proc)
        log.info(
            "%s: pid %d (incarnation %d, node %s)",
            proc.label,
            pid,
            proc.incarnation,
            proc.numa_node,
        )

    def _start_loop(self) -> None:
        import zmq

        from ..loop import Loop
        from ..loop.sources import Signals, ZmqSource
        from .control import Endpoint
        from .node import Node
        from .service import ControlService

        self.loop = loop = Loop()
        self.ctx = zmq.Context()
        self.sock = sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.address)
        os.chmod(self.runtime_dir / "control", 0o600)
        self.service = ControlService(self)
        self.endpoint = Endpoint(sock, loop, self.service.handlers(), router=True, trust=self.trust)
        self.zsrc = ZmqSource(sock, self.endpoint.on_message)
        loop.add_source(self.zsrc)
        self.port = self.mesh.port(0)
        self.node = Node(
            0,
            loop,
            self.port,
            worker_cpus=self.worker_cpus,
            address=self.address,
            ask_timeout=self.cfg.ask_timeout,
        )
        self.signals: Any = None
        if self.handle_signals:
            self.signals = Signals(_TERMINATE, self._on_signal, reap=False)
            loop.add_source(self.signals)
        for proc in self.procs():
            self._watch(proc)
        if self._result_fd >= 0:
            loop.add_reader(self._result_fd, self._read_result)
        self.ready = loop.create_future()
        loop.call_later(_START_TIMEOUT, self._start_deadline)
        self.heartbeat_s = min(2.0, self.cfg.stall_timeout / 4)
        loop.call_later(self.heartbeat_s, self._heartbeat)

    def _watch(self, proc: Proc) -> None:
        self.loop.add_reader(proc.pidfd, self._on_exit, proc, proc.pidfd)

    def _start_deadline(self) -> None:
        if self.ready.done() or self.stopping:
            return
        missing = [p.index for p in self.workers if not p.hello]
        self.failure = f"workers {missing} did not start within {_START_TIMEOUT:.0f} s"
        log.error("%s", self.failure)
        self.ready.set_exception(RuntimeError(self.failure))
        self.begin_shutdown("start failed")

    def became_ready(self) -> None:
        """Every worker said hello: main may start, the embedding caller may go on."""
        if not self.ready.done():
            self.up = True
            self.ready.set_result(None)
            from .rundir import announce

            announce(
                len(self.workers),
                format_cpulist(self.worker_cpus),
                self.runtime_dir,
                self.name,
                self.metrics_endpoint.address if self.metrics_endpoint else None,
            )
        self.ready_event.set()

    # --- running -------------------------------------------------------------------------
    def run(self) -> Any:
        """Serve until every child has exited; return main's value (or raise its error)."""
        try:
            self.loop.run_forever()
        finally:
            self._cleanup()
            self.ready_event.set()
        return self.result()

    def result(self) -> Any:
        if self.immediate:
            raise SystemExit(128 + (self.exit_signal or signal.SIGINT))
        if self.failure is not None:
            raise RuntimeError(self.failure)
        if self.main is None:
            return None
        if self.outcome is None:
            if self.main_proc is not None and self.main_proc.kill_reason:
                raise ShutdownTimeout(
                    f"main did not finish within stop_timeout ({self.cfg.stop_timeout:g} s) "
                    "after the stop began, and was killed"
                )
            raise RuntimeError("the main process died before main returned (see the log)")
        kind, value = self.outcome[:2]
        if kind == "error":
            if len(self.outcome) > 2 and self.outcome[2]:
                value.add_note(f"raised in the main process:\n{self.outcome[2]}")
            raise value
        return value if kind == "value" else None

    def request_stop(self) -> None:
        """Begin an orderly stop from any thread (what SIGTERM does)."""
        try:
            self.loop.call_soon_threadsafe(self.begin_shutdown, "stop requested")
        except RuntimeError:  # the loop is closed: the runtime has ended already
            pass

    # --- children ------------------------------------------------------------------------
    def _on_exit(self, proc: Proc, pidfd: int) -> None:
        if pidfd != proc.pidfd:
            return  # an event for an earlier incarnation's pidfd
        code = proc.reap()
        if code is None:
            return
        self.loop.remove_reader(pidfd)
        proc.close_pidfd()
        proc.exited = True
        how = describe_exit(code)
        for fut in list(proc.inflight):
            if not fut.done():
                fut.set_exception(ActorDied(f"{proc.label} exited ({how})"))
        proc.inflight.clear()
        if proc.role == "main":
            self._main_exited(proc, how)
        else:
            self._worker_exited(proc, how)
        self._maybe_done()

    def _read_result(self) -> None:
        while True:
            try:
                chunk = os.read(self._result_fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                self.loop.remove_reader(self._result_fd)
                return
            self._result_buf += chunk

    def _main_exited(self, proc: Proc, how: str) -> None:
        if self._result_fd >= 0:
            try:
                self._read_result()
            except OSError:
                pass
        if self._result_buf:
            try:
                self.outcome = pickle.loads(bytes(self._result_buf))
            except Exception as exc:
                log.error("main's outcome could not be read: %s", exc)
        if self.outcome is None and not self.stopping:
            log.error("the main process died (%s) before main returned", how)
        elif self.outcome is None:
            log.info("main process exited (%s)", how)
        kind = self.outcome[0] if self.outcome is not None else "died"
        self.begin_shutdown({"value": "main returned", "error": "main raised"}.get(kind, kind))
        self._stop_workers()  # main is gone: nothing waits on the workers any more

    def _worker_exited(self, proc: Proc, how: str) -> None:
        snap = proc.board.read()
        if self.stopping:
            log.info("%s exited: %s", proc.label, how)
            self._account_losses(proc, snap, how, quiet=True)
            return
        why = f"{how}; {proc.kill_reason}" if proc.kill_reason else how
        log.warning("%s died: %s; restarting it", proc.label, why)
        self._fail_asks_on(proc)
        culprit = self._account_losses(proc, snap, why)
        recreate: list[dict[str, Any]] = []
        for entry in self.directory.on_worker(proc.index):
            if entry.id == culprit and self._exceeds_intensity(entry):
                self.directory.forget(entry.id)
                self.placer.release(entry.key)
                continue
            if entry.restart == "always" and not entry.creating:
                recreate.append(entry.create_body())
            else:
                self.directory.forget(entry.id)
                self.placer.release(entry.key)
        if self.cfg.restart == "never":
            log.error('%s is not restarted (restart = "never"); stopping', proc.label)
            self.begin_shutdown("worker died")
            return
        fast = time.monotonic() - proc.started < 1.0 and culprit is None
        proc.fast_crashes = proc.fast_crashes + 1 if fast else 0
        if proc.fast_crashes >= _FAST_CRASHES:
            self.failure = (
                f"worker {proc.index} crashed {proc.fast_crashes} times in a row within a "
                "second of starting, with no actor running; giving up (see the log above)"
            )
            log.error("%s", self.failure)
            self.begin_shutdown("crash loop")
            return
        proc.board.reset()
        proc.incarnation += 1
        proc.restarts += 1
        self.restarts += 1
        log.info("worker %d: %d actors to re-create", proc.index, len(recreate))
        self._fork(proc, recreate, self.directory.gone_on(proc.index))

    def _fail_asks_on(self, proc: Proc) -> None:
        """Asks waiting on the dead worker's actors fail here and in every other process."""
        self.node.peer_died(proc.index)
        for other in self.procs():
            if other is not proc and not other.exited and other.hello:
                self.notify(other, "peer_died", {"node": proc.index})

    def _account_losses(
        self, proc: Proc, snap: Snapshot, why: str, quiet: bool = False
    ) -> int | None:
        """Count what the crash lost, per actor; log it once. Returns the culprit's id."""
        self.carried_dead_letters += snap.dead_letters
        culprit = (proc.index << 32) | snap.running_seq if snap.running_seq else None
        lost = snap.lost(proc.index)
        total = sum(lost.values())
        self.lost += total
        parts = []
        for aid, n in sorted(lost.items(), key=lambda kv: -kv[1]):
            entry = self.directory.entries.get(aid) if aid is not None else None
            if entry is not None:
                entry.lost += n
            label = (
                entry.label()
                if entry is not None
                else ("not yet routed" if aid is None else f"#{aid & 0xFFFFFFFF}")
            )
            parts.append(f"{label}: {n}")
        if culprit is not None:
            entry = self.directory.entries.get(culprit)
            who = entry.label() if entry is not None else f"#{culprit & 0xFFFFFFFF}"
            method = snap.running_method or "?"
            self.dead_letter_log.append(
                {
                    "actor": culprit,
                    "label": who,
                    "method": method,
                    "reason": f"{proc.label} died while it ran ({why}); not redelivered",
                    "at": time.time(),
                }
            )
            log.error(
                "%s died while running %s.%s%s: that message is not redelivered",
                proc.label,
                who,
                method,
                " (in an async step)" if snap.running_async else "",
            )
        if total and not quiet:
            log.warning(
                "%s: %d messages lost in the crash (%s); counted in dead letters",
                proc.label,
                total,
                ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else ""),
            )
        return culprit

    def _exceeds_intensity(self, entry: Any) -> bool:
        """Record a crash caused by ``entry``; True when it must not be restarted."""
        now = time.monotonic()
        crashes = entry.crashes
        crashes.append(now)
        while crashes and now - crashes[0] > self.cfg.restart_period:
            crashes.popleft()
        if entry.restart != "always" or len(crashes) <= self.cfg.restart_intensity:
            return False
        log.error(
            "%s crashed its worker %d times within %g s (restart_intensity %d): it is stopped, "
            "and its refs get ActorDied; the rest of the application keeps running",
            entry.label(),
            len(crashes),
            self.cfg.restart_period,
            self.cfg.restart_intensity,
        )
        return True

    # --- heartbeat and stalls ------------------------------------------------------------
    def _heartbeat(self) -> None:
        """Ping every worker; act on one whose loop has not turned for stall_timeout."""
        if self.stopping:
            return
        now = time.monotonic()
        for proc in self.workers:
            if proc.exited or not proc.hello:
                continue
            if proc.ping_sent:
                late = now - proc.ping_sent
                if late > self.cfg.stall_timeout and not proc.stalled:
                    proc.stalled = True
                    self._stalled(proc, late)
                continue
            proc.ping_sent = now
            try:
                fut = self.request(proc, "ping", {})
            except Exception:
                proc.ping_sent = 0.0
                continue
            fut.add_done_callback(lambda f, proc=proc: self._pong(proc, f))
        self.loop.call_later(self.heartbeat_s, self._heartbeat)

    def _pong(self, proc: Proc, fut: Any) -> None:
        proc.ping_sent = 0.0
        if proc.stalled and not fut.cancelled() and fut.exception() is None:
            proc.stalled = False
            log.warning("%s answers again", proc.label)

    def holder(self, proc: Proc) -> str:
        """Which actor and method hold ``proc``'s loop now, as the board says."""
        snap = proc.board.read()
        if not snap.running_seq:
            return "runtime code or a C call outside any actor method"
        aid = (proc.index << 32) | snap.running_seq
        entry = self.directory.entries.get(aid)
        who = entry.label() if entry is not None else f"actor #{snap.running_seq}"
        return f"{who}.{snap.running_method or '?'}"

    def _stalled(self, proc: Proc, late: float) -> None:
        from . import metrics

        metrics.stalled(self, proc.index)
        holder = self.holder(proc)
        act = self.cfg.stall_action == "restart"
        log.error(
            "%s has not turned its loop for %.1f s (stall_timeout %g s): held by %s; %s",
            proc.label,
            late,
            self.cfg.stall_timeout,
            holder,
            "killing and restarting it" if act else 'reporting only (stall_action = "report")',
        )
        if act:
            proc.kill(f"stalled {late:.1f} s in {holder}")

    # --- control-plane plumbing -----------------------------------------------------------
    def notify(self, proc: Proc, op: str, body: Any) -> None:
        import zmq

        try:
            self.endpoint.notify(op, body, peer=proc.identity)
        except zmq.ZMQError as exc:
            log.debug("notice %s to %s not delivered: %s", op, proc.label, exc)

    def request(self, proc: Proc, op: str, body: Any) -> Any:
        fut = self.endpoint.request(op, body, peer=proc.identity)
        proc.inflight.add(fut)
        fut.add_done_callback(proc.inflight.discard)
        return fut

    # --- shutdown --------------------------------------------------------------------------
    def begin_shutdown(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        # The deadline first: nothing below may keep the runtime from ending.
        self.loop.call_later(self.cfg.stop_timeout, self._stop_deadline)
        log.info("shutting down (%s)", why)
        # main first, so it does not see its actors stop under it; the workers
        # when main has ended, or at half the deadline if main does not end
        # (it may be blocked), so that their on_stop still runs in time.
        main = self.main_proc
        if main is not None and not main.exited and main.hello:
            try:
                self.notify(main, "cancel", {})
            except Exception as exc:
                main.kill(f"unreachable at the stop ({exc})")
            self.loop.call_later(self.cfg.stop_timeout / 2, self._stop_workers)
        else:
            if main is not None:
                main.kill("not yet started when the stop began")
            self._stop_workers()
        self._maybe_done()

    def _stop_workers(self) -> None:
        """Tell every worker to stop its actors (their on_stop runs) and exit."""
        if self.workers_told:
            return
        self.workers_told = True
        for proc in self.workers:
            if proc.exited:
                continue
            if not proc.hello:
                proc.kill("not yet started when the stop began")
                continue
            try:
                fut = self.request(proc, "shutdown", {})
                fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            except Exception as exc:
                proc.kill(f"unreachable at the stop ({exc})")
        self._maybe_done()

    def _stop_deadline(self) -> None:
        late = [p for p in self.procs() if not p.exited]
        if late:
            log.warning(
                "%s did not stop within stop_timeout (%.1f s); killing them",
                ", ".join(p.label for p in late),
                self.cfg.stop_timeout,
            )
            for proc in late:
                proc.kill("did not stop within stop_timeout")
            self.loop.call_later(_GIVE_UP_AFTER_DEADLINE, self.loop.stop)

    def kill_all(self) -> None:
        self.stopping = self.immediate = True
        for proc in self.procs():
            proc.kill("second signal")
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.stopping and all(p.exited for p in self.procs()):
            self.loop.stop()

    def _on_signal(self, info: Any) -> None:
        name = signal.Signals(info.signo).name
        self.exit_signal = info.signo
        if self.stopping:
            log.warning("second %s: stopping now", name)
            self.kill_all()
        else:
            log.warning("%s: orderly shutdown (send it again to stop at once)", name)
            self.begin_shutdown(name)

    def _cleanup(self) -> None:
        """Kill and reap what is left (the loop stopped for another reason), then
        release everything made."""
        for proc in self.procs():
            if not proc.exited:
                proc.kill()
                proc.reap(block=True)
                proc.exited = True
            proc.close_pidfd()
        self._close_all()

    def _close_all(self) -> None:
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
            self.metrics_endpoint = None
        for name in ("zsrc", "signals", "port"):
            src = getattr(self, name, None)
            if src is not None:
                src.close()
        if getattr(self, "sock", None) is not None:
            self.sock.close(linger=0)
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
        if self.loop is not None:
            self.loop.close()
        if getattr(self, "mesh", None) is not None:
            self.mesh.close()
        if self._result_fd >= 0:
            os.close(self._result_fd)
            self._result_fd = -1
        for proc in self.procs():
            proc.board.close()
        if self._old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
            self._old_mask = None
        if self.runtime_dir is not None:
            from .rundir import release_runtime_dir

            release_runtime_dir(self.runtime_dir, self.created_dir)

    # --- stats ------------------------------------------------------------------------------
    def dead_letters(self, workers: list[dict[str, Any]]) -> int:
        live: int = sum(w.get("dead_letters", 0) for w in workers)  # stats rows: msgpack's Any
        return live + self.node.dead_letters + self.carried_dead_letters + self.lost


def _app_name(main: Any) -> str | None:
    """What names the app by default: main's module (the script for __main__)."""
    module = getattr(main, "__module__", None) if main is not None else None
    if module == "__main__":  # python -m pkg.app (its spec), or python app.py (the file)
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            return str(spec.name).removesuffix(".__main__")
        return os.path.splitext(os.path.basename(sys.argv[0] or "main"))[0] or None
    return module


def make_config(
    workers: int | None, cpus: Any, config: str | None, cwd: str, options: dict[str, Any]
) -> Config:
    cfg = load_config(config, cwd=cwd).merged(workers=workers, cpus=cpus, **options)
    logs.setup(cfg.log_level, process_name="sup")
    if cfg.explain:
        logging.getLogger("actorq.placement").setLevel(logging.INFO)
    return cfg


def run_main(
    main: Callable[[Any], Awaitable[Any]],
    *,
    workers: int | None = None,
    cpus: Any = None,
    config: str | None = None,
    cwd: str = ".",
    **options: Any,
) -> Any:
    """``actorq.run``: build the config, start the runtime, run ``main``, stop
    (``main`` is checked by the caller: ``actorq.run`` or ``actorq run``)."""
    sup = Supervisor(make_config(workers, cpus, config, cwd, options), main)
    try:
        sup.start()
    except BaseException:
        sup.abort_start()
        raise
    return sup.run()
