"""Outside processes talking to a runtime: ``actorq.connect(address)``.

A forked web worker, a cron script or a REPL is not a node of the mesh; it
connects a ZeroMQ DEALER to the supervisor's control socket and sends
lookup/ask/tell/stop requests there, and the supervisor forwards them to the
actors over its own channels. That costs a hop through the supervisor, which
is the price of needing nothing but the address (the runtime directory, or
``ipc://<dir>/control``, which ``rt.address`` gives and the log prints).

Two forms:

    client = actorq.connect(address)                 # blocking
    hits = client.lookup("hits")
    hits.add(5)                 # -> 15 (waits for the reply)
    hits.add.tell(1)
    hits.add.with_timeout(0.5)(5)   # this ask's own deadline (None: none)

    client = actorq.connect(address, asyncio=True)   # for asyncio programs
    hits = await client.lookup("hits")
    await hits.add(5)

Refs a client receives (from lookup, or inside replies) are bound to it.
ZeroMQ contexts do not survive fork: a forking server (gunicorn, uWSGI)
must connect in each worker after the fork, not in the master before it.
"""

from __future__ import annotations

import itertools
import os
from types import EllipsisType
from typing import Any, Literal, overload

import zmq

from . import _codec
from ._actor import ActorRef, spawn_body
from ._runtime.control import decode, encode, error_from, normalize_address

_MARGIN = 1.0  # seconds: a call's own deadline, plus the hop through the supervisor


