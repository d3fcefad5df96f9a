"""Counters a runtime keeps about itself, cheap enough to stay on.

Where they live: in each worker's board (board.py), an anonymous shared
mapping made before the fork, written only by that worker and read by the
supervisor without asking it (``actorq stats``/``top`` and the Prometheus
endpoint read them there, so a busy or stalled worker is not disturbed, and
its last numbers are still there).

What a message costs (host.py's fast path): one increment of a Python int
on the actor's cell and a bit test; one message in ``SAMPLE`` (64) is timed,
and only that one touches shared memory (its service-time bucket and sum).
Measured: about 4 % of a delivered tell's CPU time (bench/RESULTS.md,
"Metrics"). Records sent are counted per worker, not per actor: attributing
them to the actor cost another 8 %. Everything else is copied into the board by
the worker itself every ``PUBLISH_S`` seconds, O(actors that ran) per tick
and O(1) when nothing happened: mailbox depth, admission window,
admitted/shed/expired counts and the sojourn histogram (admission.py keeps
those already), the loop's turns and busy time, the node's counters, and the
connection servers' (net/server.py). So the supervisor's numbers trail the
worker's by at most ``PUBLISH_S``.

Histograms have fixed buckets: service time ``SERVICE_BUCKETS`` (1 µs to
10 s, sync methods, sampled), sojourn time admission.py's ``BUCKETS`` (time
messages that had to queue waited in the mailbox; ones run at once are not
in it).

``metrics = false`` in the config stops the timing and the publishing (the
counting increments stay: they are a few nanoseconds).
"""

from __future__ import annotations

import array
import bisect
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
SAMPLE = 64  # one message in SAMPLE is timed (a power of two)
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

    @property
    def sample_mask(self) -> int:
        # ``ran & mask`` is 0 once in SAMPLE messages; -1 never lets it be 0
        return SAMPLE - 1 if self.enabled else -1


settings = Settings()


# --- the worker's side ---------------------------------------------------------------


def timed(cell: Cell, t0: int) -> None:
    """A sampled message of ``cell`` ran from ``t0`` (perf_counter_ns) until now."""
    ns = _ns() - t0
    board = cell.node.board_slots
    base = board.metrics_slot(cell.hand)
    if base < 0:
        return
    w = board.words
    w[base + _SAMPLES] += 1
    w[base + _SUM] += ns
    w[base + _SERVICE_AT + bisect.bisect_left(_SERVICE_NS, ns)] += 1


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
            self._handle = self.node.loop.call_later(PUBLISH_S, self._tick)

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


def _ring_counts(mesh: Any, index: int) -> dict[str, int]:
    """Bytes through the rings into and out of mesh node ``index``, and the
    doorbells rung to wake it: read from the rings' shared headers."""
    inboxes = getattr(mesh, "inboxes", None)
    if not inboxes or index >= len(inboxes):
        return {}
    into = [ring.stats() for ring in inboxes[index].rings.values()]
    out_of = [ib.rings[index].stats() for j, ib in enumerate(inboxes) if j != index]
    return {
        "ring_bytes_in": sum(s["head"] for s in into),
        "ring_bytes_out": sum(s["head"] for s in out_of),
        "wakeups": sum(s["doorbells"] for s in into),
    }


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
            **_ring_counts(sup.mesh, proc.index),
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
