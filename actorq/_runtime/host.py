"""Hosting actors in a worker: one ``Cell`` per actor, its mailbox and its turn.

Each actor has a ``Cell``: a mailbox (deque) and a busy flag. A sync method
runs at once when the actor is idle; an async one becomes a Task and the
actor is busy until it returns, so one message runs at a time per actor, in
arrival order (FIFO per sender, since each sender's records arrive in order
on one channel). An actor declared ``reentrant=True`` does not hold its
mailbox while an async method awaits.

Deadlocks: a non-reentrant actor inside an async method waits for every ask
that method made. Each such turn is numbered, and asks made from it carry the
chain of (actor, turn) entries waiting on them (see ``_codec``). An ask that
reaches an actor still inside a turn listed in its own chain can never be
served: it fails at once with ``Deadlock`` naming the cycle, instead of every
ask in the cycle waiting out its deadline.

The ``Host`` creates cells (``__init__`` and ``on_start``), stops them
(``on_stop``) one at a time or all at once for an orderly shutdown. Replies
and failures go back through the ``Node`` (routing).
"""

from __future__ import annotations

import inspect
import logging
import traceback
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from .._actor import ActorRef, ActorSpec, BoundCoroutine, ctx, find_spec
from .._codec import ASK, F_DEADLOCK, F_DIED, F_REMOTE, STOP, TELL
from ..errors import RemoteError
from . import metrics
from .board import ASYNC, LAST, RUNNING, running_tag

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("actorq.worker")

_CoroutineType = types.CoroutineType
_ctx = ctx

# A mailbox item: (kind, sender, req, method, args, kwargs, chain, deadline).
# ``args`` is a list when it came through msgpack (a STOP carries ``()``);
# ``chain`` is the ask chain (see _codec's record list), None outside one;
# ``deadline`` an ask's, on the monotonic clock every process shares, or None.
Item: TypeAlias = tuple[
    int, int, int, str, Sequence[Any], dict[str, Any] | None, list[Any] | None, float | None
]


async def _bound(coro: Any, ref: ActorRef, chain: list[Any] | None = None, tag: int = 0) -> Any:
    return await BoundCoroutine(coro, ref, chain, tag)