class _Base:
    def __init__(self, address: str | os.PathLike[str], timeout: float | None) -> None:
        self.address = normalize_address(address)
        self.timeout = timeout
        self._ids = itertools.count(1)

    def _ref(self, body: dict[str, Any], name: str | None) -> ActorRef:
        return ActorRef(body["id"], body["cls"], name, via=self)

    def _ext(self, code: int, data: bytes) -> Any:
        if code == _codec.EXT_ACTOR_REF:
            aid, cls, name = _codec.unpack(data)
            return ActorRef(aid, cls, name, via=self)
        return _codec.decode_ext(code, data)

    def _body(
        self, ref: ActorRef, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"id": ref.id, "method": method, "args": list(args), "kwargs": kwargs}
        try:
            _codec.pack(body)
        except _codec.UNSENDABLE:
            raise _codec.explain_unsendable(
                f"{ref!r}.{method}", args, kwargs, ref.method_fn(method)
            ) from None
        return body

    def _connect(self, ctx: Any) -> None:
        self._ctx = ctx
        self._sock = ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.address)

    def _call(self, op: str, body: Any, deadline: float | EllipsisType | None = ...) -> Any:
        raise NotImplementedError

    def _wait(self, deadline: float | EllipsisType | None) -> float | None:
        """How long to wait for an answer: the client's timeout, or a call's own
        deadline plus a margin, so the runtime's TimeoutError (which names the
        actor) arrives before ours."""
        if deadline is ...:
            return self.timeout
        return None if deadline is None else deadline + _MARGIN

    # What an ActorRef bound to this client calls: ``ref.add(5)`` is
    # ``client.ask_actor(ref, "add", (5,), {})``. ``timeout``: from
    # Method.with_timeout, ``...`` when the call chose none (the runtime's
    # ask_timeout applies).
    def ask_actor(
        self,
        ref: ActorRef,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | EllipsisType | None = ...,
    ) -> Any:
        """Call ``method`` on the actor; the reply (for AsyncClient, a coroutine of it)."""
        body = self._body(ref, method, args, kwargs)
        if timeout is not ...:
            body["timeout"] = timeout
        return self._call("ask", body, timeout)

    def tell_actor(
        self, ref: ActorRef, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Call ``method`` on the actor without waiting for a reply."""
        self._sock.send(encode("tell", 0, self._body(ref, method, args, kwargs)))

    def stop_actor(self, ref: ActorRef) -> Any:
        """Stop the actor (for AsyncClient, a coroutine)."""
        return self._call("stop", {"id": ref.id})


class Client(_Base):
    """Blocking client (see the module docstring). Not thread-safe: one per thread."""

    def __init__(self, address: str | os.PathLike[str], timeout: float | None = 30.0) -> None:
        super().__init__(address, timeout)
        self._connect(zmq.Context())

    def _call(self, op: str, body: Any, deadline: float | EllipsisType | None = ...) -> Any:
        req = next(self._ids)
        self._sock.send(encode(op, req, body))
        wait = self._wait(deadline)
        while True:
            if not self._sock.poll(None if wait is None else wait * 1000):
                raise TimeoutError(
                    f"no answer from the runtime at {self.address} within {wait} s (is it running?)"
                )
            frame = self._sock.recv()
            rop, rreq, rbody = decode_with(frame, self._ext)
            if rreq != req:
                continue  # a late answer to an earlier request that timed out
            if rop == "ok":
                return rbody
            raise error_from(rbody)

    def lookup(self, name: str) -> ActorRef:
        return self._ref(self._call("lookup", {"name": name}), name)

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
        return self._ref({"id": self._call("spawn", body)["id"], "cls": body["cls"]}, name)

    def stats(self) -> dict[str, Any]:
        return self._call("stats", {})

    def ping(self) -> dict[str, Any]:
        return self._call("ping", {})

    def shutdown(self) -> None:
        self._call("shutdown", {})

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client: every call is a coroutine; many may be in flight at once."""

    def __init__(self, address: str | os.PathLike[str], timeout: float | None = 30.0) -> None:
        import zmq.asyncio

        super().__init__(address, timeout)
        self._connect(zmq.asyncio.Context())
        self._waiting: dict[int, Any] = {}
        self._reader: Any = None

    async def _read_loop(self) -> None:
        while self._waiting:
            frame = await self._sock.recv()
            rop, rreq, rbody = decode_with(frame, self._ext)
            fut = self._waiting.pop(rreq, None)
            if fut is None or fut.done():
                continue
            if rop == "ok":
                fut.set_result(rbody)
            else:
                fut.set_exception(error_from(rbody))
        self._reader = None

    async def _call(self, op: str, body: Any, deadline: float | EllipsisType | None = ...) -> Any:
        import asyncio

        req = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req] = fut
        await self._sock.send(encode(op, req, body))
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read_loop())
        wait = self._wait(deadline)
        try:
            return await asyncio.wait_for(fut, wait)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                raise  # the runtime's answer (an ask's deadline), not our wait running out
            raise TimeoutError(
                f"no answer from the runtime at {self.address} within {wait} s"
            ) from None
        finally:
            self._waiting.pop(req, None)

    async def lookup(self, name: str) -> ActorRef:
        return self._ref(await self._call("lookup", {"name": name}), name)

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
        reply = await self._call("spawn", body)
        return self._ref({"id": reply["id"], "cls": body["cls"]}, name)

    async def stats(self) -> dict[str, Any]:
        return await self._call("stats", {})

    async def shutdown(self) -> None:
        await self._call("shutdown", {})

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._sock.close(linger=0)
        self._ctx.term()


def decode_with(frame: bytes, ext: Any) -> tuple[str, int, Any]:
    """Like control.decode, but refs in the body are bound to this client."""
    op, req, _ = decode(frame)
    _, _, _, body = _codec.unpack(frame, ext_hook=ext)
    return op, req, body


@overload
def connect(
    address: str | os.PathLike[str],
    *,
    asyncio: Literal[False] = False,
    timeout: float | None = 30.0,
) -> Client: ...
@overload
def connect(
    address: str | os.PathLike[str], *, asyncio: Literal[True], timeout: float | None = 30.0
) -> AsyncClient: ...
@overload
def connect(
    address: str | os.PathLike[str], *, asyncio: bool, timeout: float | None = 30.0
) -> Client | AsyncClient: ...
def connect(
    address: str | os.PathLike[str], *, asyncio: bool = False, timeout: float | None = 30.0
) -> Client | AsyncClient:
    """A client of the runtime at ``address`` (``rt.address``, or its runtime directory)."""
    return AsyncClient(address, timeout) if asyncio else Client(address, timeout)
