"""A node of the runtime: its loop, its actors, its ends of the mesh.

Every process of a runtime is a ``Node``: the supervisor is node 0 (it hosts
no actors but runs ``main`` and proxies outside clients), workers are nodes
1..N, each pinned to one CPU. An actor id is ``(node << 32) | serial``, so the
node that hosts an actor is read off its id with a shift: no directory lookup
on the message path.

Message handling in a node
--------------------------
``ask`` packs the call, remembers the request (id -> future, target) and
sends the record (to itself through ``call_soon`` when the target lives on
the same node: the mesh is skipped but the arguments are still copied, so an
actor's behaviour never depends on where placement put it). Records for
actors go to their ``Cell`` in the ``Host`` (see host.py).

Request ids start at ``incarnation << 40``: when a worker is restarted its
successor never reuses an id whose stale reply may still sit in a channel.
"""

from __future__ import annotations

import inspect
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any

from .. import _codec
from .._actor import ActorRef
from .._codec import ASK, F_DIED, F_NOT_FOUND, F_OVERLOADED, F_REMOTE, FAIL, REPLY, STOP, TELL
from ..errors import ActorDied, ActorNotFound, Overloaded, PayloadTooLarge, RemoteError
from . import logs
from .host import Cell, Host

log = logging.getLogger("actorq.worker")

_NODE_SHIFT = 32
_pack_call = _codec.pack_call
_pack = _codec._pack
_UNSENDABLE = _codec._UNSENDABLE
_unpack = _codec.unpack
_STOP_METHOD = "\0stop"  # no Python method can have this name


def node_of(actor_id: int) -> int:
    return actor_id >> _NODE_SHIFT