class Cell:
    """One hosted actor: instance, mailbox, and whether a message is running."""

    __slots__ = (
        "asks",
        "board",
        "busy",
        "errors",
        "fns",
        "hand",
        "hold",
        "instance",
        "mail",
        "node",
        "ran",
        "reentrant",
        "ref",
        "spec",
        "stopped",
        "turn",
        "turns",
    )

    def __init__(self, node: Node, ref: ActorRef, spec: ActorSpec, instance: Any) -> None:
        self.node, self.ref, self.spec, self.instance = node, ref, spec, instance
        self.mail = node.admission.mailbox(spec.mailbox)  # admission.py
        self.busy = False
        self.stopped = False
        self.reentrant = spec.reentrant
        # method name -> (bound method, its board tag), filled on first use
        self.fns: dict[str, tuple[Any, int]] = {}
        self.board = node.board  # the worker's board words (see board.py)
        self.hand = node.board_slots.take_slot(ref.id)  # word: messages queued + tasks running
        self.turns = 0  # async turns started (non-reentrant actors only)
        self.turn = 0  # the async turn running now, 0: none (see the module docstring)
        # set when a method told into a congested way out: the actor takes no next
        # message until that has drained (Node._throttle)
        self.hold: Any = None
        self.ran = self.asks = self.errors = 0  # metrics.py: run, asks answered, raised

    def post(self, item: Item, key: int) -> None:
        """Run ``item`` now, or queue it behind the others from sender ``key``."""
        mail = self.mail
        if self.busy or mail.size:
            if self.turn and item[6] is not None and self._closes_cycle(item):
                return
            if not self.node.admission.fair_queueing:
                key = 0
            refused = mail.put(key, item, self.node.loop.time(), item[0] == STOP)
            if refused is None:
                self.board[self.hand] += 1
            elif refused is item:
                self.node.shed(self, item)
            else:  # a queued message made room: the count in hand is unchanged
                self.node.shed(self, refused)
            return
        self.run(item)

    def pump(self) -> None:
        mail = self.mail
        board, hand, clock = self.board, self.hand, self.node.loop.time
        while mail.size and not self.busy:
            before = mail.size
            item = mail.get(clock())
            if mail.dropped:  # a standing queue was cut back to the window
                dropped, mail.dropped = mail.dropped, []
                for refused in dropped:
                    self.node.shed(self, refused)
            if item is None:  # only asks past their deadline were left
                board[hand] -= before - mail.size
                return
            self.run(item)
            board[hand] -= before - mail.size  # after it ran: a crash in it counts it as lost

    def run(self, item: Item) -> None:
        kind, sender, req, method, args, kwargs, chain, _ = item
        self.call(kind, sender, req, method, args, kwargs, chain)

    def call(
        self,
        kind: int,
        sender: int,
        req: int,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        chain: list[Any] | None,
    ) -> None:
        """Run one message now (the actor is idle and its mailbox empty, or this
        is the mailbox's next): the fields of an ``Item``, passed as they were
        decoded, so the common path builds no tuple."""
        node = self.node
        if kind == STOP or self.stopped:
            self._stop_or_refuse(kind, sender, req, method)
            return
        entry = self.fns.get(method)
        if entry is not None and not node.timing:  # the common case: a known method, untimed
            fn, tag = entry
            prev = _ctx.actor
            _ctx.actor = self.ref
            board = self.board
            board[RUNNING] = board[LAST] = tag
            self.ran += 1  # metrics
            try:
                result = fn(*args, **kwargs) if kwargs else fn(*args)
            except Exception as exc:
                self.errors += 1  # metrics
                node.method_raised(self, kind, sender, req, method, exc)
                return
            finally:
                _ctx.actor = prev
                board[RUNNING] = 0
            if type(result) is not _CoroutineType:
                if kind == ASK:
                    self.asks += 1  # metrics
                    node.reply(sender, req, result, self, method)
                if self.hold is not None:
                    self._park()
                return
            self._start(result, kind, sender, req, method, chain, tag)
            return
        if entry is not None:  # the node was asked to time one message (metrics.py)
            metrics.timed_call(self, entry[0], kind, sender, req, method, args, kwargs, chain)
            return
        self._run_slow((kind, sender, req, method, args, kwargs, chain, None))

    def _closes_cycle(self, item: Item) -> bool:
        """If the ask ``item`` waits on the turn we are inside, fail it with Deadlock."""
        chain, me, turn = item[6], self.ref.id, self.turn
        assert chain is not None  # post() asks only for an item that carries a chain
        starts = [i for i, link in enumerate(chain) if link[0] == me and link[1] == turn]
        if not starts:
            return False
        cycle = chain[starts[0] :]
        name, inside = cycle[0][2], cycle[0][3]
        names = " -> ".join(f"{cls}.{method}" for _, _, cls, method in cycle)
        self.node.fail(
            item[1],
            item[2],
            F_DEADLOCK,
            "Deadlock",
            f"ask cycle {names} -> {self.spec.cls.__qualname__}.{item[3]}: {name} is not "
            f"reentrant and is still inside {inside} waiting on this chain; declare "
            f"@actorq.actor(reentrant=True) on {name}, or make one of the calls a tell",
        )
        return True

    def _stop_or_refuse(self, kind: int, sender: int, req: int, method: str) -> None:
        node = self.node
        if self.stopped:
            node.fail(sender, req, F_DIED, "ActorDied", f"{self.ref!r} was stopped")
            if kind == TELL:
                node.dead_letter(self.ref.id, method)
            return
        self.busy = True
        node.host.run_stop(self, sender, req)

    def _run_slow(self, item: Item) -> None:
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
        code = self.node.board_slots.method_code(method)
        self.fns[method] = (fn, running_tag(self.ref.id, code))
        self.run(item)

    def _start(
        self,
        coro: Any,
        kind: int,
        sender: int,
        req: int,
        method: str,
        chain: list[Any] | None,
        tag: int,
    ) -> None:
        self.board[self.hand] += 1
        if not self.reentrant:
            # we wait on what this method asks: its asks carry us in their chain
            self.busy = True
            self.turns += 1
            self.turn = self.turns
            link = [self.ref.id, self.turn, self.spec.cls.__qualname__, method]
            chain = [*chain, link] if chain else [link]
        # a reentrant actor waits on nobody's behalf but its caller's: the chain passes on
        task = self.node.loop.spawn(_bound(coro, self.ref, chain, tag | ASYNC))
        task.add_done_callback(lambda t: self._finished(t, kind, sender, req, method))

    def _finished(self, task: Any, kind: int, sender: int, req: int, method: str) -> None:
        node = self.node
        self.board[self.hand] -= 1
        try:
            result = task.result()
        except Exception as exc:
            self.errors += 1  # metrics
            node.method_raised(self, kind, sender, req, method, exc)
        except BaseException as exc:  # Cancelled: the actor is going away
            if kind == ASK:
                node.fail(sender, req, F_DIED, "ActorDied", f"{self.ref!r}: {type(exc).__name__}")
        else:
            if kind == ASK:
                self.asks += 1  # metrics
                node.reply(sender, req, result, self, method)
        if not self.reentrant:
            self.busy = False
            self.turn = 0
        if self.hold is not None and self._park():
            return
        if not self.reentrant:
            self.pump()

    def _park(self) -> bool:
        """Take no message until the way out this actor congested has drained;
        False (and nothing held) when it has drained already."""
        hold = self.hold
        if self.busy or hold.done():
            self.hold = None
            return False
        self.busy = True

        def resume(_: Any) -> None:
            self.hold = None
            self.busy = False
            self.pump()

        hold.add_done_callback(resume)
        return True


