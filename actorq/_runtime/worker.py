"""The bodies of the runtime's child processes after fork: workers and main.

Both run in a child right after fork: they ask the kernel to SIGKILL them when
the supervisor dies (PR_SET_PDEATHSIG) and also check the parent once a second
(the death signal is tied to the forking *thread*, and is not delivered if the
parent died between fork and prctl), make a fresh Loop and ZeroMQ context
(never touching the parent's: libzmq is not fork-safe), say hello to the
supervisor and serve. They leave with ``os._exit`` so nothing the parent
registered (atexit handlers, buffered files, finalizers of objects it
inherited) runs twice.

- A **worker** pins itself, prefers its NUMA node's memory, hosts actors and
  serves until told to shut down.
- The **main process** runs the user's ``main(rt)``: user code never runs in
  the supervisor, so a ``main`` that blocks (``time.sleep``, a CPU loop, a C
  call) cannot delay restarts, control requests or signals. It is a node of
  the mesh (its asks go straight over the rings), hosts no actors, waits for
  the workers to be up, and hands main's outcome to the supervisor through a
  pipe (pickled: it is our own child, and the value is ``actorq.run``'s
  return value, not an actor message).
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _actor
from . import logs
from .admission import Admission
from .board import Board
from .node import Node

log = logging.getLogger("actorq.worker")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


@dataclass
class ChildSpec:
    """Everything a child process needs from the supervisor, inherited by fork."""

    role: str  # "worker" or "main"
    index: int  # node index in the mesh
    incarnation: int
    mesh: Any
    address: str
    identity: bytes  # its control-plane identity
    worker_cpus: list[int]
    parent: int
    log_level: int
    board: Board
    ask_timeout: float | None = None
    admission: Admission = field(default_factory=Admission)
    cpu: int | None = None  # workers only
    numa_node: int | None = None
    recreate: list[dict[str, Any]] = field(default_factory=list)  # actors to re-create
    gone: list[int] = field(default_factory=list)  # ids of actors that died here before
    result_fd: int = -1  # main only: where main's outcome goes

    @property
    def name(self) -> str:
        return f"actorq-w{self.index}" if self.role == "worker" else "actorq-main"


def die_with_parent(parent: int, name: str) -> None:
    """Ask for SIGKILL when the supervisor dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)  # what ps/top show
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
        from ..shm.segment import numa_nodes

        if node not in numa_nodes():
            return
        import numa  # py-libnuma

        if numa.info.numa_available():
            numa.schedule.set_preferred_node(node)
    except Exception as exc:  # libnuma missing or unusable: memory stays unbound
        log.debug("no NUMA preference for node %s: %s", node, exc)


def child_main(spec: ChildSpec, main: Callable[[Any], Awaitable[Any]] | None = None) -> None:
    """The body of a child after fork; never returns."""
    code = 0
    try:
        die_with_parent(spec.parent, spec.name)
        logs.setup_after_fork(spec.log_level, "main" if spec.role == "main" else f"w{spec.index}")
        # The supervisor blocks SIGINT/SIGTERM to read them from a signalfd; a
        # child lets SIGTERM kill it (the supervisor restarts a worker) and
        # ignores SIGINT, which a terminal sends to the whole process group:
        # the supervisor decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if spec.role == "worker" and spec.cpu is not None:
            pin(spec.cpu, spec.numa_node)
        spec.mesh.close_others(spec.index)
        _serve(spec, main)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.critical("%s crashed", spec.name, exc_info=True)  # not print: stderr may block
        code = 1
    finally:
        logs.shutdown()
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


