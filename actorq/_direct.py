"""The client's end of a direct channel to a worker (the worker's: _runtime/outside.py).

``ChannelEnd`` makes the two rings, hands them to the worker with the
supervisor's ticket, and then carries ASK/TELL/STOP records out and
REPLY/FAIL records back. ``BlockingChannel`` waits for a reply by spinning a
few microseconds, then sleeping in ``poll`` on the reply ring's doorbell and
the socket (end of file: the worker died). ``AsyncChannel`` lets the host's
asyncio (or uvloop) loop watch the same two fds with ``add_reader``: many
asks in flight, no threads.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from . import _codec
from ._codec import F_DEADLOCK, F_DIED, F_NOT_FOUND, F_OVERLOADED, FAIL, REPLY
from ._runtime.outside import BACKLOG_LIMIT, CHANNEL_BYTES, FDS_PER_RING, PROTOCOL
from .errors import ActorDied, ActorNotFound, Deadlock, Overloaded, RemoteError, RingFull
from .shm.ring import Ring

_HANDSHAKE_TIMEOUT = 5.0
_SWEEP_GAP = 0.005  # seconds at least between two deadline sweeps
_FAILURES: dict[int, type[Exception]] = {
    F_DIED: ActorDied,
    F_NOT_FOUND: ActorNotFound,
    F_OVERLOADED: Overloaded,
    F_DEADLOCK: Deadlock,
}


class ChannelGone(ActorDied):
    """The worker at the other end of a channel died (or closed it)."""


class ChannelRefused(ConnectionError):
    """The worker answered the hello with a refusal (its reason is the message)."""


def outcome(msg: list[Any]) -> tuple[bool, Any]:
    """(True, value) for a REPLY record, (False, exception) for a FAIL."""
    if msg[0] == REPLY:
        return True, msg[2]
    _, _, code, type_name, message, tb = msg
    cls = _FAILURES.get(code)
    return False, (cls(message) if cls is not None else RemoteError(type_name, message, tb))


class ChannelEnd:
    """Two rings and the socket that introduced them (see the module docstring)."""

    def __init__(self, worker: int, ticket: dict[str, Any], ext: Callable[[int, bytes], Any]):
        self.worker = worker
        self.rt: str = ticket["rt"]
        self.ext = ext
        self.pid = os.getpid()
        self.closed = False
        self.out = Ring.create(CHANNEL_BYTES, slab=None, name="actorq-client-out")
        try:
            self.back = Ring.create(CHANNEL_BYTES, slab=None, name="actorq-client-back")
        except BaseException:
            self.out.close()
            raise
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.writer = self.out.writer()
        self.reader = self.back.reader()
        self.max_record = self.out.max_record
        self.hello = _codec.pack([PROTOCOL, ticket["client"], ticket["ticket"], self.pid])
        self.path: str = ticket["path"]

    def fds(self) -> list[int]:
        return [*self.out.handles()[:FDS_PER_RING], *self.back.handles()[:FDS_PER_RING]]

    def accepted(self, answer: bytes) -> None:
        """The worker's answer to our hello: fine, or why not (ValueError)."""
        try:
            version, status, detail = _codec.unpack(answer)
        except Exception:
            raise ConnectionError(
                f"worker {self.worker} answered the channel hello with {answer[:40]!r}"
            ) from None
        if version != PROTOCOL or status != "ok":
            raise ChannelRefused(f"worker {self.worker} refused a direct channel: {detail}")
        # the worker has mapped the rings: our memfd fds are no longer needed
        self.out.release_fds()
        self.back.release_fds()
        self.sock.setblocking(False)

    def socket_closed(self) -> bool:
        """Whether the worker's end is gone (the socket reads end of file)."""
        try:
            return not self.sock.recv(64)  # it never sends after the handshake
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        self.out.close()
        self.back.close()

    def died(self) -> ChannelGone:
        return ChannelGone(f"worker {self.worker} died (or closed this client's channel)")


class BlockingChannel(ChannelEnd):
    """For one thread: one ask at a time, waited for in place."""

    def __init__(self, worker: int, ticket: dict[str, Any], ext: Callable[[int, bytes], Any]):
        super().__init__(worker, ticket, ext)
        try:
            self.sock.settimeout(_HANDSHAKE_TIMEOUT)
            self.sock.connect(self.path)
            socket.send_fds(self.sock, [self.hello], self.fds())
            self.accepted(self.sock.recv(4096))
        except BaseException:
            self.close()
            raise
        self._want = 0
        self._answer: list[Any] | None = None
        self._poll = select.poll()
        self._poll.register(self.reader.doorbell_fd, select.POLLIN)
        self._poll.register(self.sock, select.POLLIN)
        self._unpack_ext = ext

    def _take(self, record: bytes) -> None:
        msg = _codec.unpack(record, self._unpack_ext)
        if msg[0] in (REPLY, FAIL) and msg[1] == self._want:
            self._answer = msg
        # anything else: a late answer to an ask that timed out, or a SLOW notice

    def send(self, record: bytes, until: float | None) -> None:
        try:
            self.writer.send_nowait(record)
        except RingFull:
            left = None if until is None else max(0.0, until - time.monotonic())
            try:
                self.writer.send(record, left)
            except RingFull:
                raise TimeoutError(
                    f"the direct channel to worker {self.worker} stayed full"
                ) from None

    def call(self, record: bytes, req: int, until: float | None) -> list[Any] | None:
        """Send ``record`` and wait for the answer to ``req`` until ``until``
        (monotonic; None: no end); None when the time ran out."""
        self._want, self._answer = req, None
        self.send(record, until)
        reader = self.reader
        take = self._take
        while True:
            reader.drain(take)
            if self._answer is not None:
                return self._answer
            if reader.spin() or not reader.prepare_sleep():
                continue
            if until is None:
                wait = -1
            else:
                left = until - time.monotonic()
                if left <= 0:
                    reader.wake_up()
                    return None
                wait = max(1, int(left * 1000))
            try:
                ready = self._poll.poll(wait)
            finally:
                reader.wake_up()
            for fd, _ in ready:
                if fd != reader.doorbell_fd and self.socket_closed():
                    reader.drain(take)  # the answer may have come just before
                    if self._answer is not None:
                        return self._answer
                    raise self.died()


