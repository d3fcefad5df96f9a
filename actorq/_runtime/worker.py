"""The body of a worker process after fork.

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

import ctypes
import logging
import os
import signal
import sys
from typing import Any

from .. import _actor
from . import logs
from .node import Node

log = logging.getLogger("actorq.worker")


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
        from ..shm.segment import numa_nodes

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
        logs.setup_after_fork(log_level, f"w{index}")
        # The supervisor blocks these to read them from a signalfd; a worker lets
        # SIGTERM kill it (the supervisor restarts it) and ignores SIGINT, which a
        # terminal sends to the whole process group: the supervisor decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        pin(cpu, node)
        mesh.close_others(index)
        _serve(index, cpu, incarnation, mesh, address, worker_cpus, parent, recreate, gone)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.critical("worker %d crashed", index, exc_info=True)
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

    from ..loop import Loop
    from ..loop.sources import ZmqSource
    from .control import Endpoint

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
    _actor.ctx.node = node
    state = {"stopping": False}

    def on_stopped(actor_id: int) -> None:
        endpoint.notify("stopped", {"id": actor_id})

    node.on_stopped = on_stopped

    def h_create(_peer: Any, body: dict) -> Any:
        return node.host.create(
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
    zsrc = ZmqSource(sock, endpoint.on_message)
    loop.add_source(zsrc)

    for spec in recreate:
        try:
            node.host.create(
                spec["id"], spec["cls"], spec["args"], spec.get("kwargs"), spec.get("name")
            )
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