def _serve(spec: ChildSpec, main: Callable[[Any], Awaitable[Any]] | None) -> None:
    import zmq

    from ..loop import AsyncioLoop, Loop
    from ..loop.sources import ZmqSource
    from .control import Endpoint

    loop = Loop()
    # fork copied the supervisor's thread-local "current loop": actors re-created
    # after a restart run on_start before run_forever, and must find this loop
    # (actorq.current_loop()), not that dead copy (a kv shard's listener was
    # registered there and never accepted).
    from ..loop.core import set_current_loop

    set_current_loop(loop)
    aio = AsyncioLoop(loop)  # asyncio's face: asyncio libraries work in actors (loop/aio.py)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, spec.identity)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(spec.address)
    port = spec.mesh.port(spec.index)
    handlers: dict[str, Any] = {}
    endpoint = Endpoint(sock, loop, handlers, router=False, req_base=spec.incarnation << 40)
    node = Node(
        spec.index,
        loop,
        port,
        worker_cpus=spec.worker_cpus,
        address=spec.address,
        incarnation=spec.incarnation,
        control=endpoint,
        board=spec.board,
        ask_timeout=spec.ask_timeout,
        admission=spec.admission,
    )
    _actor.ctx.node = node
    _actor.ctx.board = node.board
    loop.describe_slow = _slow_work_namer(node)
    loop.before_sleep(node.board_slots.forget_last)
    zsrc = ZmqSource(sock, endpoint.on_message)
    loop.add_source(zsrc)
    if spec.role == "worker":
        _serve_actors(spec, node, endpoint, handlers)
    else:
        assert main is not None
        _run_main(spec, node, endpoint, handlers, main)

    def check_parent() -> None:
        if os.getppid() != spec.parent:
            log.error("%s: supervisor %d is gone; exiting", spec.name, spec.parent)
            os._exit(1)
        loop.call_later(1.0, check_parent)

    loop.call_later(1.0, check_parent)
    endpoint.notify(
        "hello",
        {
            "role": spec.role,
            "node": spec.index,
            "pid": os.getpid(),
            "cpu": spec.cpu,
            "incarnation": spec.incarnation,
        },
    )
    try:
        aio.run_forever()  # the core's run_forever, as asyncio's running loop
    finally:
        zsrc.close()
        port.close()
        sock.close(linger=200)
        ctx.term()


def _slow_work_namer(node: Node) -> Callable[[Any], str | None]:
    """What the loop's slow-callback warning names: the actor method that ran last
    in the slow callback (the board's LAST word), not the ring or task that ran it."""

    def name(_callback: Any) -> str | None:
        last = node.board_slots.take_last()
        if last is None:
            return None
        seq, method = last
        cell = node.actors.get((node.index << 32) | seq)
        if cell is None:
            return f"actor #{seq}'s method {method or '?'}"
        return f"{cell.spec.cls.__qualname__}.{method or '?'} of {cell.ref!r}"

    return name


def _serve_actors(spec: ChildSpec, node: Node, endpoint: Any, handlers: dict[str, Any]) -> None:
    loop = node.loop
    node.gone.update(spec.gone)
    state = {"stopping": False}

    tasks_of = _track_actor_tasks(node.loop)

    def on_stopped(actor_id: int) -> None:
        for task in tasks_of.pop(actor_id, ()):
            task.cancel(f"actor #{actor_id & 0xFFFFFFFF} stopped")
        endpoint.notify("stopped", {"id": actor_id})

    node.on_stopped = on_stopped

    def h_create(_peer: Any, body: dict[str, Any]) -> Any:
        return node.host.create(
            body["id"], body["cls"], body["args"], body.get("kwargs"), body.get("name")
        )

    def h_peer_died(_peer: Any, body: dict[str, Any]) -> Any:
        return node.peer_died(body["node"])

    def h_stats(_peer: Any, _body: Any) -> Any:
        stats = node.stats()
        if node.outside is not None:
            stats["outside"] = node.outside.stats()
        return stats

    def h_ping(_peer: Any, _body: Any) -> Any:
        return {"node": spec.index, "pid": os.getpid(), "cpu": spec.cpu}

    async def h_shutdown_async() -> None:
        state["stopping"] = True
        await node.host.stop_all()
        node.port.flush()
        loop.call_later(0.01, loop.stop)

    def h_shutdown(_peer: Any, _body: Any) -> Any:
        if state["stopping"]:
            return None
        return loop.spawn(h_shutdown_async())

    handlers.update(
        create=h_create, peer_died=h_peer_died, stats=h_stats, ping=h_ping, shutdown=h_shutdown
    )
    from .metrics import start_publisher

    start_publisher(node)  # counters into the board, for stats/top/Prometheus (metrics.py)
    _listen_outside(spec, node)
    for entry in spec.recreate:
        try:
            node.host.create(
                entry["id"], entry["cls"], entry["args"], entry.get("kwargs"), entry.get("name")
            )
        except Exception as exc:
            log.error(
                "worker %d: could not re-create %s #%d: %s",
                spec.index,
                entry["cls"],
                entry["id"] & 0xFFFFFFFF,
                exc,
            )


