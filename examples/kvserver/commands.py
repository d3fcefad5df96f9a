"""The command table: RESP requests in, encoded RESP replies out.

:func:`execute` runs one request against one :class:`~.store.Store` and
returns the encoded reply; a single-process server (``bench/resp_asyncio.py``)
and each shard of the sharded server use it as it is. :func:`route` tells the
sharded server where a request must run: nowhere (PING, ECHO, QUIT, errors:
answered on the spot), on the one shard that owns its key, or split across
shards (multi-key commands, DBSIZE, FLUSHDB) with a function that merges the
shards' replies into the one the client expects.

Every failure is a RESP error reply, worded as Redis words it; nothing here
raises for bad input. Keys map to shards by CRC-32, which is stable across
processes (Python's ``hash`` of bytes is salted per process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zlib import crc32

from .resp import NULL, OK, ONE, PONG, ZERO, encode, encode_bulk, encode_error, encode_int
from .store import NOT_AN_INTEGER, KvError, Store, parse_int

Reply = bytes
Handler = Callable[[Store, list[bytes]], Reply]

SYNTAX = "ERR syntax error"


def shard_of(key: bytes, nshards: int) -> int:
    return crc32(key) % nshards if nshards > 1 else 0


# ------------------------------------------------------------------ handlers


def _ping(store: Store, args: list[bytes]) -> Reply:
    return PONG if len(args) == 1 else encode_bulk(args[1])


def _echo(store: Store, args: list[bytes]) -> Reply:
    return encode_bulk(args[1])


def _quit(store: Store, args: list[bytes]) -> Reply:
    return OK


def _get(store: Store, args: list[bytes]) -> Reply:
    v = store.get(args[1])
    return NULL if v is None else b"$%d\r\n%s\r\n" % (len(v), v)


def _set(store: Store, args: list[bytes]) -> Reply:
    if len(args) == 3:  # the common case, without options
        store.set(args[1], args[2])
        return OK
    px: int | None = None
    nx = xx = keepttl = False
    i = 3
    while i < len(args):
        opt = args[i].upper()
        if opt in (b"EX", b"PX") and i + 1 < len(args) and px is None and not keepttl:
            try:
                n = parse_int(args[i + 1])
            except KvError:
                return encode_error(NOT_AN_INTEGER)
            if n <= 0 or (opt == b"EX" and n > (2**63 - 1) // 1000):
                return encode_error("ERR invalid expire time in 'set' command")
            px = n * 1000 if opt == b"EX" else n
            i += 2
        elif opt == b"NX" and not xx:
            nx = True
            i += 1
        elif opt == b"XX" and not nx:
            xx = True
            i += 1
        elif opt == b"KEEPTTL" and px is None:
            keepttl = True
            i += 1
        else:
            return encode_error(SYNTAX)
    done = store.set(args[1], args[2], px=px, nx=nx, xx=xx, keepttl=keepttl)
    return OK if done else NULL


def _del(store: Store, args: list[bytes]) -> Reply:
    return encode_int(sum(store.delete(k) for k in args[1:]))


def _exists(store: Store, args: list[bytes]) -> Reply:
    return encode_int(sum(store.exists(k) for k in args[1:]))


def _incrby_with(store: Store, key: bytes, delta: int) -> Reply:
    try:
        return encode_int(store.incrby(key, delta))
    except KvError as e:
        return encode_error(str(e))


def _incr(store: Store, args: list[bytes]) -> Reply:
    return _incrby_with(store, args[1], 1)


def _decr(store: Store, args: list[bytes]) -> Reply:
    return _incrby_with(store, args[1], -1)


def _incrby(store: Store, args: list[bytes]) -> Reply:
    try:
        delta = parse_int(args[2])
    except KvError as e:
        return encode_error(str(e))
    return _incrby_with(store, args[1], delta)


def _decrby(store: Store, args: list[bytes]) -> Reply:
    try:
        delta = parse_int(args[2])
    except KvError as e:
        return encode_error(str(e))
    if delta == -(2**63):
        return encode_error("ERR decrement would overflow")
    return _incrby_with(store, args[1], -delta)


def _expire_unit(scale: int) -> Handler:
    def handler(store: Store, args: list[bytes]) -> Reply:
        try:
            n = parse_int(args[2])
        except KvError as e:
            return encode_error(str(e))
        if abs(n) > (2**63 - 1) // scale:
            return encode_error("ERR invalid expire time in 'expire' command")
        return ONE if store.pexpire(args[1], n * scale) else ZERO

    return handler


def _ttl(store: Store, args: list[bytes]) -> Reply:
    return encode_int(store.ttl(args[1]))


def _pttl(store: Store, args: list[bytes]) -> Reply:
    return encode_int(store.pttl(args[1]))


def _mget(store: Store, args: list[bytes]) -> Reply:
    parts = [b"*%d\r\n" % (len(args) - 1)]
    parts.extend(_get(store, [b"GET", k]) for k in args[1:])
    return b"".join(parts)


def _mset(store: Store, args: list[bytes]) -> Reply:
    if len(args) % 2 == 0:
        return encode_error("ERR wrong number of arguments for 'mset' command")
    for i in range(1, len(args), 2):
        store.set(args[i], args[i + 1])
    return OK


def _dbsize(store: Store, args: list[bytes]) -> Reply:
    return encode_int(store.size())


def _flushdb(store: Store, args: list[bytes]) -> Reply:
    if len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC"):
        return encode_error(SYNTAX)
    store.flush()
    return OK


def _config(store: Store, args: list[bytes]) -> Reply:
    # redis-benchmark asks CONFIG GET save/appendonly at start; an empty map
    # ("nothing configured") keeps it quiet. Nothing here is configurable.
    if args[1].upper() == b"GET":
        return b"*0\r\n"
    return encode_error("ERR CONFIG subcommand not supported by this server; only CONFIG GET")


def _client(store: Store, args: list[bytes]) -> Reply:
    # redis-py sends CLIENT SETINFO on connect; accept the harmless ones.
    if args[1].upper() in (b"SETINFO", b"SETNAME"):
        return OK
    return encode_error(
        f"ERR unknown subcommand '{args[1].decode(errors='replace')}'. "
        "Try CLIENT SETINFO or CLIENT SETNAME."
    )


# ------------------------------------------------------------------ the table

#: Where a command runs in the sharded server.
LOCAL, KEY, MULTI, ALL, SESSION = "local", "key", "multi", "all", "session"


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arity: int  # as Redis counts: the command name included; negative = at least -arity
    where: str  # LOCAL, KEY, MULTI (keys at args[1:], step ``step``), ALL, SESSION
    handler: Handler
    step: int = 1


COMMANDS: dict[bytes, Command] = {}
for _c in (
    Command("ping", -1, LOCAL, _ping),
    Command("echo", 2, LOCAL, _echo),
    Command("quit", -1, SESSION, _quit),
    Command("hello", -1, SESSION, lambda store, args: hello(args, 2, 0)[0]),
    Command("config", -2, LOCAL, _config),
    Command("client", -2, LOCAL, _client),
    Command("get", 2, KEY, _get),
    Command("set", -3, KEY, _set),
    Command("incr", 2, KEY, _incr),
    Command("decr", 2, KEY, _decr),
    Command("incrby", 3, KEY, _incrby),
    Command("decrby", 3, KEY, _decrby),
    Command("expire", 3, KEY, _expire_unit(1000)),
    Command("pexpire", 3, KEY, _expire_unit(1)),
    Command("ttl", 2, KEY, _ttl),
    Command("pttl", 2, KEY, _pttl),
    Command("del", -2, MULTI, _del),
    Command("exists", -2, MULTI, _exists),
    Command("mget", -2, MULTI, _mget),
    Command("mset", -3, MULTI, _mset, step=2),
    Command("dbsize", 1, ALL, _dbsize),
    Command("flushdb", -1, ALL, _flushdb),
):
    COMMANDS[_c.name.encode()] = _c
    COMMANDS[_c.name.upper().encode()] = _c


def lookup(name: bytes) -> Command | None:
    return COMMANDS.get(name) or COMMANDS.get(name.lower())


def unknown_command(args: list[bytes]) -> Reply:
    shown = " ".join(f"'{a[:128].decode(errors='replace')}'" for a in args[1:8])
    name = args[0][:128].decode(errors="replace")
    return encode_error(f"ERR unknown command '{name}', with args beginning with: {shown}")


def check(args: list[bytes]) -> Command | Reply:
    """The command for ``args``, or the error reply if it is unknown or has the wrong arity."""
    cmd = COMMANDS.get(args[0]) or COMMANDS.get(args[0].lower())
    if cmd is None:
        return unknown_command(args)
    n = len(args)
    if (cmd.arity > 0 and n != cmd.arity) or (cmd.arity < 0 and n < -cmd.arity):
        return encode_error(f"ERR wrong number of arguments for '{cmd.name}' command")
    return cmd


def execute(store: Store, args: list[bytes]) -> Reply:
    """Run one request on one store; the encoded reply (errors included)."""
    cmd = check(args)
    if isinstance(cmd, bytes):
        return cmd
    return cmd.handler(store, args)


# ------------------------------------------------------------------ sessions

#: Commands that change the connection rather than the data; the connection
#: layer answers them itself (see :func:`session_command`).
SESSION_LENGTHS = frozenset((4, 5))  # QUIT, HELLO: a cheap pre-check on the hot path


def session_command(args: list[bytes]) -> bytes | None:
    """``b"QUIT"`` or ``b"HELLO"`` if ``args`` is one of them, else None."""
    if len(args[0]) in SESSION_LENGTHS:
        name = args[0].upper()
        if name in (b"QUIT", b"HELLO"):
            return name
    return None


def hello(args: list[bytes], proto: int, client_id: int) -> tuple[bytes, int]:
    """Answer HELLO [protover [SETNAME name]]: the reply and the connection's protocol after it.

    redis-py 8 opens every connection with ``HELLO 3``; see :func:`.resp.to_resp3`.
    """
    new = proto
    if len(args) > 1:
        try:
            new = int(args[1])
        except ValueError:
            return encode_error("ERR Protocol version is not an integer or out of range"), proto
        if new not in (2, 3):
            return encode_error("NOPROTO unsupported protocol version"), proto
        rest = [a.upper() for a in args[2:]]
        if b"AUTH" in rest:
            return encode_error("ERR AUTH is not supported: this server has no passwords"), proto
        if rest and (rest[0] != b"SETNAME" or len(rest) != 2):
            return encode_error(SYNTAX), proto
    info = {
        "server": "actorq-kvserver", "version": "0.1.0", "proto": new, "id": client_id,
        "mode": "standalone", "role": "master", "modules": [],
    }
    return encode(info, resp3=new == 3), new


# ------------------------------------------------------------------ routing


@dataclass(slots=True)
class Fanout:
    """A request split across shards: run ``parts[shard]`` (a list of requests) on each
    shard, then ``merge`` the shards' reply lists (same keys as ``parts``) into one reply."""

    parts: dict[int, list[list[bytes]]]
    merge: Callable[[dict[int, list[bytes]]], Reply]


