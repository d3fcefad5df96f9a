"""The actor API end to end: one real runtime (supervisor + 2 pinned workers)
hosted by this test process runs ``main``, which exercises every call and
returns what it saw; the tests read that."""

from __future__ import annotations

import os
from typing import Any

import pytest

import actorq
from actorq.loop import wait_for

# --- the actors and the main coroutine, as an application would write them ---------------


@actorq.actor
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    async def add_later(self, n: int, delay: float) -> int:
        await actorq.sleep(delay)
        return self.add(n)

    def get(self) -> int:
        return self.value

    def boom(self, what: str) -> None:
        raise KeyError(what)

    def bad_return(self) -> object:
        return object()


@actorq.actor
class Collector:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.started = False

    def on_start(self) -> None:
        self.started = True

    def add(self, x: Any) -> None:
        self.items.append(x)

    def all(self) -> list[Any]:
        return self.items

    def was_started(self) -> bool:
        return self.started

    def size(self, blob: bytes) -> int:
        return len(blob)


@actorq.actor
class Producer:
    def __init__(self, collector: actorq.ActorRef) -> None:
        self.collector = collector  # an ActorRef passed to __init__

    async def blast(self, n: int) -> list[Any]:
        for i in range(n):
            self.collector.add.tell(("p", i))
        # same (sender, receiver) pair: this ask is answered after every tell above
        return await self.collector.all()

    async def ask_back(self) -> list[int]:
        # an actor asks another actor, and its own ref and the runtime are reachable
        me = actorq.self_ref()
        rt = actorq.runtime()
        c = await rt.spawn(Counter, 100)
        v = await c.add(1)
        await c.stop()
        return [me.id, v, os.getpid(), len(rt.workers)]

    async def where(self) -> int:
        return os.sched_getaffinity(0).pop()


@actorq.actor(reentrant=True)
class Ping:
    def __init__(self) -> None:
        self.peer: Any = None

    def set_peer(self, peer: actorq.ActorRef) -> None:
        self.peer = peer

    async def ping(self, n: int) -> int:
        if n == 0:
            return 0
        return 1 + await self.peer.ping(n - 1)