class Host:
    """The actors of one worker: create, stop one, stop all (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.cells: dict[int, Cell] = {}
        self.gone: set[int] = set()  # ids of actors that lived here and died or stopped

    def create(
        self,
        actor_id: int,
        cls_path: str,
        args: list[Any],
        kwargs: dict[str, Any] | None,
        name: str | None,
    ) -> Any:
        """Instantiate an actor here; returns None, or an awaitable (async on_start)."""
        spec = find_spec(cls_path)
        ref = ActorRef(actor_id, cls_path, name)
        prev = _ctx.actor
        _ctx.actor = ref
        board = self.node.board
        board[RUNNING] = running_tag(actor_id, self.node.board_slots.method_code("__init__"))
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
            _ctx.actor = prev
            board[RUNNING] = 0
        cell = Cell(self.node, ref, spec, instance)
        self.cells[actor_id] = cell
        self.gone.discard(actor_id)
        if inspect.iscoroutine(result):
            cell.busy = True  # messages wait until on_start is done
            task = self.node.loop.spawn(_bound(result, ref))

            def started_cb(t: Any) -> None:
                cell.busy = False
                if t.exception() is not None:
                    log.error("%r.on_start raised: %r", ref, t.exception())
                cell.pump()

            task.add_done_callback(started_cb)
        return None

    def run_stop(self, cell: Cell, sender: int, req: int) -> None:
        def done(_: Any = None) -> None:
            cell.stopped = True
            cell.busy = False
            self.cells.pop(cell.ref.id, None)
            self.gone.add(cell.ref.id)
            self.node.board_slots.release_slot(cell.hand)
            if req:
                self.node.reply(sender, req, None)
            for item in cell.mail.drain():
                self.node.no_such_actor(item[1], item, cell.ref.id)
            if self.node.on_stopped is not None:
                self.node.on_stopped(cell.ref.id)

        result = _call_on_stop(cell)
        if inspect.iscoroutine(result):
            self.node.loop.spawn(_bound(result, cell.ref)).add_done_callback(done)
        else:
            done()

    def stop_all(self) -> Any:
        """Run every actor's on_stop (orderly shutdown); a Future done when all ran."""
        fut = self.node.loop.create_future()
        cells = list(self.cells.values())
        waiting = [0]

        def one_done(_: Any = None) -> None:
            waiting[0] -= 1
            if waiting[0] == 0 and not fut.done():
                fut.set_result(None)

        for cell in cells:
            self.cells.pop(cell.ref.id, None)
            cell.stopped = True
            result = _call_on_stop(cell)
            if inspect.iscoroutine(result):
                waiting[0] += 1
                self.node.loop.spawn(_bound(result, cell.ref)).add_done_callback(one_done)
        if waiting[0] == 0:
            fut.set_result(None)
        return fut

    def rows(self) -> list[dict[str, Any]]:
        """One row per hosted actor, for stats."""
        return [
            {"id": c.ref.id, "name": c.ref.name, "cls": c.spec.path, **c.mail.stats()}
            for c in self.cells.values()
        ]


def _call_on_stop(cell: Cell) -> Any:
    hook = getattr(cell.instance, "on_stop", None)
    if not callable(hook):
        return None
    prev = _ctx.actor
    _ctx.actor = cell.ref
    try:
        return hook()
    except Exception:
        log.exception("%r.on_stop raised", cell.ref)
        return None
    finally:
        _ctx.actor = prev
