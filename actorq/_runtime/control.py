"""The control plane: request/reply over ZeroMQ, msgpack frames with a version.

The supervisor binds one ROUTER at ``ipc://<runtime dir>/control``; each
worker connects a DEALER whose identity is ``w<index>`` (a restarted worker
takes over its predecessor's identity: ROUTER_HANDOVER), and outside clients
connect DEALERs with random identities. Actor traffic between workers never
travels here; this carries spawn, stop notices, lookup, stats, heartbeat,
shutdown, peer-death notices and outside clients' asks.

One frame per message: ``msgpack([VERSION, op, req, body])``. ``req`` is 0
for a one-way notice, else a number the requester chose; the answer is
``[VERSION, "ok", req, value]`` or ``[VERSION, "err", req, {type, message, tb}]``.
A frame that does not decode, has another version or an unknown op is logged
and answered with an "err" (when a req can be read at all): a confused or
hostile client must never take the supervisor down.

The runtime directory is private (mode 0700, owned by us) because anyone who
can connect can stop actors or run their methods.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from .. import _codec, errors

log = logging.getLogger("actorq.control")

VERSION = 1


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


# --- runtime directory ---------------------------------------------------------


def make_runtime_dir(path: str | None = None) -> tuple[Path, bool]:
    """A private directory for the control socket: (path, created_by_us).

    A given ``path`` must be ours and not readable by others (it is created
    with 0700 if missing); without one, a fresh ``actorq-*`` directory under
    ``$XDG_RUNTIME_DIR`` (or the temp dir) is made.
    """
    if path is None:
        base = os.environ.get("XDG_RUNTIME_DIR")
        if not base or not os.path.isdir(base) or not os.access(base, os.W_OK):
            base = None
        return Path(tempfile.mkdtemp(prefix="actorq-", dir=base)), True
    p = Path(path)
    created = False
    try:
        p.mkdir(mode=0o700, parents=True)
        created = True
    except FileExistsError:
        pass
    st = p.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise errors.ConfigError(f"runtime_dir {str(p)!r} is not a directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise errors.ConfigError(
            f"runtime_dir {str(p)!r} must be owned by uid {os.getuid()} with mode 0700 "
            f"(it is uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}); anyone who can enter it "
            "can control the runtime"
        )
    if (p / "control").exists():
        raise errors.ConfigError(
            f"runtime_dir {str(p)!r} already holds a control socket: another runtime may be "
            "using it; pick another directory or remove the stale socket"
        )
    return p, created


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
    finishes later, or raises. Incoming "ok"/"err" settle our own requests.
    """

    def __init__(
        self,
        sock: zmq.Socket,
        loop: Any,
        handlers: dict[str, Handler],
        *,
        router: bool,
        req_base: int = 0,
    ) -> None:
        self.sock, self.loop, self.handlers, self.router = sock, loop, handlers, router
        self._next = req_base
        self.pending: dict[int, Any] = {}
        self.malformed = 0

    def request(self, op: str, body: Any, peer: bytes | None = None) -> Any:
        self._next += 1
        fut = self.loop.create_future()
        self.pending[self._next] = fut
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
            log.debug("control: reply %d to %r not delivered: %s", req, peer, exc)

    def on_message(self, parts: list[bytes]) -> None:
        """One message from the socket (the loop's ZmqSource calls this)."""
        if self.router:
            if len(parts) != 2:
                self.malformed += 1
                log.warning("control: dropped a message of %d frames (want 1)", len(parts) - 1)
                if len(parts) >= 1:
                    self._answer_garbage(parts[0], "expected exactly one frame per message")
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

    def _dispatch(self, peer: bytes | None, frame: bytes) -> None:
        try:
            op, req, body = decode(frame)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("control: malformed frame from %r: %s", peer, exc)
            self._answer_garbage(peer, str(exc))
            return
        if op in ("ok", "err"):
            fut = self.pending.pop(req, None)
            if fut is None or fut.done():
                return
            if op == "ok":
                fut.set_result(body)
            else:
                fut.set_exception(error_from(body))
            return
        handler = self.handlers.get(op)
        if handler is None:
            self.malformed += 1
            log.warning("control: unknown op %r from %r", op, peer)
            self._answer(
                peer,
                req,
                False,
                {"type": "ProtocolError", "message": f"unknown op {op!r}", "tb": ""},
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