def _sum_ints(replies: dict[int, list[bytes]]) -> Reply:
    return encode_int(sum(int(r[0][1:-2]) for r in replies.values()))


def _first_error_or_ok(replies: dict[int, list[bytes]]) -> Reply:
    for rs in replies.values():
        for r in rs:
            if r[:1] == b"-":
                return r
    return OK


def route(args: list[bytes], nshards: int) -> bytes | int | Fanout:
    """Where ``args`` runs: a reply now (bytes), one shard (int), or a :class:`Fanout`."""
    cmd = check(args)
    if isinstance(cmd, bytes):
        return cmd
    return route_checked(cmd, args, nshards)


def route_checked(cmd: Command, args: list[bytes], nshards: int) -> bytes | int | Fanout:
    """:func:`route` for a request already :func:`check`-ed (the server's hot path)."""
    where = cmd.where
    if where is KEY:
        return crc32(args[1]) % nshards if nshards > 1 else 0
    if where is LOCAL or where is SESSION:
        return cmd.handler(Store(), args)  # these touch no keys
    if nshards == 1:
        return 0
    if where is ALL:
        return Fanout({s: [args] for s in range(nshards)}, _sum_ints if cmd.name == "dbsize"
                      else _first_error_or_ok)
    if cmd.name == "mset" and len(args) % 2 == 0:
        return cmd.handler(Store(), args)  # the arity error, decided without any shard
    head = args[0]
    if cmd.name == "mget":
        # One GET per key, grouped by shard; the merge puts them back in request order.
        order: list[tuple[int, int]] = []  # (shard, index within that shard's list)
        parts: dict[int, list[list[bytes]]] = {}
        for k in args[1:]:
            s = crc32(k) % nshards
            lst = parts.setdefault(s, [])
            order.append((s, len(lst)))
            lst.append([b"GET", k])

        def merge_mget(replies: dict[int, list[bytes]]) -> Reply:
            return b"*%d\r\n" % len(order) + b"".join(replies[s][i] for s, i in order)

        return Fanout(parts, merge_mget)
    groups: dict[int, list[bytes]] = {}
    step = cmd.step
    for i in range(1, len(args), step):
        groups.setdefault(crc32(args[i]) % nshards, [head]).extend(args[i : i + step])
    parts = {s: [sub] for s, sub in groups.items()}
    return Fanout(parts, _sum_ints if cmd.name in ("del", "exists") else _first_error_or_ok)
