"""A node of the runtime: its loop, its actors, its ends of the mesh.

Every process of a runtime is a ``Node``: the supervisor is node 0 (it hosts
no actors; it proxies outside clients), workers are nodes 1..N, each pinned to
one CPU, and the process running ``main`` is node N+1. An actor id is
``(node << 32) | serial``, so the node that hosts an actor is read off its id
with a shift: no directory lookup on the message path.

A message's way
---------------
``ref.take.tell(blob)`` in an actor method on worker A, for an actor on B:

1. *Sender, at the call site* (``Node.tell``): the message is packed once
   with msgpack, ``[TELL, target, method, args, kwargs, src]``. Packing here
   is what lets an unsendable argument be named where the mistake was made;
   an oversized one is refused here too (``PayloadTooLarge``). The bytes are
   appended to B's *batch* in the port (mesh.py); nothing touches shared
   memory yet. A tell costs about 1 µs of the sender's CPU (64 B payload;
   ``python -m bench breakdown``).
2. *Once per loop turn* (a ``call_soon`` armed by the first tell of the
   turn, or at the end of an inbox drain, for replies), each destination's
   batch becomes ONE ring record: a msgpack array whose elements are the
   packed messages, made by joining their bytes behind an array header (no
   second encode), cut at 64 messages or 15 KiB. The record is copied into
   the ring and the head published; the reader's doorbell is rung only if it
   announced sleep. An ask publishes its batch at once (someone waits).
3. *Receiver* (``RingPort._drain``): the inbox finds the flagged rings in
   O(flagged), and each batch is decoded with one msgpack call straight from
   the ring's memory (zero copy: the payload's only copy on this side is the
   ``bytes`` object the method receives). All taken records leave the ring
   before any is delivered: a crash in a method never redelivers it (at most
   once), and the board counts what was taken and handled, so every loss is
   counted.
4. *Dispatch* (``Node.deliver``): the decoded list is routed in order. A
   tell or ask to an idle actor with an empty mailbox runs its method at
   once from the decoded record (``Cell.call``: no tuple rebuilt); others go
   to the actor's mailbox (admission.py) as an ``Item``. A reply resolves the
   asker's future, and the task awaiting it resumes in the same loop turn.

FIFO holds per (sender, receiver) pair: one ring per ordered pair, batches
written in order, messages in a batch in order, the backlog of a full ring
drained before new batches. Same-node messages skip the ring (``call_soon``)
but are still packed and unpacked, so an actor's behaviour never depends on
where placement put it.

Request ids start at ``incarnation << 40``: when a worker is restarted its
successor never reuses an id whose stale reply may still sit in a channel.

Deadlines
---------
Every ask has a deadline (``ask_timeout``, or the call's own through
``Method.with_timeout``), stored in its pending entry: no timer per ask. One
sweep timer per node runs at the earliest deadline while asks are pending,
fails the expired ones with ``TimeoutError`` and forgets them, so a late
reply finds no entry and is dropped like any stale reply.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from types import EllipsisType
from typing import Any

from .. import _codec
from .._actor import ActorRef, ctx
from .._codec import (
    ASK,
    F_DEADLOCK,
    F_DIED,
    F_NOT_FOUND,
    F_OVERLOADED,
    F_REMOTE,
    FAIL,
    REPLY,
    SLOW,
    STOP,
    TELL,
)
from ..errors import ActorDied, ActorNotFound, Deadlock, Overloaded, PayloadTooLarge, RemoteError
from . import logs
from .admission import Admission
from .board import DEAD_LETTERS, HANDLED, TAKEN, Board
from .host import Cell, Host, Item
from .outside import OUTSIDE_BASE

log = logging.getLogger("actorq.worker")

_NODE_SHIFT = 32
_SEQ_MASK = 0xFFFF_FFFF
_pack_call = _codec.pack_call
_pack = _codec.pack
_UNSENDABLE = _codec.UNSENDABLE
_unpack = _codec.unpack
_STOP_METHOD = "\0stop"  # no Python method can have this name
_ctx = ctx
_NEVER = float("inf")
# A sweep looks at every pending ask, so sweeps are spaced by at least this
# much, plus this much per pending ask: with many asks outstanding the sweeps
# stay a small share of the loop's time (deadlines are then met a little late).
# A tell from async code parks once this many bytes wait in backlogs (besides
# ``backlog_limit // 4`` messages): a full ring plus this much is enough to
# keep the reader busy, and more only costs the sender memory and cache.
_SOFT_BYTES = 8 << 20
_HARD_BYTES = 8 * _SOFT_BYTES  # past this, a tell is refused (Overloaded), like backlog_limit
_SWEEP_GAP = 0.005
_SWEEP_GAP_PER_ASK = 5e-6


class _Sent:
    """What a tell returns while there is room: awaiting it does not suspend."""

    __slots__ = ()

    def __await__(self) -> Iterator[None]:
        return iter(())


_SENT = _Sent()


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
        board: Board | None = None,
        ask_timeout: float | None = 5.0,
        admission: Admission | None = None,
    ) -> None:
        self.index = index
        # What the supervisor reads if this process stalls or dies (board.py);
        # processes that host no actors get a private one.
        self.board_slots = board if board is not None else Board()
        self.board = self.board_slots.words
        self.admission = admission if admission is not None else Admission()
        self.loop = loop
        self.port = port
        self.worker_cpus = worker_cpus
        self.address = address
        self.control = control  # a control.Endpoint in workers; None in the supervisor
        self.host = Host(self)
        self.actors = self.host.cells  # the hot path looks cells up here
        self.gone = self.host.gone
        # req -> (future, target ref, method, deadline or None, timeout in s or None)
        self.pending: dict[int, tuple[Any, ActorRef, str, float | None, float | None]] = {}
        self.ask_timeout = ask_timeout  # the config's default deadline; None: none
        self._clock = loop.time
        self._sweep_at = _NEVER  # when the sweep timer fires; _NEVER: not armed
        self._sweep_handle: Any = None
        self._req = incarnation << 40
        self.sent = 0
        self.received = 0
        self.dead_letters = 0
        self.overloaded = 0  # messages refused by a full mailbox (asks and tells)
        self.shed_tells = 0
        self.refused_sends = 0  # tells/asks refused because the way out was past its bound
        self.held_back = 0  # tells sent while their receiver had asked us to slow down
        self.local_queued = 0  # messages to our own actors not yet delivered
        self._local_room: list[Callable[[], None]] = []
        self._room_futs: dict[int, Any] = {}  # destination -> Future done when it has room
        self._hold_actor: Any = None  # the actor last held by a congested destination
        self._slow: dict[int, float] = {}  # actor id -> until when its receiver asked us to wait
        self._slow_len: dict[int, tuple[float, float]] = {}  # actor id -> (asked at, hold)
        self._pushed: dict[tuple[int, int], float] = {}  # (sender, actor) -> next notice allowed
        self.backlog_hard = self.admission.backlog_limit
        self.backlog_soft = max(1, self.backlog_hard // 4)
        self.expired = 0  # asks dropped unrun because their deadline had passed
        self.timing = False  # metrics.py: time the next method that runs here
        self._flush_handle: Any = None
        self.on_stopped: Callable[[int], None] | None = None
        # outside.Listener where outside clients have direct channels: records
        # addressed to a sender >= OUTSIDE_BASE go to it, not to the mesh
        self.outside: Any = None
        port.start(loop, self.deliver, self._taken)

    # --- sending ----------------------------------------------------------------
    def _send(self, dest: int, data: bytes, urgent: bool = False) -> None:
        """Queue a record for ``dest``. Records are published once per loop turn
        (batching), at the end of an inbox drain (replies), or at once when
        ``urgent`` (an ask: someone is waiting)."""
        self.sent += 1
        if dest == self.index:
            self.board[TAKEN] += 1
            self.local_queued += 1
            self.loop.call_soon(self._deliver_local, data)
            return
        if dest >= OUTSIDE_BASE:
            self.outside.send(dest, data)
            return
        port = self.port
        if urgent:
            port.send_now(dest, data)
            return
        port.send(dest, data)
        if self._flush_handle is None and not port.draining:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self.port.flush()

    def ask(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | EllipsisType | None = ...,
        src: int | None = None,
    ) -> Any:
        """Send an ask; a Future of the reply. ``timeout``: seconds, None for no
        deadline, ``...`` for this node's ``ask_timeout``. ``src``: who sends,
        for fair queueing at the receiver (default: the running actor)."""
        self._req += 1
        req = self._req
        if timeout is ...:
            timeout = self.ask_timeout
        deadline = None if timeout is None else self._clock() + timeout
        actor = _ctx.actor
        src = (actor.id & _SEQ_MASK) if src is None and actor is not None else (src or 0)
        # the deadline travels: the receiver drops the ask unrun once it has passed
        record = [ASK, req, ref.id, method, args, kwargs or None, src, deadline]
        chain = _ctx.chain
        if chain is not None:
            record.append(chain)
        data = _pack_call(record, ref, method, args, kwargs)
        dest = node_of(ref.id)
        if dest == self.index:
            if self.local_queued >= self.backlog_hard:
                self._check_room(self.local_queued, ref, method, "this worker's own queue")
        elif self.port.backlog_total >= self.backlog_soft or self.port.backlog_bytes >= _SOFT_BYTES:
            self._check_room(self.port.queued(dest), ref, method, f"the channel to worker {dest}")
        fut = self.loop.create_future()
        self._send(dest, data, True)  # may raise PayloadTooLarge: nothing to undo
        if deadline is None:
            self.pending[req] = (fut, ref, method, None, None)
            return fut
        self.pending[req] = (fut, ref, method, deadline, timeout)
        if deadline < self._sweep_at:
            self._sweep_from(deadline)
        return fut

    def _sweep_from(self, when: float) -> None:
        """(Re)arm the one sweep timer for ``when``."""
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = when
        self._sweep_handle = self.loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Fail the asks whose deadline has passed; re-arm for the next one, if any."""
        self._sweep_handle = None
        self._sweep_at = _NEVER
        now = self._clock()
        expired = []
        upcoming = _NEVER
        for req, entry in self.pending.items():
            deadline = entry[3]
            if deadline is None:
                continue
            if deadline <= now:
                expired.append(req)
            elif deadline < upcoming:
                upcoming = deadline
        for req in expired:
            fut, ref, method, _, timeout = self.pending.pop(req)
            if not fut.done():
                fut.set_exception(_timed_out(ref, method, timeout))
        if upcoming < _NEVER:
            gap = _SWEEP_GAP + len(self.pending) * _SWEEP_GAP_PER_ASK
            self._sweep_from(max(upcoming, now + gap))

    def tell(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        src: int | None = None,
    ) -> Any:
        """Send without waiting for an answer. Returns an awaitable: done at once
        while the way to the actor has room, else done when it has drained
        (``await ref.m.tell(x)`` parks a coroutine there; backpressure). Past
        ``backlog_limit`` messages waiting, raises Overloaded (code that cannot
        wait must not queue without bound)."""
        rid = ref.id
        if src is None:
            actor = _ctx.actor
            src = actor.id & _SEQ_MASK if actor is not None else 0
        try:
            data = _pack([TELL, rid, method, args, kwargs or None, src])
        except _UNSENDABLE:
            raise _codec.explain_unsendable(
                f"{ref!r}.{method}.tell", args, kwargs, ref.method_fn(method)
            ) from None
        dest = rid >> _NODE_SHIFT
        port = self.port
        if (
            dest != self.index
            and port.backlog_total < self.backlog_soft
            and port.backlog_bytes < _SOFT_BYTES
        ):  # the common case first: another node, and the way there has room
            self.sent += 1
            port.send(dest, data)
            if self._flush_handle is None and not port.draining:
                self._flush_handle = self.loop.call_soon(self._flush)
            return self._held_back(rid) if self._slow else _SENT
        if dest == self.index:
            if self.local_queued >= self.backlog_soft:
                self._check_room(self.local_queued, ref, method, "this worker's own queue")
                self._send(dest, data)
                return self._throttle(-1)
            self.sent += 1
            self.board[TAKEN] += 1
            self.local_queued += 1
            self.loop.call_soon(self._deliver_local, data)
            return self._held_back(rid) if self._slow else _SENT
        # the way to another node is congested
        fut = self._room_futs.get(dest)
        if fut is not None and not fut.done():  # congested already: the short way
            if port.queued(dest) >= self.backlog_hard:
                self._check_room(
                    port.queued(dest), ref, method, f"the channel to worker {dest}"
                )
            self.sent += 1
            port.send(dest, data)  # joins the backlog, which drains on its own
            actor = _ctx.actor
            if actor is not None and actor is not self._hold_actor:
                self._throttle(dest)  # holds this actor too
            return fut
        queued = port.queued(dest)
        self._check_room(queued, ref, method, f"the channel to worker {dest}")
        if port.backlog_bytes >= _HARD_BYTES:
            self.refused_sends += 1
            raise Overloaded(
                f"{ref!r}.{method}: {port.backlog_bytes} bytes of messages wait for full "
                f"channels already (at most {_HARD_BYTES}); from async code await the tell "
                f"(await ref.{method}.tell(...)) to wait for room, or send less"
            )
        self._send(dest, data)
        if queued + 1 >= self.backlog_soft or port.backlog_bytes >= _SOFT_BYTES:
            return self._throttle(dest)
        return _SENT

    # --- backpressure ------------------------------------------------------------
    def _check_room(self, queued: int, ref: ActorRef, method: str, where: str) -> None:
        """Refuse a message that would take ``where`` past its hard bound."""
        if queued >= self.backlog_hard:
            self.refused_sends += 1
            raise Overloaded(
                f"{ref!r}.{method}: {where} already holds {queued} messages not yet taken "
                f"(backlog_limit); from async code await the tell (await ref.{method}.tell(...)) "
                "to wait for room, or send less"
            )

    def _throttle(self, dest: int) -> Any:
        """The way to ``dest`` (-1: ourselves) is congested: a Future done when it has
        drained. The running actor, if any, takes no next message until then (it
        is parked: backpressure reaches whoever sends to it)."""
        fut = self._room_futs.get(dest)
        if fut is None or fut.done():
            fut = self._room_futs[dest] = self.loop.create_future()

            def room(fut: Any = fut) -> None:
                if not fut.done():
                    fut.set_result(None)

            if dest < 0:
                self._local_room.append(room)
            else:
                self.port.on_room(dest, room)
        actor = _ctx.actor
        if actor is not None:
            self._hold_actor = actor
            cell = self.actors.get(actor.id)
            if cell is not None and cell.hold is None:
                cell.hold = fut
        return fut

    def _deliver_local(self, data: bytes) -> None:
        self.local_queued -= 1
        if self._local_room and self.local_queued <= self.backlog_soft // 2:
            waiting, self._local_room = self._local_room, []
            for room in waiting:
                room()
        self.deliver(self.index, [_unpack(data)])

    def stop_actor(self, ref: ActorRef) -> Any:
        self._req += 1
        req = self._req
        fut = self.loop.create_future()
        self.pending[req] = (fut, ref, _STOP_METHOD, None, None)  # on_stop may take its time
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
        if kind == ASK and isinstance(exc, Deadlock):
            # the asker is part of the cycle too: it gets the Deadlock, not a RemoteError
            self.fail(sender, req, F_DEADLOCK, "Deadlock", str(exc))
            return
        tb = "".join(traceback.format_exception(exc))
        if kind == ASK:
            self.fail(sender, req, F_REMOTE, type(exc).__qualname__, str(exc), tb)
        else:
            log.error("%r.%s (tell) raised; the actor keeps running:\n%s", cell.ref, method, tb)

    def dead_letter(self, target: int, method: str) -> None:
        self.dead_letters += 1
        self.board[DEAD_LETTERS] = self.dead_letters
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

    def shed(self, cell: Cell, item: Item) -> None:
        """``cell``'s mailbox refused ``item`` (admission.py): an ask fails with
        Overloaded; a tell is counted as shed and logged once per episode."""
        kind, sender, req, method = item[:4]
        self.overloaded += 1
        mail = cell.mail
        if kind == ASK:
            p50 = mail.percentile(0.5)
            self.fail(
                sender,
                req,
                F_OVERLOADED,
                "Overloaded",
                f"{cell.ref!r}.{method}: its mailbox is full (admission window {mail.window} "
                f"of at most {mail.ceiling} messages; queueing delay p50 "
                f"{'?' if p50 is None else f'{p50 * 1000:g} ms'}); retry later, or slow down",
            )
            return
        self.shed_tells += 1
        self._push_back(sender, cell)
        if self.shed_tells == 1 or self.shed_tells % 10_000 == 0:
            log.warning(
                "shed tell %s to %r: its mailbox is over its admission window (%d messages); "
                "%d tells shed on this worker so far (counted in stats, not logged each)",
                method,
                cell.ref,
                mail.window,
                self.shed_tells,
            )

    def _push_back(self, sender: int, cell: Cell) -> None:
        """Tell the node that sent a shed tell to hold its senders to ``cell``
        back a while (at most one notice per sender and actor per half of it):
        shedding at the receiver costs the receiver; a flood must slow at its
        source."""
        now = self._clock()
        key = (sender, cell.ref.id)
        if self._pushed.get(key, 0.0) > now:
            return
        hold_s = max(0.002, 2 * cell.mail.target)
        self._pushed[key] = now + hold_s / 2
        if len(self._pushed) > 4096:  # forget old notices (bounded)
            self._pushed = {k: t for k, t in self._pushed.items() if t > now}
        if sender == self.index:
            self._slowed_down(cell.ref.id, hold_s)
        else:
            self._send(sender, _codec.pack([SLOW, cell.ref.id, hold_s]))

    def _slowed_down(self, target: int, hold_s: float) -> None:
        """A receiver asked us to hold tells to ``target`` back: for ``hold_s``,
        doubled (up to 1 s) each time it asks again within the last hold, so a
        sender that keeps flooding waits longer and longer (and back to
        ``hold_s`` once the asking stops)."""
        now = self._clock()
        last, length = self._slow_len.get(target, (0.0, 0.0))
        length = min(1.0, length * 2) if now - last < 2 * length else hold_s
        self._slow_len[target] = (now, length)
        if len(self._slow_len) > 4096:  # bounded: forget holds long over
            self._slow_len = {k: v for k, v in self._slow_len.items() if now - v[0] < 2}
        until = now + length
        if self._slow.get(target, 0.0) < until:
            self._slow[target] = until

    def _held_back(self, rid: int) -> Any:
        """A tell to ``rid``, whose receiver asked us to slow down: a Future done
        when the hold ends (the running actor is held until then too)."""
        until = self._slow.get(rid)
        if until is None or until <= self._clock():
            self._slow.pop(rid, None)
            return _SENT
        self.held_back += 1
        fut = self._room_futs.get(-2 - rid)
        if fut is None or fut.done():
            fut = self._room_futs[-2 - rid] = self.loop.create_future()
            self.loop.call_at(until, lambda f=fut: f.done() or f.set_result(None))
        actor = _ctx.actor
        if actor is not None:
            cell = self.actors.get(actor.id)
            if cell is not None and cell.hold is None:
                cell.hold = fut
        return fut

    # --- receiving ------------------------------------------------------------------
    def _taken(self, n: int) -> None:
        """The port took ``n`` records off the rings; they are ours to lose now."""
        self.board[TAKEN] += n

    def deliver(self, sender: int, msgs: list[Any]) -> None:
        """Route a batch of decoded messages from node ``sender``, in order.

        The common case is inlined: a tell to an idle actor with an empty
        mailbox runs its method at once (``Cell.call``) from the record as it
        was decoded. Everything else takes ``_route``."""
        self.received += len(msgs)
        board, cells = self.board, self.actors
        for msg in msgs:
            try:
                if msg[0] == TELL:
                    cell = cells.get(msg[1])
                    if cell is not None and not cell.busy and not cell.mail.size:
                        cell.call(TELL, sender, 0, msg[2], msg[3], msg[4], None)
                    else:
                        self._route(sender, msg)
                else:
                    self._route(sender, msg)
            except Exception:  # a bad record must not cost the rest of the batch
                log.exception("node %d: a record from node %d failed", self.index, sender)
            # after routing: a crash before this counts the message as lost (board.py)
            board[HANDLED] += 1

    def _route(self, sender: int, msg: Any) -> None:
        try:
            kind = msg[0]
        except Exception as exc:
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
                entry[0].set_exception(_failure(msg, entry[1].id))
            return
        if kind == SLOW:
            self._slowed_down(msg[1], msg[2])
            return
        if kind == ASK:
            if len(msg) == 8:
                _, req, target, method, args, kwargs, src, deadline = msg
                chain = None
            else:
                _, req, target, method, args, kwargs, src, deadline, chain = msg
            if deadline is not None and deadline <= self._clock():
                self.expired += 1  # its asker has given up: abort early, not late
                return
            cell = self.actors.get(target)
            if cell is not None and not cell.busy and not cell.mail.size:
                cell.call(ASK, sender, req, method, args, kwargs, chain)  # no Item built
                return
            item: Item = (ASK, sender, req, method, args, kwargs, chain, deadline)
        elif kind == TELL:
            _, target, method, args, kwargs, src = msg
            item = (TELL, sender, 0, method, args, kwargs, None, None)
        elif kind == STOP:
            _, req, target = msg
            src = 0
            item = (STOP, sender, req, _STOP_METHOD, (), None, None, None)
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
        elif cell.busy or cell.mail.size:
            cell.post(item, (sender << _NODE_SHIFT) | src)
        else:
            cell.run(item)

    def no_such_actor(self, sender: int, item: Item, target: int) -> None:
        kind, _, req, method = item[:4]
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
        for req, (fut, ref, *_) in list(self.pending.items()):
            target = ref.id
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
    def _control(self) -> Any:
        if self.control is None:  # the supervisor's own node: it runs no user code
            raise RuntimeError("the supervisor's node has no control channel to itself")
        return self.control

    def control_request(self, op: str, body: Any) -> Any:
        """Ask the supervisor (spawn, lookup, stats); a Future of its answer."""
        return self._control().request(op, body)

    def request_shutdown(self) -> None:
        self._control().notify("shutdown", {})

    def stats(self) -> dict[str, Any]:
        return {
            "mesh_index": self.index,  # (its NUMA node is the supervisor's "node")
            "pid": os.getpid(),
            "actors": self.host.rows(),
            "sent": self.sent,
            "received": self.received,
            "dead_letters": self.dead_letters,
            "overloaded": self.overloaded,
            "shed_tells": self.shed_tells,
            "refused_sends": self.refused_sends,
            "held_back": self.held_back,
            "local_queued": self.local_queued,
            "expired": self.expired,
            "pending_asks": len(self.pending),
            "backlog": self.port.backlog(),
            "loop": self.loop.statistics(),
            "log_dropped": logs.dropped(),
        }


def _failure(msg: list[Any], target: int) -> BaseException:
    _, _, code, type_name, message, tb = msg
    if code == F_DIED:
        return ActorDied(message)
    if code == F_NOT_FOUND:
        return ActorNotFound(message)
    if code == F_OVERLOADED:
        return Overloaded(message)
    if code == F_DEADLOCK:
        return Deadlock(message)
    return RemoteError(type_name, message, tb)


def _timed_out(ref: ActorRef, method: str, timeout: float | None) -> TimeoutError:
    cls = ref.cls_path.rpartition(":")[2]
    return TimeoutError(
        f"ask {cls}.{method} to {ref!r} got no answer within {timeout} s; allow longer "
        f"with ask_timeout in the config, or ref.{method}.with_timeout(seconds) for one call"
    )
