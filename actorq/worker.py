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
actor's behaviour never depends on where placement put it). Each actor has a
``_Cell``: a mailbox (deque) and a busy flag. A sync method runs at once when
the actor is idle; an async one becomes a Task and the actor is busy until it
returns, so one message runs at a time per actor, in arrival order (FIFO per
sender, since each sender's records arrive in order on one channel). An actor
declared ``reentrant=True`` does not hold its mailbox while an async method
awaits.

Request ids start at ``incarnation << 40``: when a worker is restarted its
successor never reuses an id whose stale reply may still sit in a channel.

The worker process
------------------
``worker_main`` runs in the child right after fork: it asks the kernel to
SIGKILL it when the supervisor dies (PR_SET_PDEATHSIG) and also checks the
parent once a second (the death signal is tied to the forking *thread*, and
is not delivered if the parent died between fork and prctl), pins itself,
prefers its NUMA node's memory, makes a fresh Loop and ZeroMQ context (never
touching the parent's: libzmq is not fork-safe), says hello to the supervisor
and serves until told to shut down. It leaves with ``os._exit`` so nothing the
parent registered (atexit handlers, buffered files, finalizers of objects it
inherited) runs twice.
"""

from __future__ import annotations

import collections
import ctypes
import inspect
import logging
import os
import signal
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from . import _api, _codec
from ._api import ActorRef, ActorSpec, BoundCoroutine
from ._codec import ASK, F_DIED, F_NOT_FOUND, F_OVERLOADED, F_REMOTE, FAIL, REPLY, STOP, TELL
from .errors import ActorDied, ActorNotFound, Overloaded, PayloadTooLarge, RemoteError

log = logging.getLogger("actorq.worker")

_NODE_SHIFT = 32
_pack_call = _codec.pack_call
_pack = _codec._pack
_UNSENDABLE = _codec._UNSENDABLE
_unpack = _codec.unpack
_CoroutineType = types.CoroutineType
_ctx = _api._ctx
_STOP_METHOD = "\0stop"  # no Python method can have this name


def node_of(actor_id: int) -> int:
    return actor_id >> _NODE_SHIFT


async def _bound(coro: Any, ref: ActorRef) -> Any:
    return await BoundCoroutine(coro, ref)


class _Cell:
    """One hosted actor: instance, mailbox, and whether a message is running."""

    __slots__ = (
        "busy",
        "fns",
        "instance",
        "mailbox",
        "node",
        "queue",
        "reentrant",
        "ref",
        "spec",
        "stopped",
    )

    def __init__(self, node: Node, ref: ActorRef, spec: ActorSpec, instance: Any) -> None:
        self.node, self.ref, self.spec, self.instance = node, ref, spec, instance
        self.queue: collections.deque[tuple] = collections.deque()
        self.busy = False
        self.stopped = False
        self.mailbox = spec.mailbox
        self.reentrant = spec.reentrant
        self.fns: dict[str, Any] = {}  # method name -> bound method, filled on first use

    def post(self, item: tuple) -> None:
        """item: (kind, sender, req, method, args, kwargs)."""
        if self.busy or self.queue:
            if self.mailbox is not None and len(self.queue) >= self.mailbox and item[0] != STOP:
                self.node.overflowed(self, item)
                return
            self.queue.append(item)
            return
        self.run(item)

    def pump(self) -> None:
        queue = self.queue
        while queue and not self.busy:
            self.run(queue.popleft())

    def run(self, item: tuple) -> None:
        kind, sender, req, method, args, kwargs = item
        node = self.node
        if kind == STOP or self.stopped:
            self._stop_or_refuse(kind, sender, req, method)
            return
        fn = self.fns.get(method)
        if fn is not None:  # the common case, kept short: a known method of a live actor
            prev = _ctx.actor
            _ctx.actor = self.ref
            try:
                result = fn(*args, **kwargs) if kwargs else fn(*args)
            except Exception as exc:
                node.method_raised(self, kind, sender, req, method, exc)
                return
            finally:
                _ctx.actor = prev
            if type(result) is not _CoroutineType:
                if kind == ASK:
                    node.reply(sender, req, result, self, method)
                return
            self._start(result, kind, sender, req, method)
            return
        self._run_slow(item)

    def _stop_or_refuse(self, kind: int, sender: int, req: int, method: str) -> None:
        node = self.node
        if self.stopped:
            node.fail(sender, req, F_DIED, "ActorDied", f"{self.ref!r} was stopped")
            if kind == TELL:
                node.dead_letter(self.ref.id, method)
            return
        self.busy = True
        node.run_stop(self, sender, req)

    def _run_slow(self, item: tuple) -> None:
        """First call of a method: look it up once, then take the fast path."""
        kind, sender, req, method = item[:4]
        fn = getattr(self.instance, method, None) if method in self.spec.methods else None
        if fn is None:
            msg = (
                f"actor {self.spec.cls.__qualname__} has no method {method!r} "
                f"(its methods: {', '.join(sorted(self.spec.methods)) or 'none'})"
            )
            if kind == ASK:
                self.node.fail(sender, req, F_REMOTE, "AttributeError", msg)
            else:
                log.error("tell to %r: %s", self.ref, msg)
            return
        self.fns[method] = fn
        self.run(item)

    def _start(self, coro: Any, kind: int, sender: int, req: int, method: str) -> None:
        task = self.node.loop.spawn(_bound(coro, self.ref))
        if not self.reentrant:
            self.busy = True
        task.add_done_callback(lambda t: self._finished(t, kind, sender, req, method))

    def _finished(self, task: Any, kind: int, sender: int, req: int, method: str) -> None:
        node = self.node
        try:
            result = task.result()
        except Exception as exc:
            node.method_raised(self, kind, sender, req, method, exc)
        except BaseException as exc:  # Cancelled: the actor is going away
            if kind == ASK:
                node.fail(sender, req, F_DIED, "ActorDied", f"{self.ref!r}: {type(exc).__name__}")
        else:
            if kind == ASK:
                node.reply(sender, req, result, self, method)
        if not self.reentrant:
            self.busy = False
            self.pump()


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
        self.actors: dict[int, _Cell] = {}
        self.gone: set[int] = set()
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
        self, dest: int, req: int, value: Any, cell: _Cell | None = None, method: str = ""
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
    def _where(cell: _Cell | None, method: str) -> str:
        return f"{cell.spec.cls.__qualname__}.{method}" if cell is not None else "the actor"

    def fail(
        self, dest: int, req: int, code: int, type_name: str, message: str, tb: str = ""
    ) -> None:
        if req:
            self._send(dest, _codec.pack([FAIL, req, code, type_name, message, tb]))

    def method_raised(
        self, cell: _Cell, kind: int, sender: int, req: int, method: str, exc: BaseException
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

    def overflowed(self, cell: _Cell, item: tuple) -> None:
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
            self._no_such_actor(sender, item, target)
        elif cell.busy or cell.queue:
            cell.post(item)
        else:
            cell.run(item)

    def _no_such_actor(self, sender: int, item: tuple, target: int) -> None:
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

    # --- hosting ------------------------------------------------------------------------
    def create(
        self, actor_id: int, cls_path: str, args: list, kwargs: dict | None, name: str | None
    ) -> Any:
        """Instantiate an actor here; returns None, or an awaitable (async on_start)."""
        spec = _api.find_spec(cls_path)
        ref = ActorRef(actor_id, cls_path, name)
        prev = _api._ctx.actor
        _api._ctx.actor = ref
        try:
            instance = spec.cls(*args, **(kwargs or {}))
            started = getattr(instance, "on_start", None)
            result = started() if callable(started) else None
        except Exception as exc:
            raise RemoteError(
                type(exc).__qualname__,
                f"{spec.cls.__qualname__}(...): {exc}",
                "".join(traceback.format_exception(exc)),
            ) from None
        finally:
            _api._ctx.actor = prev
        cell = _Cell(self, ref, spec, instance)
        self.actors[actor_id] = cell
        self.gone.discard(actor_id)
        if inspect.iscoroutine(result):
            cell.busy = True  # messages wait until on_start is done
            task = self.loop.spawn(_bound(result, ref))

            def started_cb(t: Any) -> None:
                cell.busy = False
                if t.exception() is not None:
                    log.error("%r.on_start raised: %r", ref, t.exception())
                cell.pump()

            task.add_done_callback(started_cb)
        return None

    def run_stop(self, cell: _Cell, sender: int, req: int) -> None:
        def done(_: Any = None) -> None:
            cell.stopped = True
            cell.busy = False
            self.actors.pop(cell.ref.id, None)
            self.gone.add(cell.ref.id)
            if req:
                self.reply(sender, req, None)
            for item in cell.queue:
                self._no_such_actor(item[1], item, cell.ref.id)
            cell.queue.clear()
            if self.on_stopped is not None:
                self.on_stopped(cell.ref.id)

        result = _call_on_stop(cell)
        if inspect.iscoroutine(result):
            self.loop.spawn(_bound(result, cell.ref)).add_done_callback(done)
        else:
            done()

    def stop_all(self) -> Any:
        """Run every actor's on_stop (orderly shutdown); a Future done when all ran."""
        fut = self.loop.create_future()
        cells = list(self.actors.values())
        waiting = [0]

        def one_done(_: Any = None) -> None:
            waiting[0] -= 1
            if waiting[0] == 0 and not fut.done():
                fut.set_result(None)

        for cell in cells:
            self.actors.pop(cell.ref.id, None)
            cell.stopped = True
            result = _call_on_stop(cell)
            if inspect.iscoroutine(result):
                waiting[0] += 1
                self.loop.spawn(_bound(result, cell.ref)).add_done_callback(one_done)
        if waiting[0] == 0:
            fut.set_result(None)
        return fut

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
            "actors": [
                {"id": c.ref.id, "name": c.ref.name, "cls": c.spec.path, "queued": len(c.queue)}
                for c in self.actors.values()
            ],
            "sent": self.sent,
            "received": self.received,
            "dead_letters": self.dead_letters,
            "overloaded": self.overloaded,
            "pending_asks": len(self.pending),
            "backlog": self.port.backlog(),
            "loop": self.loop.statistics(),
        }