def _listen_outside(spec: ChildSpec, node: Node) -> None:
    """Serve outside clients' direct channels (outside.py) in this worker's loop."""
    from .outside import Listener

    runtime_dir = os.path.dirname(spec.address.removeprefix("ipc://"))
    try:
        node.outside = Listener(node, runtime_dir, spec.identity)
    except OSError as exc:  # clients fall back to the control plane
        log.warning("worker %d: no direct channels for outside clients: %s", spec.index, exc)


def _track_actor_tasks(loop: Any) -> dict[int, set[Any]]:
    """Remember the asyncio tasks an actor's own code creates (``create_task``,
    a TaskGroup, ``gather`` of coroutines), by actor id, so that stopping the
    actor cancels them; returns that map (tasks leave it when done)."""
    import asyncio

    tasks_of: dict[int, set[Any]] = {}

    def factory(aio: Any, coro: Any, context: Any = None) -> Any:
        task = asyncio.Task(coro, loop=aio, context=context)
        actor = _actor.ctx.actor  # set while an actor's method (or a step of it) runs
        if actor is not None:
            mine = tasks_of.setdefault(actor.id, set())
            mine.add(task)
            task.add_done_callback(mine.discard)
        return task

    loop._facade.set_task_factory(factory)
    return tasks_of


def _run_main(
    spec: ChildSpec,
    node: Node,
    endpoint: Any,
    handlers: dict[str, Any],
    main: Callable[[Any], Awaitable[Any]],
) -> None:
    """Run ``main(rt)`` once the workers are up; report its outcome; exit."""
    from .._api import runtime

    loop = node.loop
    task: Any = None

    async def body() -> Any:
        await endpoint.request("ready", {})  # the supervisor answers once every worker is up
        return await main(runtime())

    def finished(t: Any) -> None:
        if t.cancelled():
            outcome: tuple[Any, ...] = ("cancelled", None)
        elif t.exception() is not None:
            exc = t.exception()
            # pickling drops the traceback: it travels as text beside the exception
            outcome = ("error", exc, "".join(traceback.format_exception(exc)))
        else:
            outcome = ("value", t.result())
        _report(spec.result_fd, outcome)
        node.port.flush()
        loop.call_later(0.01, loop.stop)

    def h_cancel(_peer: Any, _body: Any) -> None:
        if task is not None and not task.done():
            task.cancel()

    def h_ping(_peer: Any, _body: Any) -> Any:
        return {"node": spec.index, "pid": os.getpid(), "role": "main"}

    handlers.update(cancel=h_cancel, ping=h_ping, peer_died=lambda _p, b: node.peer_died(b["node"]))
    task = loop.spawn(body())
    task.add_done_callback(finished)


def _report(fd: int, outcome: tuple[Any, ...]) -> None:
    """Write main's outcome to the supervisor (blocking: the supervisor reads as it comes)."""
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # an unpicklable value or exception: say what it was
        kind, value = outcome[:2]
        what = "returned" if kind == "value" else "raised"
        text = "".join(traceback.format_exception(value)) if kind == "error" else ""
        data = pickle.dumps(
            (
                "error",
                RuntimeError(
                    f"main {what} {type(value).__qualname__} {value!r:.200}, which cannot be "
                    f"handed to the caller ({exc}){chr(10) + text if text else ''}"
                ),
            )
        )
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.close(fd)