class AsyncChannel(ChannelEnd):
    """For an asyncio loop: replies settle futures as the doorbell rings."""

    def __init__(
        self,
        worker: int,
        ticket: dict[str, Any],
        ext: Callable[[int, bytes], Any],
        loop: asyncio.AbstractEventLoop,
    ):
        super().__init__(worker, ticket, ext)
        self.loop = loop
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.backlog: collections.deque[bytes] = collections.deque()
        self._flush_queued = False
        self.deadlines: dict[int, tuple[float, asyncio.Future[Any]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf

    async def open(self) -> None:
        try:
            self.sock.setblocking(False)
            await asyncio.wait_for(self.loop.sock_connect(self.sock, self.path), _HANDSHAKE_TIMEOUT)
            socket.send_fds(self.sock, [self.hello], self.fds())
            answer = await asyncio.wait_for(
                self.loop.sock_recv(self.sock, 4096), _HANDSHAKE_TIMEOUT
            )
            self.accepted(answer)
        except BaseException:
            self.close()
            raise
        self.loop.add_reader(self.reader.doorbell_fd, self._doorbell)
        self.loop.add_reader(self.sock, self._sock_readable)
        self._drain()

    def expire_at(self, req: int, fut: asyncio.Future[Any], seconds: float) -> None:
        """Fail ``fut`` with a bare TimeoutError after ``seconds`` unless answered.

        One sweep timer for all of them (a timer per ask would keep asyncio's
        timer heap as large as the number in flight)."""
        when = self.loop.time() + seconds
        self.deadlines[req] = (when, fut)
        if when < self._sweep_at:
            if self._sweep is not None:
                self._sweep.cancel()
            self._sweep_at = when
            self._sweep = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        now = self.loop.time()
        self._sweep, self._sweep_at = None, math.inf
        upcoming = math.inf
        for req, (when, fut) in list(self.deadlines.items()):
            if fut.done():
                del self.deadlines[req]
            elif when <= now:
                del self.deadlines[req]
                fut.set_exception(TimeoutError())
            elif when < upcoming:
                upcoming = when
        if upcoming < math.inf:
            self._sweep_at = max(upcoming, now + _SWEEP_GAP)
            self._sweep = self.loop.call_at(self._sweep_at, self._expire)

    def _take(self, record: bytes) -> None:
        msg = _codec.unpack(record, self.ext)
        if msg[0] not in (REPLY, FAIL):
            return  # a SLOW notice: the worker's mailbox fairness already holds us back
        fut = self.waiting.pop(msg[1], None)
        if self.deadlines:
            self.deadlines.pop(msg[1], None)
        if fut is None or fut.done():
            return  # its asker gave up
        ok, value = outcome(msg)
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def _doorbell(self) -> None:
        self.reader.wake_up()
        self._drain()

    def _drain(self) -> None:
        reader = self.reader
        while True:
            reader.drain(self._take)
            if reader.prepare_sleep():  # the worker rings the doorbell for what comes next
                return

    def _sock_readable(self) -> None:
        if self.socket_closed():
            self._drain()
            self.fail_all(self.died())

    def fail_all(self, exc: BaseException) -> None:
        waiting, self.waiting = self.waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        self.close()

    def send(self, record: bytes) -> None:
        """Send now, or queue behind what waits for room (in order, bounded)."""
        if self.backlog:
            if len(self.backlog) >= BACKLOG_LIMIT:
                raise Overloaded(
                    f"the direct channel to worker {self.worker} already holds "
                    f"{len(self.backlog)} records waiting for room; send less at once"
                )
            self.backlog.append(record)
            return
        try:
            self.writer.write(record)
        except RingFull:
            self.backlog.append(record)
            self.loop.add_reader(self.writer.space_fd, self._space)
            if self.writer.wait_for_space(len(record)):
                self._space()
            return
        # Published once per loop turn: every ask the turn's coroutines make
        # goes out with one store and at most one doorbell (a doorbell is a
        # syscall and a wake-up: one per ask cost more than the ask).
        if not self._flush_queued:
            self._flush_queued = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_queued = False
        if not self.closed:
            self.writer.publish()

    def _space(self) -> None:
        writer, q = self.writer, self.backlog
        while q:
            try:
                writer.write(q[0])
            except RingFull:
                writer.publish()
                if writer.wait_for_space(len(q[0])):
                    continue
                return  # the worker rings space_fd when it has read
            q.popleft()
        writer.publish()
        self.loop.remove_reader(writer.space_fd)

    def close(self) -> None:
        if self.closed:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self.reader.doorbell_fd)
            self.loop.remove_reader(self.sock)
            self.loop.remove_reader(self.writer.space_fd)
        self.backlog.clear()
        self.deadlines.clear()
        if self._sweep is not None:
            self._sweep.cancel()
        super().close()
