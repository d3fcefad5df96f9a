"""The kv example's command semantics, run directly on a Store with a fake clock,
and the routing that splits multi-key commands across shards."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.kvserver.commands import Fanout, execute, route, shard_of
from examples.kvserver.resp import Error, SimpleString, decode_all
from examples.kvserver.store import KvError, Store, parse_int


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def run(clock: Clock):
    store = Store(clock)

    def run(*args: str | bytes) -> object:
        raw = execute(store, [a.encode() if isinstance(a, str) else a for a in args])
        (value,) = decode_all(raw)
        return value

    run.store = store  # type: ignore[attr-defined]
    return run


def test_ping_echo_quit(run) -> None:
    assert run("PING") == SimpleString("PONG")
    assert run("ping", "hi") == b"hi"
    assert run("ECHO", "x y") == b"x y"
    assert run("QUIT") == "OK"


def test_get_set_and_conditions(run) -> None:
    assert run("GET", "k") is None
    assert run("SET", "k", "v") == "OK"
    assert run("GET", "k") == b"v"
    assert run("SET", "k", "w", "NX") is None
    assert run("SET", "k2", "w", "XX") is None
    assert run("SET", "k", "w", "xx") == "OK"
    assert run("SET", "k2", "z", "nx") == "OK"
    assert run("MGET", "k", "nope", "k2") == [b"w", None, b"z"]
    assert run("SET", "k", "v", "NX", "XX") == Error("ERR syntax error")
    assert run("SET", "k", "v", "BOGUS") == Error("ERR syntax error")
    assert run("SET", "k", "v", "EX") == Error("ERR syntax error")


def test_set_with_expiry(run, clock: Clock) -> None:
    assert run("SET", "a", "1", "EX", "10") == "OK"
    assert run("SET", "b", "1", "PX", "1500") == "OK"
    assert run("TTL", "a") == 10
    assert run("PTTL", "b") == 1500
    clock.t += 1.2
    assert run("TTL", "b") == 0  # 300 ms left rounds to 0 s, as Redis does
    assert run("GET", "b") == b"1"
    clock.t += 0.3
    assert run("GET", "b") is None
    assert run("TTL", "b") == -2
    assert run("SET", "a", "2") == "OK"  # a plain SET clears the TTL
    assert run("TTL", "a") == -1
    assert run("SET", "a", "3", "EX", "5") == "OK"
    assert run("SET", "a", "4", "KEEPTTL") == "OK"
    assert run("TTL", "a") == 5
    assert run("SET", "a", "1", "EX", "0") == Error("ERR invalid expire time in 'set' command")
    assert run("SET", "a", "1", "PX", "-5") == Error("ERR invalid expire time in 'set' command")
    assert run("SET", "a", "1", "EX", "ten") == Error("ERR value is not an integer or out of range")
    assert run("SET", "a", "1", "EX", "1", "KEEPTTL") == Error("ERR syntax error")


def test_expire_ttl(run, clock: Clock) -> None:
    assert run("EXPIRE", "k", "5") == 0
    run("SET", "k", "v")
    assert run("TTL", "k") == -1
    assert run("EXPIRE", "k", "5") == 1
    assert run("TTL", "k") == 5
    assert run("PEXPIRE", "k", "100") == 1
    assert run("PTTL", "k") == 100
    clock.t += 0.1
    assert run("EXISTS", "k") == 0
    run("SET", "k", "v")
    assert run("EXPIRE", "k", "0") == 1  # a non-positive TTL deletes now
    assert run("GET", "k") is None
    assert run("EXPIRE", "k", "x") == Error("ERR value is not an integer or out of range")


def test_incr_family(run, clock: Clock) -> None:
    assert run("INCR", "n") == 1
    assert run("INCRBY", "n", "41") == 42
    assert run("DECR", "n") == 41
    assert run("DECRBY", "n", "50") == -9
    assert run("INCRBY", "n", "-1") == -10
    assert run("GET", "n") == b"-10"
    run("SET", "n", "5", "EX", "10")
    assert run("INCR", "n") == 6
    assert run("TTL", "n") == 10  # INCR keeps the TTL
    run("SET", "s", "abc")
    assert run("INCR", "s") == Error("ERR value is not an integer or out of range")
    assert run("INCRBY", "n", "1.5") == Error("ERR value is not an integer or out of range")
    run("SET", "big", str(2**63 - 1))
    assert run("INCR", "big") == Error("ERR increment or decrement would overflow")
    assert run("GET", "big") == str(2**63 - 1).encode()


def test_del_exists_dbsize_flushdb(run, clock: Clock) -> None:
    run("MSET", "a", "1", "b", "2", "c", "3")
    assert run("DBSIZE") == 3
    assert run("EXISTS", "a", "a", "zz") == 2
    assert run("DEL", "a", "zz", "b") == 2
    assert run("DBSIZE") == 1
    run("SET", "t", "1", "PX", "10")
    assert run("DBSIZE") == 2
    clock.t += 0.011
    assert run("DBSIZE") == 1  # expired keys do not count
    assert run("FLUSHDB") == "OK"
    assert run("DBSIZE") == 0
    assert run("FLUSHDB", "nonsense") == Error("ERR syntax error")
    assert run("MSET", "a", "1", "b") == Error("ERR wrong number of arguments for 'mset' command")


def test_errors_name_the_command(run) -> None:
    assert run("GET") == Error("ERR wrong number of arguments for 'get' command")
    assert run("DBSIZE", "x") == Error("ERR wrong number of arguments for 'dbsize' command")
    err = run("HSET", "h", "f", "v")
    assert isinstance(err, Error)
    assert err.startswith("ERR unknown command 'HSET', with args beginning with: 'h' 'f' 'v'")


def test_sweep_reclaims_unread_expired_keys(clock: Clock) -> None:
    store = Store(clock)
    for i in range(100):
        store.set(b"k%d" % i, b"v", px=10 if i % 2 else None)
    clock.t += 1
    assert store.sweep(limit=10) == 10
    assert len(store.data) == 90
    assert store.sweep() == 40
    assert len(store.data) == len(store.expires) + 50 == 50


@pytest.mark.parametrize("raw", [b"", b"+1", b" 1", b"1 ", b"01", b"-0", b"1_0", b"1.0",
                                 b"9223372036854775808", b"\xd9\xa1", b"-"])
def test_parse_int_refuses_what_redis_refuses(raw: bytes) -> None:
    with pytest.raises(KvError, match="not an integer"):
        parse_int(raw)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_parse_int_round_trip(n: int) -> None:
    assert parse_int(str(n).encode()) == n


def _run_routed(stores: list[Store], args: list[bytes]) -> bytes:
    r = route(args, len(stores))
    if isinstance(r, bytes):
        return r
    if isinstance(r, int):
        return execute(stores[r], args)
    assert isinstance(r, Fanout)
    return r.merge({s: [execute(stores[s], a) for a in reqs] for s, reqs in r.parts.items()})


@given(st.lists(st.sampled_from([b"a", b"b", b"c", b"dd", b"e1", b"zz9"]), min_size=1, max_size=8))
def test_sharded_routing_answers_like_one_store(keys: list[bytes]) -> None:
    one = Store()
    many = [Store() for _ in range(3)]
    cmds = [
        [b"MSET", *[x for k in keys for x in (k, k + b"!")]],
        [b"MGET", *keys, b"missing"],
        [b"EXISTS", *keys],
        [b"DBSIZE"],
        [b"INCR", b"n"],
        [b"DEL", keys[0], b"missing"],
        [b"DBSIZE"],
        [b"FLUSHDB"],
        [b"DBSIZE"],
        [b"PING"],
        [b"MSET", b"odd"],
    ]
    for c in cmds:
        assert _run_routed(many, c) == execute(one, c), c


def test_keys_spread_over_shards() -> None:
    counts = [0, 0, 0, 0]
    for i in range(4000):
        counts[shard_of(b"key:%d" % i, 4)] += 1
    assert min(counts) > 800
    assert shard_of(b"anything", 1) == 0


ops = st.lists(st.tuples(st.sampled_from(["set", "setpx", "pexpire", "del", "tick", "sweep"]),
                         st.sampled_from([b"a", b"b", b"c", b"d"]),
                         st.integers(min_value=1, max_value=50)), max_size=60)


@given(ops)
def test_sweep_agrees_with_a_model_of_expiry(seq: list[tuple[str, bytes, int]]) -> None:
    clock = Clock()
    store = Store(clock)
    model: dict[bytes, float | None] = {}  # key -> expiry time in ms (None: never)

    def now_ms() -> int:
        return int(clock.t * 1000)

    for op, key, n in seq:
        if op == "set":
            store.set(key, b"v")
            model[key] = None
        elif op == "setpx":
            store.set(key, b"v", px=n)
            model[key] = now_ms() + n
        elif op == "pexpire":
            alive = key in model and (model[key] is None or model[key] > now_ms())
            assert store.pexpire(key, n) == alive
            if alive:
                model[key] = now_ms() + n
        elif op == "del":
            store.delete(key)
            model.pop(key, None)
        elif op == "tick":
            clock.t += n / 1000
        elif n % 2:
            assert store.sweep(limit=2) <= 2
        else:
            store.sweep()  # a full sweep leaves exactly the live keys
            assert set(store.data) == {k for k, t in model.items() if t is None or t > now_ms()}
    store.sweep()
    live = {k for k, t in model.items() if t is None or t > now_ms()}
    assert set(store.data) == live
    assert set(store.expires) <= live
