"""Actors and refs: ``@actor``, ``ActorSpec``, ``ActorRef``, and where we are.

An actor is a plain class. ``@actorq.actor`` records how to find it again in
another process (its ``module:qualname``), its options (restart policy, mailbox
bound, re-entrancy) and its placement hints; the class itself is returned
unchanged, so it can still be instantiated directly in unit tests.

A ref is a handle, never the object: ``await ref.add(5)`` packs the call,
sends it to the worker that hosts the actor (over a shared-memory ring, or
straight into the mailbox when it lives on the same worker), and awaits the
reply; ``ref.add.tell(5)`` sends without waiting. Messages from one sender to
one actor are handled in the order they were sent. One message runs at a time
per actor; an ``async`` method holds the actor until it returns unless the
actor was declared ``reentrant=True`` (then an actor that asks an actor that
asks it back does not wait on itself).

Which process we are in (worker, main process, client) is held in ``ctx``:
the process installs its ``Node`` there at start. This module imports nothing
of the runtime, so the runtime and the public API both depend on it and not on
each other.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field, fields
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from . import _codec
from .placement import Hints

if TYPE_CHECKING:
    from ._api import Runtime

RESTART_POLICIES = ("never", "always")
HINT_KEYS = tuple(f.name for f in fields(Hints))  # placement owns what a hint is
# Names a ref reserves for itself; an actor method with one of these names is not reachable.
RESERVED = frozenset({"stop", "id", "name", "cls_path", "tell"})


@dataclass(frozen=True)
class ActorSpec:
    """What the runtime knows about an actor class."""

    cls: type
    path: str  # "module:qualname"
    restart: str = "never"
    mailbox: int | None = None
    reentrant: bool = False
    hints: dict[str, Any] = field(default_factory=dict)
    methods: frozenset[str] = frozenset()


registry: dict[str, ActorSpec] = {}


def _public_methods(cls: type) -> frozenset[str]:
    out = set()
    for name in dir(cls):
        if name.startswith("_") or name in ("on_start", "on_stop"):
            continue
        if callable(getattr(cls, name, None)):
            out.add(name)
    return frozenset(out)


def check_hints(hints: dict[str, Any], where: str) -> None:
    for key in hints:
        if key not in HINT_KEYS:
            raise TypeError(
                f"{where}: unknown option {key!r}; placement hints are {', '.join(HINT_KEYS)}"
            )


def actor(
    cls: type | None = None,
    *,
    restart: str = "never",
    mailbox: int | None = None,
    reentrant: bool = False,
    **hints: Any,
) -> Any:
    """Declare an actor class: ``@actor`` or ``@actor(restart="always", mailbox=1000, ...)``.

    Options: ``restart`` ("never": a crash of its worker ends it; "always": it is
    re-created from ``__init__`` on the restarted worker), ``mailbox`` (most
    messages queued for it; beyond that asks fail with ``Overloaded`` and tells
    are counted as dead letters), ``reentrant`` (let other messages run while an
    async method awaits), and placement hints (``group``, ``state``,
    ``footprint``, ``writes``, ``cpu``, ``node``, ``weight``; see Placer).
    """
    if restart not in RESTART_POLICIES:
        raise ValueError(f"@actor: restart={restart!r}; use one of {RESTART_POLICIES}")
    if mailbox is not None and (not isinstance(mailbox, int) or mailbox < 1):
        raise ValueError(f"@actor: mailbox={mailbox!r}; use a positive int or None")
    check_hints(hints, "@actor")

    def wrap(c: type) -> type:
        if not isinstance(c, type):
            raise TypeError(f"@actor decorates classes, not {c!r}")
        path = f"{c.__module__}:{c.__qualname__}"
        spec = ActorSpec(c, path, restart, mailbox, reentrant, dict(hints), _public_methods(c))
        c.__actorq__ = spec  # type: ignore[attr-defined]
        registry[path] = spec
        return c

    return wrap(cls) if cls is not None else wrap


def spec_of(cls: type) -> ActorSpec:
    spec: ActorSpec | None = cls.__dict__.get("__actorq__") if isinstance(cls, type) else None
    if spec is None:
        raise TypeError(
            f"{getattr(cls, '__qualname__', cls)!r} is not an actor class; "
            "decorate it with @actorq.actor"
        )
    return spec


def spawn_body(
    cls: type[Any],
    args: tuple[Any, ...],
    name: str | None,
    kwargs: dict[str, Any] | None,
    hints: dict[str, Any],
) -> dict[str, Any]:
    """The control request that spawns ``cls`` (checked here, at the call site:
    unknown hints and arguments msgpack cannot carry are named)."""
    spec = spec_of(cls)
    where = f"spawn({cls.__qualname__})"
    check_hints(hints, where)
    try:
        _codec.pack([list(args), kwargs or {}])
    except (TypeError, OverflowError, ValueError):
        raise _codec.explain_unsendable(where, args, kwargs, cls.__init__) from None
    return {
        "cls": spec.path,
        "args": list(args),
        "kwargs": kwargs or {},
        "name": name,
        "hints": {**spec.hints, **hints},
        "restart": spec.restart,
    }


def find_spec(path: str) -> ActorSpec:
    """The spec for ``module:qualname``, importing the module if this process has not."""
    spec = registry.get(path)
    if spec is not None:
        return spec
    import importlib
    import sys

    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return spec_of(obj)


# --- where we are --------------------------------------------------------------


class _Context:
    __slots__ = ("actor", "board", "chain", "node", "runtime")

    def __init__(self) -> None:
        # The words of this process's board (see _runtime/board.py): word 0 names
        # the actor and method running now. A private stand-in until a worker
        # installs its shared one.
        self.board: Any = memoryview(bytearray(64)).cast("q")
        self.node: Any = None  # the _runtime.node.Node of this process (worker or main)
        self.runtime: Runtime | None = None  # the _api.Runtime made for it, on first use
        self.actor: ActorRef | None = None  # the actor whose message is running now
        # The ask chain asks made now carry: the non-reentrant actors waiting on
        # the running method (see _codec's record list); None outside actor methods.
        self.chain: list[Any] | None = None


ctx = _Context()


def current_node() -> Any:
    node = ctx.node
    if node is None:
        raise RuntimeError(
            "no actorq runtime in this process: call refs from actors or from main "
            "under actorq.run(), or use actorq.connect(address) from other processes"
        )
    return node


class BoundCoroutine:
    """Runs a coroutine with ``ctx.actor`` and ``ctx.chain`` set at every step.

    The loop interleaves many actors' coroutines, so a plain global would name
    whichever actor ran last; this wrapper restores the right one each time the
    coroutine is resumed. ``chain`` is what asks made by the coroutine carry
    (deadlock detection); None when nobody waits on it.
    """

    __slots__ = ("chain", "coro", "ref", "tag")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        ref: ActorRef,
        chain: list[Any] | None = None,
        tag: int = 0,
    ) -> None:
        self.coro, self.ref, self.chain = coro, ref, chain
        self.tag = tag  # the board's RUNNING word while a step runs

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, send_value, error = self.coro, None, None
        board, tag = ctx.board, self.tag
        while True:
            prev, prev_chain, prev_tag = ctx.actor, ctx.chain, board[0]
            ctx.actor, ctx.chain = self.ref, self.chain
            board[0] = board[5] = tag  # RUNNING and LAST (_runtime/board.py)
            try:
                yielded = coro.send(send_value) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            finally:
                ctx.actor, ctx.chain = prev, prev_chain
                board[0] = prev_tag
            try:
                send_value, error = (yield yielded), None
            except BaseException as exc:
                send_value, error = None, exc


# --- refs ---------------------------------------------------------------------


def check_timeout(seconds: Any, where: str) -> float | None:
    """``seconds`` as an ask deadline: a positive number, or None for no deadline."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < 1e9:
        raise ValueError(
            f"{where}: timeout {seconds!r} must be a positive number of seconds, "
            "or None to wait without a deadline"
        )
    return float(seconds)