def _call_on_stop(cell: _Cell) -> Any:
    hook = getattr(cell.instance, "on_stop", None)
    if not callable(hook):
        return None
    prev = _api._ctx.actor
    _api._ctx.actor = cell.ref
    try:
        return hook()
    except Exception:
        log.exception("%r.on_stop raised", cell.ref)
        return None
    finally:
        _api._ctx.actor = prev


def _failure(msg: list, target: int) -> BaseException:
    _, _, code, type_name, message, tb = msg
    if code == F_DIED:
        return ActorDied(message)
    if code == F_NOT_FOUND:
        return ActorNotFound(message)
    if code == F_OVERLOADED:
        return Overloaded(message)
    return RemoteError(type_name, message, tb)


# --- the worker process ----------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def die_with_parent(parent: int, index: int = 0) -> None:
    """Ask for SIGKILL when the supervisor dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_NAME, b"actorq-w%d" % index, 0, 0, 0)  # what ps/top show
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def pin(cpu: int, node: int | None) -> None:
    """Run only on ``cpu``; prefer memory from ``node`` when libnuma is usable."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        log.warning("worker could not pin itself to CPU %d: %s", cpu, exc)
    if node is None:
        return
    try:
        from .shm.segment import numa_nodes

        if node not in numa_nodes():
            return
        import numa  # py-libnuma

        if numa.info.numa_available():
            numa.schedule.set_preferred_node(node)
    except Exception as exc:  # libnuma missing or unusable: memory stays unbound
        log.debug("no NUMA preference for node %s: %s", node, exc)


