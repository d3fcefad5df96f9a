"""What the supervisor answers on the control plane.

Children (workers, the main process) say hello, report stopped actors and
ask for spawn/lookup/stats on behalf of user code; outside clients look up,
ask, tell and stop actors through the supervisor's own node. Every answer
that needs a worker has a deadline: a stalled worker makes its own part of
an answer fail with a reason naming it, never the whole answer hang.
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import TYPE_CHECKING, Any

from .._actor import ActorRef, check_timeout
from ..errors import ActorDied
from . import logs, metrics
from .directory import ActorEntry

if TYPE_CHECKING:
    from .procs import Proc
    from .supervisor import Supervisor

log = logging.getLogger("actorq.supervisor")
plog = logging.getLogger("actorq.placement")

_READY_TIMEOUT = 30.0


class ControlService:
    """The control handlers of one supervisor (see the module docstring)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def handlers(self) -> dict[str, Any]:
        return {
            "hello": self.hello,
            "ready": self.ready,
            "spawn": self.spawn,
            "lookup": self.lookup,
            "stats": self.stats,
            "stopped": self.stopped,
            "shutdown": self.shutdown,
            "ask": self.ask,
            "tell": self.tell,
            "stop": self.stop,
            "ping": self.ping,
            "workers": self.workers,
        }

    @property
    def answer_timeout(self) -> float:
        """How long a worker may take to answer a control request (a healthy one
        answers in milliseconds; a stalled one is dealt with after stall_timeout)."""
        return min(2.0, self.sup.cfg.stall_timeout / 2)

    # --- children ------------------------------------------------------------------------
    def hello(self, peer: bytes | None, body: dict[str, Any]) -> None:
        sup = self.sup
        if body.get("role") == "main":
            proc = sup.main_proc
            if proc is None or body.get("incarnation") != proc.incarnation:
                return None
            proc.hello = True
            if sup.stopping:
                sup.notify(proc, "cancel", {})
            return None
        index = body.get("node")
        if not isinstance(index, int) or not 1 <= index <= len(sup.workers):
            return None
        proc = sup.workers[index - 1]
        if body.get("incarnation") != proc.incarnation:
            return None
        proc.hello = True
        if proc.restarts:
            log.warning("%s is back (restart %d)", proc.label, proc.restarts)
        if all(w.hello for w in sup.workers):
            sup.became_ready()
        if sup.workers_told:  # a successor that came up during the stop
            sup.request(proc, "shutdown", {})
        return None

    async def ready(self, peer: bytes | None, body: Any) -> list[int]:
        """Answered once every worker is up: the main process starts main then."""
        from ..loop import wait_for

        await wait_for(self.sup.ready, _READY_TIMEOUT)
        return list(self.sup.worker_cpus)

    def stopped(self, peer: bytes | None, body: dict[str, Any]) -> None:
        entry = self.sup.directory.forget(body["id"])
        if entry is not None:
            self.sup.placer.release(entry.key)

    # --- user requests -------------------------------------------------------------------
    async def spawn(self, peer: bytes | None, body: dict[str, Any]) -> dict[str, Any]:
        sup = self.sup
        if sup.stopping:
            raise RuntimeError("the runtime is shutting down; no new actors")
        directory = sup.directory
        name = body.get("name")
        directory.reserve_name(name)
        cls = body["cls"]
        serial = directory.next_serial()
        key = name or f"{cls.rpartition(':')[2]}#{serial}"
        worker, reason = sup.placer.place(key, dict(body.get("hints") or {}))
        proc = sup.workers[worker - 1]
        entry = ActorEntry(
            id=(worker << 32) | serial,
            cls=cls,
            args=body.get("args") or [],
            kwargs=body.get("kwargs") or {},
            name=name,
            restart=body.get("restart", "never"),
            worker=worker,
            cpu=proc.cpu if proc.cpu is not None else -1,
            reason=reason,
            key=key,
            creating=True,
        )
        directory.add(entry)  # the name is taken now, so a concurrent spawn of it fails
        plog.info("place %s on worker %d (CPU %s): %s", key, worker, proc.cpu, reason)
        try:
            if not proc.hello or proc.exited:
                raise ActorDied(f"worker {worker} is restarting; try again")
            # __init__ may take its time (a stalled worker is dealt with at stall_timeout)
            fut = sup.request(proc, "create", entry.create_body())
            await self._within(fut, proc, f"the spawn of {key}", sup.cfg.stall_timeout + 1.0)
        except BaseException:
            directory.forget(entry.id, dead=False)
            sup.placer.release(key)
            raise
        finally:
            entry.creating = False
        return {"id": entry.id, "worker": worker, "cpu": entry.cpu, "reason": reason}

    def lookup(self, peer: bytes | None, body: dict[str, Any]) -> dict[str, Any]:
        entry = self.sup.directory.by_name(body.get("name"))
        return {"id": entry.id, "cls": entry.cls, "worker": entry.worker, "cpu": entry.cpu}

    async def stats(self, peer: bytes | None, body: Any) -> dict[str, Any]:
        """Every worker asked at once; each answers within the deadline or is named."""
        sup = self.sup
        asked: dict[int, Any] = {}
        for proc in sup.workers:
            if proc.hello and not proc.exited:
                try:
                    asked[proc.index] = sup.request(proc, "stats", {})
                except Exception as exc:
                    log.debug("stats request to %s failed: %s", proc.label, exc)
        workers = []
        for proc in sup.workers:
            info: dict[str, Any] = {
                "stalled": proc.stalled,
                "worker": proc.index,
                "cpu": proc.cpu,
                "node": proc.numa_node,
                "pid": proc.pid,
                "restarts": proc.restarts,
            }
            fut = asked.get(proc.index)
            if fut is None:
                info["error"] = "restarting" if not proc.exited else "not running"
            else:
                try:
                    info.update(await self._within(fut, proc, "stats"))
                except Exception as exc:
                    info["error"] = str(exc)
            workers.append(info)
        return {
            "name": sup.name,
            "directory": os.fspath(sup.runtime_dir),
            "address": sup.address,
            "metrics_address": sup.metrics_endpoint.address if sup.metrics_endpoint else None,
            # what each worker last published in its board (metrics.py): read, not asked
            "metrics": metrics.runtime_view(sup),
            "mesh": sup.mesh.kind,
            "workers": workers,
            "actors": [e.row() for e in sup.directory.entries.values()],
            "dead_letters": sup.dead_letters(workers),
            "lost_in_crashes": sup.lost,
            "dead_letter_log": list(sup.dead_letter_log),
            "restarts": sup.restarts,
            "control_malformed": sup.endpoint.malformed,
            "control_refused": sup.endpoint.refused,
            "supervisor": {
                "pid": os.getpid(),
                "sent": sup.node.sent,
                "received": sup.node.received,
                "pending_asks": len(sup.node.pending),
                "log_dropped": logs.dropped(),
            },
            "main": None
            if sup.main_proc is None
            else {"pid": sup.main_proc.pid, "running": not sup.main_proc.exited},
        }

    async def _within(self, fut: Any, proc: Proc, what: str, timeout: float | None = None) -> Any:
        from ..loop import wait_for

        timeout = timeout if timeout is not None else self.answer_timeout
        try:
            return await wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{proc.label} did not answer {what} within {timeout:g} s: its loop is held "
                f"by {self.sup.holder(proc)}"
            ) from None

    def shutdown(self, peer: bytes | None, body: Any) -> None:
        self.sup.loop.call_soon(self.sup.begin_shutdown, "shutdown requested")

    def ping(self, peer: bytes | None, body: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "workers": len(self.sup.workers)}

    def workers(self, peer: bytes | None, body: Any) -> list[int]:
        return list(self.sup.worker_cpus)

    # --- outside clients' actor traffic, through the supervisor's node --------------------
    def _client_ref(self, body: dict[str, Any]) -> ActorRef:
        entry = self.sup.directory.by_id(body.get("id"))
        return ActorRef(entry.id, entry.cls, entry.name)

    def ask(self, peer: bytes | None, body: dict[str, Any]) -> Any:
        if self.sup.stopping:
            raise RuntimeError("the runtime is shutting down")
        ref = self._client_ref(body)
        timeout = body.get("timeout", ...)  # absent: the runtime's ask_timeout
        if timeout is not ...:
            timeout = check_timeout(timeout, f"ask {body['method']}")
        return self.sup.node.ask(
            ref,
            body["method"],
            tuple(body.get("args") or ()),
            body.get("kwargs") or {},
            timeout,
            src=_client_key(peer),
        )

    def tell(self, peer: bytes | None, body: dict[str, Any]) -> None:
        ref = self._client_ref(body)
        self.sup.node.tell(
            ref,
            body["method"],
            tuple(body.get("args") or ()),
            body.get("kwargs") or {},
            src=_client_key(peer),
        )

    def stop(self, peer: bytes | None, body: dict[str, Any]) -> Any:
        return self.sup.node.stop_actor(self._client_ref(body))


def _client_key(peer: bytes | None) -> int:
    """An outside client's sender key for fair queueing at the actor: each
    client connection is a sender of its own, not all of them one."""
    return (zlib.crc32(peer) or 1) if peer else 0
