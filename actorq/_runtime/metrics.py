"""Counters a runtime keeps about itself, cheap enough to stay on.

Where they live: in each worker's board (board.py), an anonymous shared
mapping made before the fork, written only by that worker and read by the
supervisor without asking it (``actorq stats``/``top`` and the Prometheus
endpoint read them there, so a busy or stalled worker is not disturbed, and
its last numbers are still there).

What a message costs (host.py's fast path): one increment of a Python int
on the actor's cell, and a look at the node's ``timing`` flag. Timing is
sampled by the loop, not per message: every 64 busy loop turns, and after
every 16th time the loop goes to sleep, the flag is raised and the next sync
method to run takes ``timed_call`` instead of the fast path; only that one
touches shared memory (its service-time bucket and sum). Measured in
bench/RESULTS.md ("Metrics"). Records sent are counted per worker, not per
actor: attributing them to the actor cost another 8 % of a delivered tell.

Everything else is copied into the board by the worker itself every
``PUBLISH_S`` seconds, O(actors that ran) per tick and O(1) when nothing
happened: mailbox depth, admission window,
admitted/shed/expired counts and the sojourn histogram (admission.py keeps
those already), the loop's turns and busy time, the node's counters, and the
connection servers' (net/server.py). So the supervisor's numbers trail the
worker's by at most ``PUBLISH_S``.

Histograms have fixed buckets: service time ``SERVICE_BUCKETS`` (1 µs to
10 s, sync methods with their reply, sampled as above), sojourn time
admission.py's ``BUCKETS`` (time messages that had to queue waited in the
mailbox; ones run at once are not in it).

``metrics = false`` in the config stops the timing and the publishing (the
counting increments stay: they cost about 3 % of a delivered tell).
"""

from __future__ import annotations

import array
import bisect
import inspect
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .admission import BUCKETS as SOJOURN_BUCKETS

if TYPE_CHECKING:
    from .board import Board
    from .host import Cell
    from .node import Node

PUBLISH_S = 0.5
ARM_SLEEPS = 16  # the next method after every 16th sleep of the loop is timed
_ns = time.perf_counter_ns

SERVICE_BUCKETS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_SERVICE_NS = tuple(round(b * 1e9) for b in SERVICE_BUCKETS)

# --- the layout (word offsets inside the metrics block of a board) ------------------

WORKER_FIELDS = (
    "published_ns",  # wall clock of the last publish (time.time_ns)
    "turns",
    "busy_ns",  # loop time not spent waiting in epoll
    "callbacks",
    "longest_callback_ns",
    "sent",
    "received",
    "dead_letters",
    "overloaded",
    "shed_tells",
    "refused_sends",
    "expired",
    "pending_asks",
    "local_queued",
    "held_back",
    "hosted",  # actors hosted now
)
_WORKER_WORDS = 32
ACTOR_FIELDS = (
    "messages",  # messages run (tells and asks)
    "asks",  # asks answered with a value
    "errors",  # methods that raised
    "admitted",
    "shed",
    "expired",
    "congested",
    "queued",  # mailbox depth now
    "window",
    "service_samples",
    "service_sum_ns",
)
_SAMPLES = ACTOR_FIELDS.index("service_samples")
_SUM = ACTOR_FIELDS.index("service_sum_ns")
_SERVICE_AT = len(ACTOR_FIELDS)
_SOJOURN_AT = _SERVICE_AT + len(SERVICE_BUCKETS) + 1
ACTOR_WORDS = 64
assert _SOJOURN_AT + len(SOJOURN_BUCKETS) + 1 <= ACTOR_WORDS
SERVER_FIELDS = ("open", "accepted", "refused", "closed", "bytes_in", "bytes_out")
MAX_SERVERS = 8
_SERVER_NAME_WORDS = 4  # 32 bytes of name
_SERVER_WORDS = 16


def words_for(max_actors: int) -> int:
    """Size of the metrics block, in 64-bit words, for ``max_actors`` slots."""
    return _WORKER_WORDS + MAX_SERVERS * _SERVER_WORDS + max_actors * ACTOR_WORDS


@dataclass
class Settings:
    """Set in the supervisor before it forks (children inherit it)."""

    enabled: bool = True


settings = Settings()


# --- the worker's side ---------------------------------------------------------------