class Method:
    """``ref.name``: call it to ask (awaitable), or ``.tell(...)`` to send and forget.

    ``ref.name.with_timeout(s)(...)`` asks with its own deadline instead of the
    runtime's ``ask_timeout``; ``timeout`` is ``...`` when the call chose none.
    """

    __slots__ = ("name", "ref", "timeout")

    def __init__(self, ref: ActorRef, name: str, timeout: Any = ...) -> None:
        self.ref, self.name = ref, name
        self.timeout: float | EllipsisType | None = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ref = self.ref
        if ref._via is not None:
            return ref._via.ask_actor(ref, self.name, args, kwargs, self.timeout)
        node = ctx.node
        if node is None:
            node = current_node()
        return node.ask(ref, self.name, args, kwargs, self.timeout)

    def with_timeout(self, seconds: float | None) -> Method:
        """This method with its own ask deadline: ``await ref.add.with_timeout(0.5)(5)``.

        ``seconds`` replaces the runtime's ``ask_timeout`` for calls made through
        the returned object; None waits without a deadline. A separate call
        (not a keyword) so it can never collide with the method's own arguments.
        """
        return Method(self.ref, self.name, check_timeout(seconds, f"{self!r}.with_timeout"))

    def tell(self, *args: Any, **kwargs: Any) -> Any:
        """Send and forget. Inside the runtime it returns an awaitable: awaiting it
        waits while the way to the actor is congested (backpressure); past its
        bound the tell raises ``Overloaded``."""
        ref = self.ref
        if ref._via is not None:
            ref._via.tell_actor(ref, self.name, args, kwargs)
            return None
        node = ctx.node
        if node is None:
            node = current_node()  # raises, saying what to do
        return node.tell(ref, self.name, args, kwargs)

    def __repr__(self) -> str:
        if self.timeout is ...:
            return f"<method {self.name} of {self.ref!r}>"
        return f"<method {self.name} of {self.ref!r}, timeout {self.timeout} s>"


