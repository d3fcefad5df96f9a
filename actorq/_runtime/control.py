"""The control plane: request/reply over ZeroMQ, msgpack frames with a version.

The supervisor binds one ROUTER at ``ipc://<runtime dir>/control``; each
worker connects a DEALER whose identity is ``trusted_identity("w<index>",
secret)``, and outside clients connect DEALERs with random identities. Actor
traffic between workers never travels here; this carries spawn, stop notices,
lookup, stats, heartbeat, shutdown, peer-death notices and outside clients' asks.

Who is who. A ROUTER routes by identity and, with ROUTER_HANDOVER (which a
restarted worker needs to take over its predecessor's route), the last peer to
claim an identity wins it. A guessable identity would let any local process
that can reach the socket take a worker's route: receive its heartbeats, and
leave the supervisor unable to stop it. So the runtime's own processes use
identities derived from a per-runtime secret (``new_secret``: made in the
supervisor before the first fork, inherited by the children through memory,
never written anywhere), and the supervisor's Endpoint accepts from anyone
else only ``CLIENT_OPS``; ``INTERNAL_OPS`` and replies to its own requests are
taken only from the trusted peer concerned.

One frame per message: ``msgpack([VERSION, op, req, body])``. ``req`` is 0
for a one-way notice, else a number the requester chose; the answer is
``[VERSION, "ok", req, value]`` or ``[VERSION, "err", req, {type, message, tb}]``.
A frame that does not decode, has another version or an unknown op is counted
and answered with an "err" (when a req can be read at all): a confused or
hostile client must never take the supervisor down, and an honest client with
a bug (or an older version) learns why instead of waiting for a timeout. The
answer is at most one short frame per frame received, so it amplifies nothing.
Such frames are logged once, then summarised (``Complaints``), so a flood
cannot fill the log.

The runtime directory is private (mode 0700, owned by us) because anyone who
can connect can stop actors or run their methods.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from .. import _codec, errors

log = logging.getLogger("actorq.control")

VERSION = 1

# Who may send what to the supervisor. A client is any process that can reach
# the socket; the runtime's own processes (workers, and whatever else holds the
# secret) may send everything. An op the supervisor handles must be in one of
# the two sets (Endpoint checks), so a new op is never open to clients by accident.
CLIENT_OPS = frozenset(
    {"lookup", "spawn", "stats", "ping", "workers", "ask", "tell", "stop", "shutdown", "channel"}
)
INTERNAL_OPS = frozenset({"hello", "stopped", "ready"})  # ready: the main process waits
assert not CLIENT_OPS & INTERNAL_OPS


class ProtocolError(ValueError):
    """A control frame could not be understood."""


def encode(op: str, req: int, body: Any) -> bytes:
    return _codec.pack([VERSION, op, req, body])


def decode(frame: bytes) -> tuple[str, int, Any]:
    try:
        msg = _codec.unpack(frame)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError(f"frame is not msgpack ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(msg, list) or len(msg) != 4:
        raise ProtocolError("frame must be [version, op, req, body]")
    version, op, req, body = msg
    if version != VERSION:
        raise ProtocolError(f"frame version {version!r}; this runtime speaks {VERSION}")
    if not isinstance(op, str) or not isinstance(req, int):
        raise ProtocolError("frame op must be a string and req an integer")
    return op, req, body


# --- errors across the wire -----------------------------------------------------

_ERROR_TYPES: dict[str, type[BaseException]] = {
    name: obj
    for name, obj in vars(errors).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}
for _t in (
    ValueError,
    TypeError,
    KeyError,
    LookupError,
    RuntimeError,
    AttributeError,
    TimeoutError,
):
    _ERROR_TYPES.setdefault(_t.__name__, _t)


def error_body(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, errors.RemoteError):
        return {
            "type": "RemoteError",
            "remote": exc.type_name,
            "message": exc.message,
            "tb": exc.traceback_text,
        }
    tb = (
        ""
        if isinstance(exc, errors.ActorqError | ProtocolError)
        else "".join(traceback.format_exception(exc))
    )
    return {"type": type(exc).__name__, "message": str(exc), "tb": tb}


def error_from(body: Any) -> BaseException:
    if not isinstance(body, dict):
        return errors.RemoteError("ProtocolError", repr(body))
    kind = body.get("type", "Error")
    message = body.get("message", "")
    if kind == "RemoteError":
        return errors.RemoteError(body.get("remote", "Error"), message, body.get("tb", ""))
    cls = _ERROR_TYPES.get(kind)
    if cls is None or cls is errors.RemoteError:
        return errors.RemoteError(kind, message, body.get("tb", ""))
    try:
        return cls(message)
    except TypeError:
        return errors.RemoteError(kind, message, body.get("tb", ""))


# --- who is who ------------------------------------------------------------------

_SECRET_BYTES = 32
_TOKEN_HEX = 32  # 128 bits of the HMAC: never guessed, short enough for a ZeroMQ identity


def new_secret() -> bytes:
    """A fresh per-runtime secret. Keep it in memory only (forked children
    inherit it): whoever holds it can pose as any of the runtime's processes."""
    return os.urandom(_SECRET_BYTES)


