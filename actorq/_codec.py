"""What crosses a process boundary: msgpack, plus one extension type for ActorRef.

Why msgpack and never pickle: a message is data, not code. Pickle would let a
ring or a control socket run arbitrary constructors in the receiver, would
silently drag large object graphs along, and would make "it works on one
worker" depend on which classes happen to be importable there. So actorq
carries exactly msgpack's types (None, bool, int within 64 bits, float, str,
bytes, list/tuple -> list, dict) and ``ActorRef``. Anything else is a
``TypeError`` raised *at the call site*, naming the argument, so the mistake is
found where it was made.

Records on the rings (first element is the kind):

    [ASK,   req, target, method, args, kwargs]   reply expected
    [ASK,   req, target, method, args, kwargs, chain]   asked from inside an
                                                 actor method (see below)
    [TELL,  target, method, args, kwargs]        fire and forget
    [REPLY, req, value]
    [FAIL,  req, code, type_name, message, traceback_text]
    [STOP,  req, target]                         req 0: nobody waits

``chain`` lists the non-reentrant actors waiting on the ask, outermost
first, as ``[actor_id, turn, class_name, method]`` entries: an ask that
arrives at an actor still inside one of those turns is a deadlock (see
host.Cell.post). Asks from outside any actor method carry no chain, so the
common record stays six elements.

``req`` is unique per sending process incarnation (see worker.Node), so a reply
that arrives after its asker restarted is recognised as stale and dropped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgpack

ASK, TELL, REPLY, FAIL, STOP = 0, 1, 2, 3, 4
# [SLOW, target, seconds]: the receiver shed tells to ``target`` from us; hold
# our senders to it back for that long (pushback to the source)
SLOW = 5
# FAIL codes
F_REMOTE, F_DIED, F_NOT_FOUND, F_OVERLOADED, F_DEADLOCK = 0, 1, 2, 3, 4

EXT_ACTOR_REF = 1


class _Ref(Protocol):
    """What the ActorRef extension carries of a ref."""

    id: int
    cls_path: str
    name: str | None


_ref_factory: Callable[[int, str, str | None], Any] | None = None
_ref_type: type[_Ref] | None = None


def register_ref_type(cls: type[_Ref], factory: Callable[[int, str, str | None], Any]) -> None:
    """Called once by ``_api``: which class is an ActorRef, and how to rebuild one."""
    global _ref_factory, _ref_type
    _ref_type, _ref_factory = cls, factory


def _default(obj: Any) -> Any:
    if _ref_type is not None and isinstance(obj, _ref_type):
        return msgpack.ExtType(
            EXT_ACTOR_REF, msgpack.packb((obj.id, obj.cls_path, obj.name), use_bin_type=True)
        )
    name = type(obj).__qualname__
    raise TypeError(f"it is {'an' if name[:1].lower() in 'aeiou' else 'a'} {name}")


def decode_ext(code: int, data: bytes) -> Any:
    """msgpack's ``ext_hook``: an ActorRef from its extension; other codes stay ExtType."""
    if code == EXT_ACTOR_REF and _ref_factory is not None:
        actor_id, cls_path, name = msgpack.unpackb(data, raw=False)
        return _ref_factory(actor_id, cls_path, name)
    return msgpack.ExtType(code, data)


# Encode a record; raises one of UNSENDABLE if it cannot. One Packer, reused:
# building one per message costs more than the packing.
_packer = msgpack.Packer(default=_default, use_bin_type=True)
pack: Callable[[Any], bytes] = _packer.pack


def unpack(data: bytes | memoryview, ext_hook: Callable[[int, bytes], Any] | None = None) -> Any:
    return msgpack.unpackb(data, raw=False, ext_hook=ext_hook or decode_ext, strict_map_key=False)


# What pack() raises for a value msgpack cannot carry.
UNSENDABLE = (TypeError, OverflowError, ValueError)
_HINT = (
    "actorq sends msgpack types (None, bool, int, float, str, bytes, list, tuple, dict) "
    "and ActorRef; convert it (e.g. to a dict) before sending"
)


def _sendable(value: Any) -> str | None:
    try:
        pack(value)
    except UNSENDABLE as exc:
        return str(exc)
    return None


def _param_names(fn: Callable[..., Any] | None, nargs: int) -> list[str]:
    names: list[str] = []
    if fn is not None:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        for p in params:
            if p.name == "self":
                continue
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.append(p.name)
    return names[:nargs]


def explain_unsendable(
    where: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    fn: Callable[..., Any] | None = None,
) -> TypeError:
    """Find the argument msgpack cannot carry and build a TypeError that names it."""
    names = _param_names(fn, len(args))
    for i, value in enumerate(args):
        why = _sendable(value)
        if why is not None:
            label = f"argument {i} ({names[i]!r})" if i < len(names) else f"argument {i}"
            return TypeError(f"{where}: {label} cannot be sent ({why}); {_HINT}")
    for key, value in (kwargs or {}).items():
        why = _sendable(value)
        if why is not None:
            return TypeError(f"{where}: argument {key!r} cannot be sent ({why}); {_HINT}")
    return TypeError(f"{where}: the message cannot be sent; {_HINT}")


def pack_call(
    record: list[Any],
    ref: Any,
    method: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    suffix: str = "",
) -> bytes:
    """Pack an ASK/TELL record; on failure raise a TypeError naming the bad argument.

    The call site's description is built only on failure: this is every
    message's path."""
    try:
        return pack(record)
    except UNSENDABLE:
        raise explain_unsendable(
            f"{ref!r}.{method}{suffix}", args, kwargs, ref.method_fn(method)
        ) from None


def pack_reply(req: int, value: Any, where: str) -> bytes:
    """Pack a REPLY; a return value msgpack cannot carry becomes a FAIL the asker sees."""
    try:
        return pack([REPLY, req, value])
    except UNSENDABLE as exc:
        return pack(
            [
                FAIL,
                req,
                F_REMOTE,
                "TypeError",
                f"{where} returned a value that cannot be sent: {exc} "
                f"({type(value).__qualname__}); {_HINT}",
                "",
            ]
        )