def worker_main(
    index: int,
    cpu: int,
    node: int | None,
    incarnation: int,
    mesh: Any,
    address: str,
    worker_cpus: list[int],
    parent: int,
    recreate: list[dict[str, Any]],
    gone: list[int],
    log_level: int,
) -> None:
    """The body of worker ``index`` after fork; never returns."""
    code = 0
    try:
        die_with_parent(parent, index)
        # The supervisor blocks these to read them from a signalfd; a worker lets
        # SIGTERM kill it (the supervisor restarts it) and ignores SIGINT, which a
        # terminal sends to the whole process group: the supervisor decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        pin(cpu, node)
        logging.getLogger("actorq").setLevel(log_level)
        mesh.close_others(index)
        _serve(index, cpu, incarnation, mesh, address, worker_cpus, parent, recreate, gone)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for h in logging.getLogger().handlers + logging.getLogger("actorq").handlers:
            try:
                h.flush()
            except Exception:
                pass
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)


def _serve(
    index: int,
    cpu: int,
    incarnation: int,
    mesh: Any,
    address: str,
    worker_cpus: list[int],
    parent: int,
    recreate: list[dict[str, Any]],
    gone: list[int],
) -> None:
    import zmq

    from .control import Endpoint
    from .loop import Loop
    from .loop.sources import ZmqSource

    loop = Loop()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, b"w%d" % index)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(address)
    port = mesh.port(index)
    handlers: dict[str, Any] = {}
    endpoint = Endpoint(sock, loop, handlers, router=False, req_base=incarnation << 40)
    node = Node(
        index,
        loop,
        port,
        worker_cpus=worker_cpus,
        address=address,
        incarnation=incarnation,
        control=endpoint,
    )
    node.gone.update(gone)
    _api._ctx.node = node
    _api._ctx.runtime = _api.Runtime(node)
    state = {"stopping": False}

    def on_stopped(actor_id: int) -> None:
        endpoint.notify("stopped", {"id": actor_id})

    node.on_stopped = on_stopped

    def h_create(_peer: Any, body: dict) -> Any:
        return node.create(
            body["id"], body["cls"], body["args"], body.get("kwargs"), body.get("name")
        )

    def h_peer_died(_peer: Any, body: dict) -> Any:
        return node.peer_died(body["node"])

    def h_stats(_peer: Any, _body: Any) -> Any:
        return node.stats()

    def h_ping(_peer: Any, _body: Any) -> Any:
        return {"node": index, "pid": os.getpid(), "cpu": cpu}

    async def h_shutdown_async() -> None:
        state["stopping"] = True
        await node.stop_all()
        node.port.flush()
        loop.call_later(0.01, loop.stop)

    def h_shutdown(_peer: Any, _body: Any) -> Any:
        if state["stopping"]:
            return None
        return loop.spawn(h_shutdown_async())

    handlers.update(
        create=h_create, peer_died=h_peer_died, stats=h_stats, ping=h_ping, shutdown=h_shutdown
    )
    zsrc = ZmqSource(sock, endpoint.on_message)
    loop.add_source(zsrc)

    for spec in recreate:
        try:
            node.create(spec["id"], spec["cls"], spec["args"], spec.get("kwargs"), spec.get("name"))
        except Exception as exc:
            log.error(
                "worker %d: could not re-create %s #%d: %s",
                index,
                spec["cls"],
                spec["id"] & 0xFFFFFFFF,
                exc,
            )

    def check_parent() -> None:
        if os.getppid() != parent:
            log.error("worker %d: supervisor %d is gone; exiting", index, parent)
            os._exit(1)
        loop.call_later(1.0, check_parent)

    loop.call_later(1.0, check_parent)
    endpoint.notify(
        "hello", {"node": index, "pid": os.getpid(), "cpu": cpu, "incarnation": incarnation}
    )
    try:
        loop.run_forever()
    finally:
        zsrc.close()
        port.close()
        sock.close(linger=200)
        ctx.term()
