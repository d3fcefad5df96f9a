"""Outside processes talking to a runtime: ``actorq.connect(address)``.

A web worker, a ``multiprocessing.Pool`` worker, a cron script or a REPL is
not a node of the mesh. It reaches the runtime two ways:

- **control** (lookup, spawn, stop, stats) over a ZeroMQ DEALER to the
  supervisor's socket (``ipc://<runtime dir>/control``; ``rt.address`` gives
  it and the start line prints the directory, which works too);
- **actor calls** (asks, tells) over a *direct channel* per worker: a pair of
  shared-memory rings of this process's own, straight to the actor's worker
  (see ``_runtime/outside.py``), opened on first use. ``direct=False`` sends
  them through the supervisor instead (a hop more, for payloads over the
  channel's record limit or runtimes on a socket mesh).

Three forms, one meaning: inside an actor or ``main`` (refs from
``rt.spawn``/``rt.lookup``), blocking, and asyncio::

    client = actorq.connect(address)                 # blocking: scripts, WSGI, Pool workers
    hits = client.lookup("hits")
    hits.add(5)                 # -> 15 (waits for the reply)
    hits.add.tell(1)
    hits.add.with_timeout(0.5)(5)   # this ask's own deadline (None: none)

    client = actorq.connect_async(address)           # asyncio / uvloop (ASGI apps)
    hits = await client.lookup("hits")
    await hits.add(5)

What fails, and how: no runtime at the address raises ``NoRuntime`` at once
(and a call in progress when the runtime goes raises it within a second); a
runtime restarted on the same directory is a new incarnation, so refs from
the old one raise ``ActorDied`` instead of reaching fresh actors (look them
up again); an ask's deadline travels with it and an actor that dequeues it
late drops it unrun; a worker that dies fails the asks waiting on it with
``ActorDied``.

A client belongs to the process that made it: a forking server (gunicorn,
uWSGI, ``multiprocessing`` with fork) must connect in each child, after the
fork; using the parent's client in a child raises ``ForkedClient``. A
blocking client is for one thread at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from types import EllipsisType
from typing import Any, Literal, overload

import zmq

from . import _codec
from ._actor import ActorRef, spawn_body
from ._codec import ASK, STOP, TELL
from ._direct import (
    AsyncChannel,
    BlockingChannel,
    ChannelEnd,
    ChannelGone,
    ChannelRefused,
    outcome,
)
from ._runtime.control import ProtocolError, encode, error_from, normalize_address
from .errors import ActorDied, ForkedClient, NoRuntime

log = logging.getLogger("actorq.client")

_MARGIN = 1.0  # seconds: a call's own deadline, plus the hop through the supervisor
_PROBE_EVERY = 1.0  # seconds between checks that the runtime is still there while waiting
# Requests in flight from one asyncio client over ZeroMQ. Replies beyond what
# the supervisor's per-peer queue and ours hold (1000 each by default) would
# be dropped by its ROUTER; past this many, callers wait their turn.
_WINDOW = 512
_NEVER_ASKED = 5.0  # the runtime's ask_timeout until a channel ticket tells us


# Forks of this process so far, as the child sees them: a client compares it
# with the count at its making (cheaper than os.getpid(), a syscall, per call).
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


def _socket_path(address: str) -> str | None:
    return address[len("ipc://") :] if address.startswith("ipc://") else None


def probe(address: str) -> None:
    """Raise NoRuntime unless something listens at ``address`` (ipc only)."""
    path = _socket_path(address)
    if path is None:
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
        raise NoRuntime(
            f"no actorq runtime at {path} ({exc.strerror}): start one there (actorq run, "
            "actorq.start), or pass the address it printed (rt.address, or its runtime directory)"
        ) from None
    except OSError:
        pass  # someone is there (a permission problem shows on first use)
    finally:
        s.close()


def _result(msg: list[Any]) -> Any:
    """The value of an answer that came over a blocking channel, or raise its error."""
    ok, value = outcome(msg)
    if ok:
        return value
    raise value


class _Session:
    """The refs of one runtime incarnation: what ``ref.add(5)`` calls on a
    client's refs. A restarted runtime starts a new session; the old one's
    refs then raise ActorDied."""

    __slots__ = ("client", "rt")

    def __init__(self, client: _Base, rt: str | None) -> None:
        self.client, self.rt = client, rt

    def ask_actor(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | EllipsisType | None = ...,
    ) -> Any:
        return self.client._ask(ref, method, args, kwargs, timeout, self)

    def tell_actor(
        self, ref: ActorRef, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return self.client._tell(ref, method, args, kwargs, self)

    def stop_actor(self, ref: ActorRef) -> Any:
        return self.client._stop(ref, self)


class _Base:
    def __init__(
        self, address: str | os.PathLike[str], timeout: float | None, direct: bool
    ) -> None:
        self.address = normalize_address(address)
        self.timeout = timeout
        self.direct = direct
        self._pid = os.getpid()
        self._fork_count = _forks[0]
        self._ids = itertools.count(1)
        self._session = _Session(self, None)
        self._ask_timeout: float | None = _NEVER_ASKED
        self._no_channel: set[int] = set()  # workers without a direct channel listener
        self.closed = False
        probe(self.address)

    # --- sessions and refs -------------------------------------------------------------
    def _seen(self, rt: Any) -> _Session:
        """The runtime answered as incarnation ``rt``: the session for it."""
        session = self._session
        if session.rt is None:
            session.rt = rt
        elif rt is not None and rt != session.rt:
            session = self._session = _Session(self, rt)
        return session

    def _ref(self, body: dict[str, Any], cls: str, name: str | None) -> ActorRef:
        return ActorRef(body["id"], cls, name, via=self._seen(body.get("rt")))

    def _ext(self, code: int, data: bytes) -> Any:
        if code == _codec.EXT_ACTOR_REF:
            aid, cls, name = _codec.unpack(data)
            return ActorRef(aid, cls, name, via=self._session)
        return _codec.decode_ext(code, data)

    def _check(self, session: _Session | None = None) -> None:
        if _forks[0] != self._fork_count:
            raise ForkedClient(
                f"this actorq client was made in process {self._pid}, before a fork; "
                f"process {os.getpid()} must call actorq.connect itself (e.g. in a gunicorn "
                "post_fork hook, a Pool initializer, or lazily on first use)"
            )
        if self.closed:
            raise RuntimeError(f"this client of {self.address} is closed")
        if session is not None and session is not self._session:
            raise self._restarted()

    def _refused(self, worker: int, exc: ChannelRefused) -> None:
        """A worker refused us a channel (e.g. it has too many): its actors are
        reached through the supervisor from now on."""
        log.warning("%s; calls to its actors go through the supervisor instead", exc)
        self._no_channel.add(worker)

    def _took(self, ticket: dict[str, Any]) -> None:
        """A channel ticket arrived: it tells the runtime's ask_timeout and incarnation."""
        self._ask_timeout = ticket.get("ask_timeout")
        self._seen(ticket["rt"])

    def _not_opened(self, worker: int, exc: Exception) -> None:
        """Opening a channel to ``worker`` failed with ``exc``: return (its actors
        are reached through the supervisor) or raise ActorDied (it is down)."""
        if isinstance(exc, FileNotFoundError):  # this worker serves no direct channels
            self._no_channel.add(worker)
        elif isinstance(exc, ChannelRefused):
            self._refused(worker, exc)
        else:  # it died, or is being restarted
            raise ActorDied(f"worker {worker} is not answering ({exc}); try again") from None

    def _same_runtime(self, session: _Session, channel: ChannelEnd) -> None:
        """ActorDied unless ``channel`` leads to the incarnation ``session`` knew."""
        if session is not self._session or channel.rt != session.rt:
            raise self._restarted()

    @staticmethod
    def _gone(ref: ActorRef) -> ActorDied:
        return ActorDied(
            f"{ref!r}: worker {ref.id >> 32} died (or its channel closed) before it answered"
        )

    def _closing(self) -> bool:
        """Mark the client closed; whether this process should close its sockets
        (not if already closed, nor in a child of the process that made it)."""
        if self.closed:
            return False
        self.closed = True
        return _forks[0] == self._fork_count

    def _restarted(self) -> ActorDied:
        return ActorDied(
            f"the runtime at {self.address} was restarted since this ref was made: its actors "
            "are gone; look the actor up again (client.lookup)"
        )

    # --- records --------------------------------------------------------------------------
    def _deadline(self, timeout: float | EllipsisType | None) -> tuple[float | None, float | None]:
        """(seconds, monotonic deadline) of an ask; None, None: no deadline."""
        seconds = self._ask_timeout if timeout is ... else timeout
        if seconds is None:
            return None, None
        return seconds, time.monotonic() + seconds

    def _ask_record(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | EllipsisType | None,
    ) -> tuple[int, bytes, float | None, float | None]:
        """An ask for a direct channel: (req, packed record, seconds, deadline)."""
        seconds, deadline = self._deadline(timeout)
        req = next(self._ids)
        record = [ASK, req, ref.id, method, args, kwargs or None, 0, deadline]
        return req, _codec.pack_call(record, ref, method, args, kwargs), seconds, deadline

    @staticmethod
    def _tell_record(
        ref: ActorRef, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        record = [TELL, ref.id, method, args, kwargs or None, 0]
        return _codec.pack_call(record, ref, method, args, kwargs, ".tell")

    def _stop_record(self, ref: ActorRef) -> tuple[int, bytes]:
        req = next(self._ids)
        return req, _codec.pack([STOP, req, ref.id])

    def _body(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _Session | None,
    ) -> dict[str, Any]:
        body = self._id_body(ref, session)
        body.update(method=method, args=list(args), kwargs=kwargs)
        try:
            _codec.pack(body)
        except _codec.UNSENDABLE:
            raise _codec.explain_unsendable(
                f"{ref!r}.{method}", args, kwargs, ref.method_fn(method)
            ) from None
        return body

    @staticmethod
    def _id_body(ref: ActorRef, session: _Session | None) -> dict[str, Any]:
        """The start of a request about ``ref`` to the supervisor."""
        body: dict[str, Any] = {"id": ref.id}
        if session is not None and session.rt is not None:
            body["rt"] = session.rt
        return body

    def _ask_body(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | EllipsisType | None,
        session: _Session,
    ) -> dict[str, Any]:
        """An ask to send through the supervisor."""
        body = self._body(ref, method, args, kwargs, session)
        if timeout is not ...:
            body["timeout"] = timeout
        return body

    def _connect(self, ctx: Any) -> None:
        self._ctx = ctx
        self._sock = ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.address)

    def _wait(self, deadline: float | EllipsisType | None) -> float | None:
        """How long to wait for an answer over ZeroMQ: the client's timeout, or a
        call's own deadline plus a margin, so the runtime's TimeoutError (which
        names the actor) arrives before ours."""
        if deadline is ...:
            return self.timeout
        return None if deadline is None else deadline + _MARGIN

    def _waiting_for(
        self, deadline: float | EllipsisType | None
    ) -> tuple[float | None, float | None]:
        """(seconds, monotonic end) of the wait for a control answer (None: no end)."""
        wait = self._wait(deadline)
        return wait, None if wait is None else time.monotonic() + wait

    @staticmethod
    def _left(end: float | None) -> float:
        """How long to wait for the answer before looking at the runtime again."""
        return _PROBE_EVERY if end is None else min(_PROBE_EVERY, end - time.monotonic())

    def _unanswered(self, wait: float | None, end: float | None) -> None:
        """No answer yet: TimeoutError once ``end`` has passed, NoRuntime if the
        runtime went away meanwhile; else wait on."""
        if end is not None and time.monotonic() >= end:
            raise TimeoutError(f"no answer from the runtime at {self.address} within {wait} s")
        probe(self.address)

    def decode(self, frame: bytes) -> tuple[str, int, Any]:
        """A control answer, decoded once, with refs in it bound to this client."""
        try:
            msg = _codec.unpack(frame, self._ext)
            _, op, req, body = msg
        except Exception as exc:
            raise ProtocolError(f"unreadable answer from the runtime: {exc}") from None
        return op, req, body

    @staticmethod
    def _timed_out(ref: ActorRef, method: str, seconds: float | None) -> TimeoutError:
        cls = ref.cls_path.rpartition(":")[2]
        return TimeoutError(
            f"ask {cls}.{method} to {ref!r} got no answer within {seconds} s; allow longer "
            f"with ask_timeout in the config, or ref.{method}.with_timeout(seconds) for one call"
        )

    # --- what ActorRefs bound to this client call (through their _Session); each form
    # defines them, blocking or as coroutines: ask(ref, method, args, kwargs, timeout,
    # session), tell(ref, method, args, kwargs, session), stop(ref, session)
    _ask: Callable[
        [ActorRef, str, tuple[Any, ...], dict[str, Any], float | EllipsisType | None, _Session],
        Any,
    ]
    _tell: Callable[[ActorRef, str, tuple[Any, ...], dict[str, Any], _Session], None]
    _stop: Callable[[ActorRef, _Session], Any]