def timed_call(cell: Cell, fn: Any, *msg: Any) -> None:
    """Run one message of ``cell`` through its fast path, timed (the node's
    ``timing`` flag sent it here; the flag is lowered first, so the inner call
    takes the fast path and counts it). Async methods are not timed: the
    next message is."""
    node = cell.node
    node.timing = False
    if inspect.iscoroutinefunction(fn):
        cell.call(*msg)
        node.timing = True
        return
    t0 = _ns()
    cell.call(*msg)
    ns = _ns() - t0
    board = node.board_slots
    base = board.metrics_slot(cell.hand)
    if base < 0:
        return
    w = board.words
    w[base + _SAMPLES] += 1
    w[base + _SUM] += ns
    w[base + _SERVICE_AT + bisect.bisect_left(_SERVICE_NS, ns)] += 1


class _Arm:
    """Raises the node's ``timing`` flag: every 64 busy turns (``every_turns``)
    and at every ARM_SLEEPS-th sleep (``before_sleep``) of the loop."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sleeps = 0

    def busy(self) -> None:
        self.node.timing = True

    def sleep(self) -> None:
        self.sleeps += 1
        if self.sleeps >= ARM_SLEEPS:
            self.sleeps = 0
            self.node.timing = True


_servers: weakref.WeakSet[Any] = weakref.WeakSet()  # net.Server objects of this process


def add_server(server: Any) -> None:
    """A connection server started in this process: publish its counters."""
    _servers.add(server)


def remove_server(server: Any) -> None:
    _servers.discard(server)


class Publisher:
    """Copies what the worker knows anyway into its board (module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.board: Board = node.board_slots
        self._last: tuple[int, ...] = ()
        self._seen: dict[int, tuple[int, ...]] = {}  # cell hand -> what was published
        self._handle: Any = None

    def start(self) -> None:
        if settings.enabled:
            loop = self.node.loop
            self._handle = loop.call_later(PUBLISH_S, self._tick)
            arm = _Arm(self.node)
            loop.every_turns(arm.busy)
            loop.before_sleep(arm.sleep)

    def _tick(self) -> None:
        self._handle = self.node.loop.call_later(PUBLISH_S, self._tick)
        self.publish()

    def publish(self) -> None:
        node, board = self.node, self.board
        w, base = board.words, board.metrics_at
        stats = node.loop.statistics()
        values = (
            time.time_ns(),
            stats["turns"],
            int(stats["callback_time"] * 1e9),
            stats["callbacks"],
            int(stats["longest_callback"] * 1e9),
            node.sent,
            node.received,
            node.dead_letters,
            node.overloaded,
            node.shed_tells,
            node.refused_sends,
            node.expired,
            len(node.pending),
            node.local_queued,
            node.held_back,
            len(node.host.cells),
        )
        w[base : base + len(values)] = array.array("q", values)
        activity = (*values[5:7], sum(len(c.mail) for c in node.host.cells.values()))
        if activity != self._last or len(self._seen) != len(node.host.cells):
            self._last = activity
            self._publish_actors()
        self._publish_servers()

    def _publish_actors(self) -> None:
        board, w = self.board, self.board.words
        seen: dict[int, tuple[int, ...]] = {}
        for cell in list(self.node.host.cells.values()):
            at = board.metrics_slot(cell.hand)
            if at < 0:
                continue
            mail = cell.mail
            row = (
                cell.ran,
                cell.asks,
                cell.errors,
                mail.admitted,
                mail.shed,
                mail.expired,
                mail.congested,
                mail.size,
                mail.window,
            )
            seen[cell.hand] = row
            if self._seen.get(cell.hand) == row:
                continue
            w[at : at + len(row)] = array.array("q", row)
            hist = mail.hist
            w[at + _SOJOURN_AT : at + _SOJOURN_AT + len(hist)] = array.array("q", hist)
        self._seen = seen

    def _publish_servers(self) -> None:
        board, w = self.board, self.board.words
        servers = list(_servers)[:MAX_SERVERS]
        for i in range(MAX_SERVERS):
            at = board.metrics_at + _WORKER_WORDS + i * _SERVER_WORDS
            if i >= len(servers):
                if w[at]:
                    w[at : at + _SERVER_WORDS] = array.array("q", bytes(8 * _SERVER_WORDS))
                continue
            s = servers[i]
            name = str(s.name).encode("utf-8", "replace")[: 8 * _SERVER_NAME_WORDS - 1]
            raw = name + bytes(8 * _SERVER_NAME_WORDS - len(name))
            w[at : at + _SERVER_NAME_WORDS] = memoryview(raw).cast("q")
            t = s.totals()
            row = [t.get(f, 0) for f in SERVER_FIELDS]
            start = at + _SERVER_NAME_WORDS
            w[start : start + len(row)] = array.array("q", row)


def start_publisher(node: Node) -> Publisher:
    """In a worker, once its node exists: publish every PUBLISH_S seconds."""
    pub = Publisher(node)
    pub.start()
    return pub


# --- the supervisor's side -------------------------------------------------------------


def read_worker(board: Board) -> dict[str, Any]:
    """What a worker last published about itself, its actors (by id) and servers."""
    w, base = board.words, board.metrics_at
    out: dict[str, Any] = {name: w[base + i] for i, name in enumerate(WORKER_FIELDS)}
    actors = []
    for slot, aid in board.actor_slots():
        at = actor_words_at(base, slot)
        arow: dict[str, Any] = {"id": aid}
        for i, name in enumerate(ACTOR_FIELDS):
            arow[name] = w[at + i]
        arow["service_buckets"] = list(w[at + _SERVICE_AT : at + _SOJOURN_AT])
        arow["sojourn_buckets"] = list(
            w[at + _SOJOURN_AT : at + _SOJOURN_AT + len(SOJOURN_BUCKETS) + 1]
        )
        actors.append(arow)
    out["actors"] = actors
    servers = []
    for i in range(MAX_SERVERS):
        at = base + _WORKER_WORDS + i * _SERVER_WORDS
        if not w[at]:
            continue
        raw = bytes(w[at : at + _SERVER_NAME_WORDS]).split(b"\0", 1)[0]
        row: dict[str, Any] = {"name": raw.decode("utf-8", "replace")}
        for j, field in enumerate(SERVER_FIELDS):
            row[field] = w[at + _SERVER_NAME_WORDS + j]
        servers.append(row)
    out["servers"] = servers
    return out


def actor_words_at(board_metrics_at: int, slot: int) -> int:
    """The first word of actor ``slot``'s metrics (board.py uses it)."""
    return board_metrics_at + _WORKER_WORDS + MAX_SERVERS * _SERVER_WORDS + slot * ACTOR_WORDS


def quantile(buckets: list[int], bounds: tuple[float, ...], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (the open bucket:
    its lower bound, "at least"); None without samples."""
    total = sum(buckets)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            return bounds[min(i, len(bounds) - 1)]
    return bounds[-1]


def _ring_counts(mesh: Any) -> dict[int, dict[str, int]]:
    """Per mesh node: bytes through the rings into and out of it, and the
    doorbells rung to wake it, read from the rings' shared headers. Only
    slots a sender opened are looked at (reading an untouched slot would
    allocate its pages)."""
    inboxes = getattr(mesh, "inboxes", None)
    if not inboxes:
        return {}
    out = {j: {"ring_bytes_in": 0, "ring_bytes_out": 0, "wakeups": 0} for j in range(len(inboxes))}
    for j, inbox in enumerate(inboxes):
        for sender in inbox.senders():
            st = inbox.ring(sender).stats()
            out[j]["ring_bytes_in"] += st["head"]
            out[j]["wakeups"] += st["doorbells"]
            if sender in out:
                out[sender]["ring_bytes_out"] += st["head"]
    return out


def _cpu_seconds(pid: int | None) -> float | None:
    import psutil

    if not pid:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def runtime_view(sup: Any) -> dict[str, Any]:
    """Every worker's published counters with its actors named, as plain data
    (for the stats op and the Prometheus collector). Reads shared memory and
    /proc only: asks no worker, and is safe from another thread (copies of
    the supervisor's tables are taken first)."""
    entries = dict(sup.directory.entries)  # a copy: the loop thread changes it
    rings = _ring_counts(sup.mesh)
    workers = []
    for proc in list(sup.workers):
        w = read_worker(proc.board)
        for a in w["actors"]:
            entry = entries.get(a["id"])
            a["label"] = entry.label() if entry is not None else f"#{a['id'] & 0xFFFFFFFF}"
            a["name"] = entry.name if entry is not None else None
            a["cls"] = entry.cls if entry is not None else None
            a["worker"] = proc.index
        w.update(
            worker=proc.index,
            pid=proc.pid,
            cpu=proc.cpu,
            node=proc.numa_node,
            restarts=proc.restarts,
            stalled=proc.stalled,
            stalls=sup_stalls(sup).get(proc.index, 0),
            cpu_seconds=_cpu_seconds(proc.pid if not proc.exited else None),
            **rings.get(proc.index, {}),
        )
        workers.append(w)
    return {"time": time.time(), "publish_interval": PUBLISH_S, "workers": workers}


_stalls: weakref.WeakKeyDictionary[Any, dict[int, int]] = weakref.WeakKeyDictionary()


def stalled(sup: Any, worker: int) -> None:
    """The supervisor found ``worker`` stalled (counted for the metrics)."""
    counts = _stalls.setdefault(sup, {})
    counts[worker] = counts.get(worker, 0) + 1


def sup_stalls(sup: Any) -> dict[int, int]:
    return _stalls.get(sup, {})