class Node:
    """Messaging and actor hosting for one process (see the module docstring)."""

    def __init__(
        self,
        index: int,
        loop: Any,
        port: Any,
        *,
        worker_cpus: list[int],
        address: str,
        incarnation: int = 0,
        control: Any = None,
    ) -> None:
        self.index = index
        self.loop = loop
        self.port = port
        self.worker_cpus = worker_cpus
        self.address = address
        self.control = control  # a control.Endpoint in workers; None in the supervisor
        self.control_local: Callable[[str, Any], Any] | None = None  # supervisor: direct calls
        self.host = Host(self)
        self.actors = self.host.cells  # the hot path looks cells up here
        self.gone = self.host.gone
        self.pending: dict[int, tuple[Any, int]] = {}
        self._req = incarnation << 40
        self.sent = 0
        self.received = 0
        self.dead_letters = 0
        self.overloaded = 0
        self._flush_handle: Any = None
        self.on_stopped: Callable[[int], None] | None = None
        self.shutdown_hook: Callable[[], None] | None = None
        port.start(loop, self.deliver)

    # --- sending ----------------------------------------------------------------
    def _send(self, dest: int, data: bytes, urgent: bool = False) -> None:
        """Queue a record for ``dest``. Records are published once per loop turn
        (batching), at the end of an inbox drain (replies), or at once when
        ``urgent`` (an ask: someone is waiting)."""
        self.sent += 1
        if dest == self.index:
            self.loop.call_soon(self.deliver, dest, data)
            return
        port = self.port
        port.send(dest, data)
        if urgent:
            port.publish(dest)
        elif self._flush_handle is None and not port.draining:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self.port.flush()

    def ask(self, ref: ActorRef, method: str, args: tuple, kwargs: dict) -> Any:
        self._req += 1
        req = self._req
        data = _pack_call(
            [ASK, req, ref.id, method, args, kwargs or None], ref, method, args, kwargs
        )
        fut = self.loop.create_future()
        self._send(node_of(ref.id), data, True)  # may raise PayloadTooLarge: nothing to undo
        self.pending[req] = (fut, ref.id)
        return fut

    def tell(self, ref: ActorRef, method: str, args: tuple, kwargs: dict) -> None:
        rid = ref.id
        try:
            data = _pack([TELL, rid, method, args, kwargs or None])
        except _UNSENDABLE:
            raise _codec.explain_unsendable(
                f"{ref!r}.{method}.tell", args, kwargs, ref.method_fn(method)
            ) from None
        dest = rid >> _NODE_SHIFT
        self.sent += 1
        if dest == self.index:
            self.loop.call_soon(self.deliver, dest, data)
            return
        port = self.port
        port.send(dest, data)
        if self._flush_handle is None and not port.draining:
            self._flush_handle = self.loop.call_soon(self._flush)

    def stop_actor(self, ref: ActorRef) -> Any:
        self._req += 1
        req = self._req
        fut = self.loop.create_future()
        self.pending[req] = (fut, ref.id)
        self._send(node_of(ref.id), _codec.pack([STOP, req, ref.id]))
        return fut

    def reply(
        self, dest: int, req: int, value: Any, cell: Cell | None = None, method: str = ""
    ) -> None:
        try:
            data = _pack([REPLY, req, value])
        except (TypeError, OverflowError, ValueError):
            data = _codec.pack_reply(req, value, self._where(cell, method))
        try:
            self._send(dest, data)
        except PayloadTooLarge as exc:
            where = self._where(cell, method)
            self.fail(dest, req, F_REMOTE, "PayloadTooLarge", f"{where} returned: {exc}")

    @staticmethod
    def _where(cell: Cell | None, method: str) -> str:
        return f"{cell.spec.cls.__qualname__}.{method}" if cell is not None else "the actor"

    def fail(
        self, dest: int, req: int, code: int, type_name: str, message: str, tb: str = ""
    ) -> None:
        if req:
            self._send(dest, _codec.pack([FAIL, req, code, type_name, message, tb]))

    def method_raised(
        self, cell: Cell, kind: int, sender: int, req: int, method: str, exc: BaseException
    ) -> None:
        tb = "".join(traceback.format_exception(exc))
        if kind == ASK:
            self.fail(sender, req, F_REMOTE, type(exc).__qualname__, str(exc), tb)
        else:
            log.error("%r.%s (tell) raised; the actor keeps running:\n%s", cell.ref, method, tb)

    def dead_letter(self, target: int, method: str) -> None:
        self.dead_letters += 1
        n = self.dead_letters
        if n > 10 and n % 1000:
            return  # the first ten, then every thousandth: a counter, not a flood
        log.warning(
            "dead letter: tell %s to actor #%d (worker %d), which does not exist (%d so far)",
            method,
            target & 0xFFFFFFFF,
            node_of(target),
            self.dead_letters,
        )

    def overflowed(self, cell: Cell, item: tuple) -> None:
        kind, sender, req, method, _, _ = item
        self.overloaded += 1
        if kind == ASK:
            self.fail(
                sender,
                req,
                F_OVERLOADED,
                "Overloaded",
                f"{cell.ref!r}: mailbox full ({cell.mailbox} messages); retry later",
            )
        else:
            self.dead_letter(cell.ref.id, method)

    # --- receiving ------------------------------------------------------------------
    def deliver(self, sender: int, data: bytes) -> None:
        self.received += 1
        try:
            msg = _unpack(data)
            kind = msg[0]
        except Exception as exc:  # a record we cannot read must not stop the worker
            log.error("node %d: unreadable record from node %d: %s", self.index, sender, exc)
            return
        if kind == REPLY:
            entry = self.pending.pop(msg[1], None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(msg[2])
            return
        if kind == FAIL:
            entry = self.pending.pop(msg[1], None)
            if entry is not None and not entry[0].done():
                entry[0].set_exception(_failure(msg, entry[1]))
            return
        if kind == ASK:
            _, req, target, method, args, kwargs = msg
            item = (ASK, sender, req, method, args, kwargs)
        elif kind == TELL:
            _, target, method, args, kwargs = msg
            item = (TELL, sender, 0, method, args, kwargs)
        elif kind == STOP:
            _, req, target = msg
            item = (STOP, sender, req, _STOP_METHOD, (), None)
        else:
            log.error(
                "node %d: dropped a record of unknown kind %r from node %d",
                self.index,
                kind,
                sender,
            )
            return
        cell = self.actors.get(target)
        if cell is None:
            self.no_such_actor(sender, item, target)
        elif cell.busy or cell.queue:
            cell.post(item)
        else:
            cell.run(item)

    def no_such_actor(self, sender: int, item: tuple, target: int) -> None:
        kind, _, req, method, _, _ = item
        died = target in self.gone
        if kind == TELL:
            self.dead_letter(target, method)
            return
        if kind == STOP and died:
            self.reply(sender, req, None)
            return
        if died:
            self.fail(
                sender,
                req,
                F_DIED,
                "ActorDied",
                f"actor #{target & 0xFFFFFFFF} on worker {node_of(target)} died or was stopped",
            )
        else:
            self.fail(
                sender,
                req,
                F_NOT_FOUND,
                "ActorNotFound",
                f"no actor #{target & 0xFFFFFFFF} on worker {node_of(target)}",
            )

    def peer_died(self, node: int, gone: list[int] | tuple[int, ...] = ()) -> int:
        """Node ``node`` died: fail every ask waiting on one of its actors."""
        failed = 0
        for req, (fut, target) in list(self.pending.items()):
            if node_of(target) == node:
                del self.pending[req]
                if not fut.done():
                    fut.set_exception(
                        ActorDied(
                            f"actor #{target & 0xFFFFFFFF}: worker {node} died before it answered"
                        )
                    )
                    failed += 1
        return failed

    # --- control ------------------------------------------------------------------------
    def control_request(self, op: str, body: Any) -> Any:
        """Ask the supervisor (spawn, lookup, stats); a Future of its answer."""
        if self.control is not None:
            return self.control.request(op, body)
        assert self.control_local is not None
        fut = self.loop.create_future()
        try:
            result = self.control_local(op, body)
        except Exception as exc:
            fut.set_exception(exc)
            return fut
        if hasattr(result, "add_done_callback"):
            return result
        if inspect.iscoroutine(result):
            return self.loop.spawn(result)
        fut.set_result(result)
        return fut

    def request_shutdown(self) -> None:
        if self.control is not None:
            self.control.notify("shutdown", {})
        elif self.shutdown_hook is not None:
            self.shutdown_hook()

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.index,
            "pid": os.getpid(),
            "actors": self.host.rows(),
            "sent": self.sent,
            "received": self.received,
            "dead_letters": self.dead_letters,
            "overloaded": self.overloaded,
            "pending_asks": len(self.pending),
            "backlog": self.port.backlog(),
            "loop": self.loop.statistics(),
            "log_dropped": logs.dropped(),
        }


def _failure(msg: list, target: int) -> BaseException:
    _, _, code, type_name, message, tb = msg
    if code == F_DIED:
        return ActorDied(message)
    if code == F_NOT_FOUND:
        return ActorNotFound(message)
    if code == F_OVERLOADED:
        return Overloaded(message)
    return RemoteError(type_name, message, tb)