def trusted_identity(role: str, secret: bytes) -> bytes:
    """The ZeroMQ identity of the runtime's process ``role`` (``"w3"``, ``"main"``).

    ``<role>.<token>``, the token an HMAC of the role under the secret: only a
    holder of the secret can make one, and one role's identity tells nothing of
    another's. The role stays readable so a peer can be named in logs without
    its token (which would be as good as the secret for that role).
    """
    if not role or "." in role or not role.isascii() or not role.isprintable():
        raise ValueError(f"role {role!r}: want a non-empty printable ASCII name without '.'")
    token = hmac.new(secret, role.encode(), hashlib.sha256).hexdigest()[:_TOKEN_HEX]
    return f"{role}.{token}".encode()


class Trust:
    """Which control peers are the runtime's own processes, and in which role."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError(f"a runtime secret needs at least 16 bytes, not {len(secret)}")
        self.secret = secret
        self._identities: dict[str, bytes] = {}
        self._roles: dict[bytes, str] = {}  # identities seen valid (one per role at most)

    def __repr__(self) -> str:
        return f"<Trust: {len(self._identities)} roles addressed>"  # never the secret

    def identity(self, role: str) -> bytes:
        """The identity ``role`` connects with (what to address it by)."""
        ident = self._identities.get(role)
        if ident is None:
            ident = self._identities[role] = trusted_identity(role, self.secret)
            self._roles[ident] = role
        return ident

    def role_of(self, peer: bytes | None) -> str | None:
        """The role behind ``peer``, or None for anyone without the secret."""
        if peer is None:
            return None
        role = self._roles.get(peer)
        if role is not None:
            return role
        name, dot, _ = peer.partition(b".")
        if not dot or not name:
            return None
        try:
            role = name.decode("ascii")
            expected = trusted_identity(role, self.secret)
        except (UnicodeDecodeError, ValueError):
            return None
        if not hmac.compare_digest(peer, expected):
            return None
        self._roles[peer] = role
        return role


class Complaints:
    """A counter of one kind of bad input that logs without letting a flood fill
    the log: the first one in full, then at most one summary every ``every`` s
    (the rest go to debug). The count is exact: stats report it."""

    def __init__(
        self, what: str, every: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what, self.every, self._clock = what, every, clock
        self.count = 0
        self._logged_at: float | None = None
        self._unlogged = 0

    def __call__(self, fmt: str, *args: Any) -> None:
        self.count += 1
        now = self._clock()
        if self._logged_at is None:
            log.warning(
                "control: " + fmt + " (more %s are counted in stats, logged at most every %g s)",
                *args,
                self.what,
                self.every,
            )
        elif now - self._logged_at >= self.every:
            log.warning(
                "control: %d %s in the last %.0f s (%d in all); the latest: " + fmt,
                self._unlogged + 1,
                self.what,
                now - self._logged_at,
                self.count,
                *args,
            )
        else:
            self._unlogged += 1
            log.debug("control: " + fmt, *args)
            return
        self._logged_at, self._unlogged = now, 0


# --- addresses ---------------------------------------------------------------------


_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL


def control_address(runtime_dir: Path) -> str:
    path = f"{runtime_dir}/control"
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise errors.ConfigError(
            f"runtime_dir {str(runtime_dir)!r} is too long: the control socket path "
            f"{path!r} has {len(os.fsencode(path))} bytes and a unix socket allows "
            f"{_SUN_PATH_MAX}; pick a shorter directory"
        )
    return f"ipc://{path}"


def normalize_address(address: str | os.PathLike[str]) -> str:
    """Accept an ``ipc://`` URL, a runtime directory or the socket path itself."""
    text = os.fspath(address)
    if "://" in text:
        return text
    p = Path(text)
    if p.is_dir():
        p = p / "control"
    return f"ipc://{p}"


# --- a request/reply endpoint on one socket -------------------------------------

Handler = Callable[[bytes | None, Any], Any]