async def main(rt: actorq.Runtime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    w1, w2 = rt.workers[0], rt.workers[-1]
    c = await rt.spawn(Counter, 10, name="hits", cpu=w1)
    out["ask"] = await c.add(5)
    c.add.tell(1)
    out["after_tell"] = await c.get()
    out["async"] = await c.add_later(2, 0.01)
    slow = await rt.spawn(Counter)
    try:
        await wait_for(slow.add_later(0, 5.0), 0.05)  # an ask with a deadline
        out["timeout"] = "answered"
    except TimeoutError:
        out["timeout"] = "timed out"
    same = await rt.lookup("hits")
    out["lookup_same"] = same == c and await same.get() == 18
    try:
        await rt.lookup("nobody")
    except actorq.ActorNotFound as e:
        out["lookup_missing"] = str(e)
    try:
        await rt.spawn(Counter, name="hits")
    except ValueError as e:
        out["dup_name"] = str(e)
    try:
        await c.boom("k1")
    except actorq.RemoteError as e:
        out["remote"] = [e.type_name, e.message, "boom" in e.traceback_text]
    out["alive_after_error"] = await c.get()
    try:
        await c.bad_return()
    except actorq.RemoteError as e:
        out["bad_return"] = e.type_name
    try:
        c.add(object())
    except TypeError as e:
        out["unsendable"] = str(e)
    try:
        c.add.tell(n={1, 2})
    except TypeError as e:
        out["unsendable_kw"] = str(e)
    try:
        c.nosuch  # noqa: B018
    except AttributeError as e:
        out["no_method"] = str(e)
    # FIFO per pair across two workers: actor -> actor, and main -> actor
    coll = await rt.spawn(Collector, cpu=w2)
    prod = await rt.spawn(Producer, coll, cpu=w1)
    out["started"] = await coll.was_started()
    out["big"] = await coll.size(b"x" * (1 << 20))  # 1 MiB: through the ring's slab
    try:
        coll.size(b"x" * (64 << 20))
    except actorq.PayloadTooLarge as e:
        out["too_big"] = str(e)
    for i in range(300):
        coll.add.tell(("m", i))
    seen_by_prod = await prod.blast(2000)
    items = await coll.all()
    p = [i for k, i in seen_by_prod if k == "p"]
    m = [i for k, i in items if k == "m"]
    out["fifo"] = [p == list(range(2000)), m == list(range(300))]
    out["ask_back"] = await prod.ask_back()
    out["main_pid"] = os.getpid()
    out["pinned"] = [await prod.where(), w1]
    # reentrant ping-pong across workers (nested asks)
    a = await rt.spawn(Ping, cpu=w1)
    b = await rt.spawn(Ping, cpu=w2)
    await a.set_peer(b)
    await b.set_peer(a)
    out["pingpong"] = await a.ping(10)
    stats = await rt.stats()
    out["stats_actors"] = sorted((x["cls"].split(":")[1], x["worker"]) for x in stats["actors"])
    out["mesh"] = stats["mesh"]
    await c.stop()
    try:
        await c.get()
        out["after_stop"] = "answered"
    except actorq.ActorDied:
        out["after_stop"] = "died"
    bogus = actorq.ActorRef((1 << 32) | 999999, c.cls_path)
    try:
        await bogus.get()
        out["never_existed"] = "answered"
    except actorq.ActorNotFound:
        out["never_existed"] = "not found"
    return out


@pytest.fixture(scope="module", params=["ring", "socket"])
def result(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What main saw, over the shared-memory rings and over the socketpair
    fallback (used where rings cannot run, e.g. a CPU without x86-64 TSO)."""
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACTORQ_MESH", request.param)
        out = actorq.run(main, workers=2, runtime_dir=str(tmp / "rt"))
    assert out["mesh"] == request.param
    return out


def test_ask_tell_async_lookup(result: dict) -> None:
    assert result["ask"] == 15
    assert result["after_tell"] == 16
    assert result["async"] == 18
    assert result["timeout"] == "timed out"
    assert result["lookup_same"] is True
    assert "nobody" in result["lookup_missing"]
    assert "hits" in result["dup_name"]


def test_remote_errors_keep_the_actor_alive(result: dict) -> None:
    assert result["remote"] == ["KeyError", "'k1'", True]
    assert result["alive_after_error"] == 18
    assert result["bad_return"] == "TypeError"


def test_unsendable_arguments_are_named_at_the_call_site(result: dict) -> None:
    assert "argument 0 ('n')" in result["unsendable"]
    assert "object" in result["unsendable"]
    assert "argument 'n'" in result["unsendable_kw"]
    assert "nosuch" in result["no_method"]
    assert "add" in result["no_method"]


def test_large_payloads(result: dict) -> None:
    assert result["big"] == 1 << 20
    assert "too large" in result["too_big"]


def test_fifo_per_pair_across_workers(result: dict) -> None:
    assert result["started"] is True  # on_start ran
    assert result["fifo"] == [True, True]


def test_actors_reach_runtime_and_self(result: dict) -> None:
    me, v, pid, nworkers = result["ask_back"]
    assert me >> 32 >= 1
    assert v == 101
    assert nworkers == 2
    assert pid not in (os.getpid(), result["main_pid"])  # a worker, not main or the host
    where, wanted = result["pinned"]
    assert where == wanted  # the worker really runs on the CPU it was pinned to


def test_nested_asks_between_two_workers(result: dict) -> None:
    assert result["pingpong"] == 10


def test_stats_show_where_actors_live(result: dict) -> None:
    classes = {cls for cls, _ in result["stats_actors"]}
    assert {"Counter", "Collector", "Producer", "Ping"} <= classes
    assert all(w in (1, 2) for _, w in result["stats_actors"])


def test_stop_then_died_and_never_existed(result: dict) -> None:
    assert result["after_stop"] == "died"
    assert result["never_existed"] == "not found"


def test_unserializable_explained_without_runtime() -> None:
    from actorq import _codec

    def f(self, a, b):
        return None

    err = _codec.explain_unsendable("X.f", (1, {1: object()}), None, f)
    assert str(err).startswith("X.f: argument 1 ('b') cannot be sent (")
    assert "object" in str(err)  # what the bad value is
    assert "msgpack types" in str(err)  # and what can be sent instead
    err = _codec.explain_unsendable("X.f", (1,), {"k": {1, 2}}, f)
    assert str(err).startswith("X.f: argument 'k' cannot be sent (")
    assert "set" in str(err)


def test_decorator_options_are_checked() -> None:
    with pytest.raises(ValueError, match="restart"):
        actorq.actor(restart="sometimes")
    with pytest.raises(TypeError, match="colour"):
        actorq.actor(colour="red")

    @actorq.actor(restart="always", mailbox=10, group="g", state="shared")
    class A:
        def m(self) -> None: ...

    spec = A.__actorq__
    assert spec.restart == "always"
    assert spec.mailbox == 10
    assert spec.hints["group"] == "g"
    assert A().m() is None  # still a plain class


def test_refs_outside_a_runtime_say_what_to_do() -> None:
    ref = actorq.ActorRef(1 << 32, "x:Y")
    with pytest.raises(RuntimeError, match="connect"):
        ref.anything(1)
    with pytest.raises(RuntimeError):
        actorq.self_ref()


def test_a_ref_survives_msgpack_both_ways() -> None:
    from actorq import ActorRef, _codec

    r = ActorRef((2 << 32) | 5, "m:C", "n")
    back = _codec.unpack(_codec.pack({"r": [r]}))["r"][0]
    assert back == r
    assert back.name == "n"
    assert back.worker == 2