class _InstanceDoc:
    """``__doc__`` that is the class's own on the class (so ``help(Method)`` still
    reads it) and ``doc(instance)`` on an instance: ``help``/``?`` on a ref or a
    method ref show the actor's own docstrings."""

    def __init__(self, class_doc: str | None, doc: Callable[[Any], str | None]) -> None:
        self.class_doc, self.doc = class_doc, doc

    def __get__(self, obj: Any, owner: type | None = None) -> str | None:
        return self.class_doc if obj is None else self.doc(obj)


def _method_doc(m: Method) -> str | None:
    fn = m.ref.method_fn(m.name)
    return getattr(fn, "__doc__", None) if fn is not None else Method.__dict__["__doc__"].class_doc


def _ref_doc(ref: ActorRef) -> str | None:
    spec = registry.get(ref.cls_path)
    return spec.cls.__doc__ if spec is not None else ActorRef.__dict__["__doc__"].class_doc


class ActorRef:
    """A handle to an actor anywhere in the runtime; can be sent inside messages."""

    __slots__ = ("_methods", "_via", "cls_path", "id", "name")

    def __init__(self, actor_id: int, cls_path: str, name: str | None = None, via: Any = None):
        self.id = actor_id
        self.cls_path = cls_path
        self.name = name
        self._via = via  # a Client, for refs obtained through actorq.connect
        self._methods: dict[str, Method] | None = None  # ``ref.add`` made once, then reused

    @property
    def worker(self) -> int:
        """Index of the worker hosting the actor (1-based; 0 is the supervisor)."""
        return self.id >> 32

    def __getattr__(self, attr: str) -> Method:
        methods = self._methods
        if methods is not None:
            m = methods.get(attr)
            if m is not None:
                return m
        if attr.startswith("_"):
            raise AttributeError(attr)
        spec = registry.get(self.cls_path)
        if spec is not None and attr not in spec.methods:
            have = ", ".join(sorted(spec.methods)) or "none"
            raise AttributeError(
                f"actor {spec.cls.__qualname__} has no method {attr!r} (its methods: {have})"
            )
        if methods is None:
            methods = self._methods = {}
        m = methods[attr] = Method(self, attr)
        return m

    def method_fn(self, name: str) -> Callable[..., Any] | None:
        """The class's function for ``name`` if known here (to name bad arguments)."""
        spec = registry.get(self.cls_path)
        return getattr(spec.cls, name, None) if spec is not None else None

    def stop(self) -> Any:
        """Stop the actor after the messages already sent to it; runs its ``on_stop``."""
        if self._via is not None:
            return self._via.stop_actor(self)
        return current_node().stop_actor(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        cls = self.cls_path.rpartition(":")[2]
        named = f" {self.name!r}" if self.name else ""
        return f"<ActorRef {cls}{named} #{self.id & 0xFFFFFFFF} on worker {self.worker}>"

    def __dir__(self) -> list[str]:
        """The actor's methods too (when its class is imported here), for dir() and completion."""
        spec = registry.get(self.cls_path)
        return sorted({*super().__dir__(), *(spec.methods if spec is not None else ())})


Method.__doc__ = _InstanceDoc(Method.__doc__, _method_doc)  # type: ignore[assignment]
ActorRef.__doc__ = _InstanceDoc(ActorRef.__doc__, _ref_doc)  # type: ignore[assignment]


_codec.register_ref_type(ActorRef, lambda i, c, n: ActorRef(i, c, n))