class Endpoint:
    """Requests out, requests in, replies both ways, over one ROUTER or DEALER.

    ``handlers[op](peer, body)`` returns the answer, or an awaitable the loop
    finishes later, or raises. Incoming "ok"/"err" settle our own requests,
    and only when they come from the peer the request went to.

    With ``trust`` (the supervisor's ROUTER), a peer without the secret may
    use only ``CLIENT_OPS``; anything else it sends is refused: counted in
    ``refused``, logged as ``Complaints`` do, and answered with an "err" when
    it asked (req != 0), like an unknown op, so an honest client that calls
    the wrong op learns why rather than timing out.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        loop: Any,
        handlers: dict[str, Handler],
        *,
        router: bool,
        req_base: int = 0,
        trust: Trust | None = None,
    ) -> None:
        if trust is not None:
            undeclared = sorted(set(handlers) - CLIENT_OPS - INTERNAL_OPS)
            if undeclared:
                raise ValueError(
                    f"handlers for {undeclared} are in neither CLIENT_OPS nor INTERNAL_OPS; "
                    "add each to the set of who may send it"
                )
        self.sock, self.loop, self.handlers, self.router = sock, loop, handlers, router
        self.trust = trust
        self._next = req_base
        self.pending: dict[int, tuple[bytes | None, Any]] = {}  # req -> (peer asked, future)
        self.malformed_frames = Complaints("malformed frames")
        self.refused_frames = Complaints("refused frames")

    @property
    def malformed(self) -> int:
        """Frames that could not be understood (garbage, wrong version, unknown op)."""
        return self.malformed_frames.count

    @property
    def refused(self) -> int:
        """Well-formed frames refused because the peer may not send them."""
        return self.refused_frames.count

    def request(self, op: str, body: Any, peer: bytes | None = None) -> Any:
        self._next += 1
        fut = self.loop.create_future()
        self.pending[self._next] = (peer, fut)
        try:
            self._send(peer, encode(op, self._next, body))
        except Exception:
            self.pending.pop(self._next, None)
            raise
        return fut

    def notify(self, op: str, body: Any, peer: bytes | None = None) -> None:
        self._send(peer, encode(op, 0, body))

    def _send(self, peer: bytes | None, frame: bytes) -> None:
        if self.router:
            if peer is None:
                raise ValueError("a ROUTER send needs the peer identity")
            self.sock.send_multipart([peer, frame], zmq.NOBLOCK)
        else:
            self.sock.send(frame, zmq.NOBLOCK)

    def _who(self, peer: bytes | None) -> str:
        """A peer as logs may name it: a trusted one by role, never by identity."""
        if not self.router:
            return "the supervisor"
        role = self.trust.role_of(peer) if self.trust is not None else None
        if role is not None:
            return f"{role} (trusted)"
        text = repr(peer)
        return text if len(text) <= 40 else text[:37] + "..."

    def _answer(self, peer: bytes | None, req: int, ok: bool, value: Any) -> None:
        if req == 0:
            return
        try:
            try:
                frame = encode("ok" if ok else "err", req, value)
            except (TypeError, ValueError, OverflowError) as exc:
                frame = encode("err", req, error_body(exc))
            self._send(peer, frame)
        except zmq.ZMQError as exc:
            log.debug("control: reply %d to %s not delivered: %s", req, self._who(peer), exc)

    def on_message(self, parts: list[bytes]) -> None:
        """One message from the socket (the loop's ZmqSource calls this)."""
        if self.router:
            if len(parts) != 2:
                peer = parts[0] if parts else None
                self.malformed_frames(
                    "dropped a message of %d frames (want 1) from %s",
                    len(parts) - 1,
                    self._who(peer),
                )
                if peer is not None:
                    self._answer_garbage(peer, "expected exactly one frame per message")
                return
            peer, frame = parts
        else:
            peer, frame = None, parts[-1]
        self._dispatch(peer, frame)

    def _answer_garbage(self, peer: bytes | None, why: str, req: int = 0) -> None:
        try:
            self._send(
                peer, encode("err", req, {"type": "ProtocolError", "message": why, "tb": ""})
            )
        except zmq.ZMQError:
            pass

    def _trusted(self, peer: bytes | None) -> bool:
        return self.trust is None or self.trust.role_of(peer) is not None

    def _dispatch(self, peer: bytes | None, frame: bytes) -> None:
        try:
            op, req, body = decode(frame)
        except ProtocolError as exc:
            self.malformed_frames("malformed frame from %s: %s", self._who(peer), exc)
            self._answer_garbage(peer, str(exc))
            return
        if op in ("ok", "err"):
            asked, fut = self.pending.get(req, (None, None))
            if fut is None:
                return  # an answer too late (or to a notice): nothing waits for it
            if asked != peer:  # never answer an answer: that could loop
                self.refused_frames(
                    "%s reply to request %d from %s, which was not asked",
                    op,
                    req,
                    self._who(peer),
                )
                return
            del self.pending[req]
            if fut.done():
                return
            if op == "ok":
                fut.set_result(body)
            else:
                fut.set_exception(error_from(body))
            return
        handler = self.handlers.get(op)
        if handler is None:
            self.malformed_frames("unknown op %r from %s", op, self._who(peer))
            if req:
                self._answer_garbage(peer, f"unknown op {op!r}", req)
            return
        if op not in CLIENT_OPS and not self._trusted(peer):
            self.refused_frames(
                "refused op %r from %s: it is for the runtime's own processes",
                op,
                self._who(peer),
            )
            if req:
                self._answer_garbage(
                    peer, f"op {op!r} is for the runtime's own processes, not clients", req
                )
            return
        try:
            result = handler(peer, body)
        except Exception as exc:  # the handler's error is the requester's answer
            self._answer(peer, req, False, error_body(exc))
            return
        if hasattr(result, "__await__"):
            task = result if hasattr(result, "add_done_callback") else self.loop.spawn(result)
            task.add_done_callback(lambda t: self._finish(peer, req, t))
        else:
            self._answer(peer, req, True, result)

    def _finish(self, peer: bytes | None, req: int, task: Any) -> None:
        try:
            value = task.result()
        except BaseException as exc:
            self._answer(peer, req, False, error_body(exc))
            return
        self._answer(peer, req, True, value)