class Client(_Base):
    """Blocking client (see the module docstring). One thread at a time."""

    def __init__(
        self,
        address: str | os.PathLike[str],
        timeout: float | None = 30.0,
        *,
        direct: bool = True,
    ) -> None:
        super().__init__(address, timeout, direct)
        # one context per process (pyzmq makes a fresh one after fork), never
        # terminated: terminating waits for every socket, and a client that was
        # dropped without close() would make that wait forever
        self._connect(zmq.Context.instance())
        self._channels: dict[int, BlockingChannel] = {}

    def _call(self, op: str, body: Any, deadline: float | EllipsisType | None = ...) -> Any:
        self._check()
        req = next(self._ids)
        self._sock.send(encode(op, req, body))
        wait, end = self._waiting_for(deadline)
        while True:
            left = self._left(end)
            if left <= 0 or not self._sock.poll(left * 1000):
                self._unanswered(wait, end)
                continue
            rop, rreq, rbody = self.decode(self._sock.recv())
            if rreq != req:
                continue  # a late answer to an earlier request that timed out
            if rop == "ok":
                return rbody
            raise error_from(rbody)

    # --- direct channels ----------------------------------------------------------------
    def _channel(self, worker: int) -> BlockingChannel | None:
        channel = self._channels.get(worker)
        if channel is not None and channel.socket_closed():
            # its worker died since our last call (and may have been restarted):
            # nothing was sent on it, so open one to the worker there is now
            self._drop(channel)
            channel = None
        if channel is not None or not self.direct or worker in self._no_channel:
            return channel
        ticket = self._call("channel", {"worker": worker})
        self._took(ticket)
        try:
            channel = BlockingChannel(worker, ticket, self._ext)
        except (FileNotFoundError, ConnectionError, TimeoutError) as exc:
            self._not_opened(worker, exc)
            return None
        self._channels[worker] = channel
        return channel

    def _drop(self, channel: BlockingChannel) -> None:
        self._channels.pop(channel.worker, None)
        channel.close()

    def _direct_call(
        self,
        session: _Session,
        ref: ActorRef,
        channel: BlockingChannel,
        record: bytes,
        req: int,
        until: float | None,
    ) -> list[Any] | EllipsisType | None:
        """Send over the worker's channel and wait; ``...`` when the record is too
        large for it; None when ``until`` passed."""
        if len(record) > channel.max_record:
            return ...
        self._same_runtime(session, channel)
        try:
            return channel.call(record, req, until)
        except ChannelGone:
            self._drop(channel)
            raise self._gone(ref) from None

    def _ask(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | EllipsisType | None,
        session: _Session,
    ) -> Any:
        """Call ``method`` on the actor and wait for its reply."""
        self._check(session)
        channel = self._channel(ref.id >> 32) if self.direct else None
        if channel is not None:  # opened first: it tells the runtime's ask_timeout
            req, record, seconds, deadline = self._ask_record(ref, method, args, kwargs, timeout)
            msg = self._direct_call(session, ref, channel, record, req, deadline)
            if msg is None:
                raise self._timed_out(ref, method, seconds)
            if msg is not ...:
                return _result(msg)
        return self._call(
            "ask", self._ask_body(ref, method, args, kwargs, timeout, session), timeout
        )

    def _tell(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _Session,
    ) -> None:
        """Call ``method`` on the actor without waiting for a reply."""
        self._check(session)
        channel = self._channel(ref.id >> 32) if self.direct else None
        if channel is not None:
            self._same_runtime(session, channel)
            record = self._tell_record(ref, method, args, kwargs)
            if len(record) <= channel.max_record:
                channel.send(record, None)
                return
        self._sock.send(encode("tell", 0, self._body(ref, method, args, kwargs, session)))

    def _stop(self, ref: ActorRef, session: _Session) -> Any:
        """Stop the actor (after what this client sent it before); waits for on_stop."""
        self._check(session)
        channel = self._channel(ref.id >> 32) if self.direct else None
        if channel is not None:
            req, record = self._stop_record(ref)
            msg = self._direct_call(session, ref, channel, record, req, None)
            if msg is not ...:
                assert msg is not None  # no deadline: it waits
                _result(msg)
                return None
        return self._call("stop", self._id_body(ref, session))

    # --- control ----------------------------------------------------------------------------
    def lookup(self, name: str) -> ActorRef:
        """The ref of the actor registered under ``name``; ActorNotFound if none."""
        reply = self._call("lookup", {"name": name})
        return self._ref(reply, reply["cls"], name)

    def spawn(
        self,
        cls: type,
        *args: Any,
        name: str | None = None,
        kwargs: dict[str, Any] | None = None,
        **hints: Any,
    ) -> ActorRef:
        """Create an actor as ``rt.spawn`` does (the class must be importable by the
        runtime's workers under the same ``module:qualname``)."""
        body = spawn_body(cls, args, name, kwargs, hints)
        return self._ref(self._call("spawn", body), body["cls"], name)

    def stats(self) -> dict[str, Any]:
        return self._call("stats", {})

    def ping(self) -> dict[str, Any]:
        reply = self._call("ping", {})
        self._seen(reply.get("rt"))
        return reply

    def shutdown(self) -> None:
        self._call("shutdown", {})

    def close(self) -> None:
        """Close the sockets and channels (in the process that made the client only)."""
        if not self._closing():
            return  # closed already, or the parent's: leave them to it
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client: every call is a coroutine; many may be in flight at once.

    It belongs to the event loop of its first call (refs bound to it too)."""

    def __init__(
        self,
        address: str | os.PathLike[str],
        timeout: float | None = 30.0,
        *,
        direct: bool = True,
    ) -> None:
        import zmq.asyncio

        super().__init__(address, timeout, direct)
        self._connect(zmq.asyncio.Context.instance())
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Future[None] | None = None
        self._window: asyncio.Semaphore | None = None
        self._channels: dict[int, AsyncChannel] = {}
        self._opening: dict[int, asyncio.Future[AsyncChannel | None]] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    async def _read_loop(self) -> None:
        try:
            while self._waiting:
                frame = await self._sock.recv()
                rop, rreq, rbody = self.decode(frame)
                fut = self._waiting.pop(rreq, None)
                if fut is None or fut.done():
                    continue
                if rop == "ok":
                    fut.set_result(rbody)
                else:
                    fut.set_exception(error_from(rbody))
        finally:
            self._reader = None

    async def _call(self, op: str, body: Any, deadline: float | EllipsisType | None = ...) -> Any:
        self._check()
        if self._window is None:
            self._window = asyncio.Semaphore(_WINDOW)
        async with self._window:
            return await self._call_now(op, body, deadline)

    async def _call_now(self, op: str, body: Any, deadline: float | EllipsisType | None) -> Any:
        req = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req] = fut
        try:
            await self._sock.send(encode(op, req, body))
            if self._reader is None:
                self._reader = asyncio.ensure_future(self._read_loop())
            wait, end = self._waiting_for(deadline)
            while True:
                done, _ = await asyncio.wait([fut], timeout=max(0.0, self._left(end)))
                if done:
                    return fut.result()
                self._unanswered(wait, end)
        finally:
            self._waiting.pop(req, None)

    # --- direct channels ----------------------------------------------------------------
    async def _channel(self, worker: int) -> AsyncChannel | None:
        channel = self._channels.get(worker)
        if channel is not None or not self.direct or worker in self._no_channel:
            return channel
        opening = self._opening.get(worker)
        if opening is not None:
            return await asyncio.shield(opening)
        opening = self._opening[worker] = asyncio.get_running_loop().create_future()
        try:
            channel = await self._open(worker)
        except BaseException as exc:
            opening.set_exception(exc)
            opening.exception()  # retrieved: only the waiters (if any) see it
            raise
        else:
            opening.set_result(channel)
            return channel
        finally:
            del self._opening[worker]

    async def _open(self, worker: int) -> AsyncChannel | None:
        ticket = await self._call("channel", {"worker": worker})
        self._took(ticket)
        channel = AsyncChannel(worker, ticket, self._ext, asyncio.get_running_loop())
        try:
            await channel.open()
        except (FileNotFoundError, ConnectionError, TimeoutError) as exc:
            self._not_opened(worker, exc)
            return None
        self._channels[worker] = channel
        return channel

    async def _live_channel(self, worker: int) -> AsyncChannel | None:
        channel = self._channels.get(worker)
        if channel is not None and not channel.closed:
            return channel
        if channel is not None:
            self._channels.pop(worker, None)
        return await self._channel(worker)

    async def _direct_call(
        self,
        session: _Session,
        ref: ActorRef,
        channel: AsyncChannel,
        record: bytes,
        req: int,
        seconds: float | None,
    ) -> Any:
        """Send over the worker's channel and await the answer; ``...`` when the
        record is too large for it. TimeoutError (bare) when ``seconds`` pass first."""
        if len(record) > channel.max_record:
            return ...
        self._same_runtime(session, channel)
        fut = channel.loop.create_future()
        channel.waiting[req] = fut
        if seconds is not None:
            channel.expire_at(req, fut, seconds)
        try:
            channel.send(record)
            return await fut
        except ChannelGone:
            self._channels.pop(channel.worker, None)
            raise self._gone(ref) from None
        finally:
            channel.waiting.pop(req, None)

    async def _ask(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | EllipsisType | None,
        session: _Session,
    ) -> Any:
        """The actor's reply to ``method``."""
        self._check(session)
        channel = self._channels.get(ref.id >> 32)
        if (channel is None or channel.closed) and self.direct:
            channel = await self._live_channel(ref.id >> 32)
        if channel is not None:  # opened first: it tells the runtime's ask_timeout
            req, record, seconds, _ = self._ask_record(ref, method, args, kwargs, timeout)
            try:
                value = await self._direct_call(session, ref, channel, record, req, seconds)
            except TimeoutError:
                raise self._timed_out(ref, method, seconds) from None
            if value is not ...:
                return value
        body = self._ask_body(ref, method, args, kwargs, timeout, session)
        return await self._call("ask", body, timeout)

    def _tell(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _Session,
    ) -> None:
        """Send without waiting (no coroutine: the record leaves now, or is queued)."""
        self._check(session)
        channel = self._channels.get(ref.id >> 32) if self.direct else None
        if channel is not None and not channel.closed:
            self._same_runtime(session, channel)
            record = self._tell_record(ref, method, args, kwargs)
            if len(record) <= channel.max_record:
                channel.send(record)
                return
        elif self.direct and (ref.id >> 32) not in self._no_channel:
            # no channel yet: open it, then send (asks made meanwhile wait for the
            # same opening and go after this tell, so the order holds)
            task = asyncio.ensure_future(self._tell_later(ref, method, args, kwargs, session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._sock.send(
            encode("tell", 0, self._body(ref, method, args, kwargs, session)), zmq.NOBLOCK
        )

    async def _tell_later(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _Session,
    ) -> None:
        try:
            await self._channel(ref.id >> 32)
        except Exception as exc:  # a tell has nobody to raise to: like a dead letter
            log.warning("tell %s to %r not sent: %s", method, ref, exc)
            return
        self._tell(ref, method, args, kwargs, session)

    async def _stop(self, ref: ActorRef, session: _Session) -> None:
        """Stop the actor after what this client sent it before."""
        self._check(session)
        channel = await self._live_channel(ref.id >> 32) if self.direct else None
        if channel is not None:
            req, record = self._stop_record(ref)
            value = await self._direct_call(session, ref, channel, record, req, None)
            if value is not ...:
                return
        await self._call("stop", self._id_body(ref, session))

    # --- control ----------------------------------------------------------------------------
    async def lookup(self, name: str) -> ActorRef:
        reply = await self._call("lookup", {"name": name})
        return self._ref(reply, reply["cls"], name)

    async def spawn(
        self,
        cls: type,
        *args: Any,
        name: str | None = None,
        kwargs: dict[str, Any] | None = None,
        **hints: Any,
    ) -> ActorRef:
        """Create an actor as ``rt.spawn`` does (see ``Client.spawn``)."""
        body = spawn_body(cls, args, name, kwargs, hints)
        return self._ref(await self._call("spawn", body), body["cls"], name)

    async def stats(self) -> dict[str, Any]:
        return await self._call("stats", {})

    async def ping(self) -> dict[str, Any]:
        reply = await self._call("ping", {})
        self._seen(reply.get("rt"))
        return reply

    async def shutdown(self) -> None:
        await self._call("shutdown", {})

    def close(self) -> None:
        if not self._closing():
            return
        for channel in self._channels.values():
            channel.fail_all(RuntimeError(f"the client of {self.address} was closed"))
        self._channels.clear()
        if self._reader is not None:
            self._reader.cancel()
        self._sock.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


@overload
def connect(
    address: str | os.PathLike[str],
    *,
    asyncio: Literal[False] = False,
    timeout: float | None = 30.0,
    direct: bool = True,
) -> Client: ...
@overload
def connect(
    address: str | os.PathLike[str],
    *,
    asyncio: Literal[True],
    timeout: float | None = 30.0,
    direct: bool = True,
) -> AsyncClient: ...
@overload
def connect(
    address: str | os.PathLike[str],
    *,
    asyncio: bool,
    timeout: float | None = 30.0,
    direct: bool = True,
) -> Client | AsyncClient: ...
def connect(
    address: str | os.PathLike[str],
    *,
    asyncio: bool = False,
    timeout: float | None = 30.0,
    direct: bool = True,
) -> Client | AsyncClient:
    """A client of the runtime at ``address`` (``rt.address``, or its runtime
    directory); ``NoRuntime`` at once if nothing is there. ``timeout``: how long
    a control request (lookup, spawn, stats) may wait for the supervisor."""
    if asyncio:
        return AsyncClient(address, timeout, direct=direct)
    return Client(address, timeout, direct=direct)


def connect_async(
    address: str | os.PathLike[str], *, timeout: float | None = 30.0, direct: bool = True
) -> AsyncClient:
    """``connect(address, asyncio=True)``, for asyncio and uvloop programs."""
    return AsyncClient(address, timeout, direct=direct)
