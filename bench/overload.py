"""Overload: what servers and actors do with more traffic than they can serve.

    python -m bench overload [--json] [--quick] [--contenders actorq-kv,asyncio-resp,redis-server]
                             [--duration 5] [--senders 2] [--conns 4]

Three parts (the issue "Fail gracefully under unexpected traffic"):

``kv`` (open loop). The capacity of each server is measured first with a
closed-loop burst (every connection keeps ``--depth`` requests in flight).
Then an open-loop generator offers 0.5x, 1x, 2x, 5x and 10x of it: ``--senders``
processes, each with ``--conns`` connections, schedule pipelined RESP
``SET``/``GET`` requests (64-byte values, 10,000 keys, half each) at a fixed
rate whatever the replies do, and each reply's latency counts from the time its
request was *scheduled*, not from when the socket took it. A client that
slows down with the server hides the overload (coordinated omission); this one
keeps the requests it cannot write queued on its side, so their wait shows.
Per step: offered rate, goodput (replies per second in the step, after a
short warm-up), p50/p99 latency of the answered requests, error replies,
requests written but unanswered within the grace period, requests never
written (the server's TCP window was shut), and the peak RSS of the server's
processes (VmRSS summed over the process and its children, sampled every
50 ms).

``greedy`` (per contender, on the same server): ten polite clients, each one
request at a time with a 2 ms pause between, alone ("quiet") and then beside
four greedy clients that keep 1,000 requests each in flight. Polite p50/p99
and rate, and their ratios to quiet.

``actor``: a flooding actor tells as fast as it can (awaiting each tell, so
it parks while the way is congested) to a slow async actor (each message
awaits a 1 ms sleep), while ``main`` asks that actor ``ping`` (which does the
same 1 ms of work) one at a time. The polite asker's p50/p99 alone and beside
the flood, with ``fair_queueing`` on and off, and the slow actor's admission
figures from stats (shed, final window, queued, expired, sojourn p50/p99).

Targets (reported as met / not met; nothing here asserts them): goodput at
10x >= 90% of the best step (no congestion collapse); polite p99 <= 3x quiet
beside a greedy neighbour (kv, and actors with fair queueing); peak RSS flat
(<= 1.25x the server's peak at 0.5x/1x, or quiet) in every hostile run.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import multiprocessing
import os
import random
import select
import shutil
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import psutil

import actorq

from ._common import Result, machine_info

STEPS = (0.5, 1.0, 2.0, 5.0, 10.0)
PAYLOAD = 64
KEYS = 10_000
BLOB_REQUESTS = 4096
RSS_FLAT = 1.25  # a hostile run's peak RSS may be this much of the calm one's
COLLAPSE = 0.90  # goodput at 10x must stay at least this share of the best step
POLITE_P99 = 3.0  # polite p99 beside a greedy neighbour, at most this times quiet
SNDBUF = 256 << 10  # client socket send buffer
CONTENDERS = ("actorq-kv", "asyncio-resp", "redis-server")


# --------------------------------------------------------------------- RESP


def _cmd(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def request_blob(seed: int, n: int = BLOB_REQUESTS) -> tuple[bytes, list[int]]:
    """``n`` requests (SET and GET alternating on random keys) and the byte
    offset of each one's start, for the blob written twice in a row
    (``2n + 1`` offsets), so any run of up to ``n`` requests is one slice."""
    rnd = random.Random(seed)
    value = b"v" * PAYLOAD
    reqs = []
    for i in range(n):
        key = b"key:%06d" % rnd.randrange(KEYS)
        reqs.append(_cmd(b"SET", key, value) if i % 2 == 0 else _cmd(b"GET", key))
    offsets = [0]
    for r in reqs + reqs:
        offsets.append(offsets[-1] + len(r))
    return b"".join(reqs), offsets


class Replies:
    """Counts complete RESP2 replies (simple, error, integer, bulk) in a byte stream."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> tuple[int, int]:
        """(good replies, error replies) completed by ``data``."""
        buf = self.buf + data if self.buf else data
        n, pos, ok, err = len(buf), 0, 0, 0
        find = buf.find
        while pos < n:
            end = find(b"\r\n", pos)
            if end < 0:
                break
            kind = buf[pos]
            if kind == 36:  # '$' bulk string
                size = int(buf[pos + 1 : end])
                if size >= 0:
                    stop = end + 4 + size
                    if stop > n:
                        break
                    end = stop - 2
                ok += 1
            elif kind == 45:  # '-' error
                err += 1
            else:
                ok += 1
            pos = end + 2
        self.buf = buf[pos:]
        return ok, err


class Hist:
    """Latencies in log buckets (2.5% wide), weighted; mergeable as plain dicts."""

    SCALE = 40.0

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = {}
        self.merge(counts or {})  # keys are strings once through JSON

    def add(self, seconds: float, n: int = 1) -> None:
        k = int(math.log1p(max(0.0, seconds) * 1e6) * self.SCALE)
        self.counts[k] = self.counts.get(k, 0) + n

    def merge(self, other: dict[Any, int]) -> None:
        for k, n in other.items():
            k = int(k)
            self.counts[k] = self.counts.get(k, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def pct(self, q: float) -> float | None:
        """Microseconds at percentile ``q`` (upper edge of its bucket)."""
        total = self.total
        if not total:
            return None
        rank, seen = q / 100 * total, 0
        for k in sorted(self.counts):
            seen += self.counts[k]
            if seen >= rank:
                return math.expm1((k + 1) / self.SCALE)
        return None


def _connect(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # what the server has not taken stays on our side, where it is counted as
        # not sent, rather than in megabytes of autotuned kernel buffers
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        s.setblocking(False)
        socks.append(s)
    return socks


_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _own_cpu() -> float:
    """CPU seconds this (forked, so freshly counted) load generator process used."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _sleep_until(t: float) -> None:
    dt = t - time.monotonic()
    if dt > 0:
        time.sleep(dt)


# ------------------------------------------------------------ open loop


class _OpenConn:
    __slots__ = (
        "answered",
        "batches",
        "blocked",
        "dead",
        "errors",
        "owed",
        "parser",
        "rate",
        "scheduled",
        "sent",
        "sock",
        "t0",
        "written",
    )

    def __init__(self, sock: socket.socket, t0: float, rate: float) -> None:
        self.sock = sock
        self.parser = Replies()
        self.t0 = t0  # request j is scheduled at t0 + j / rate
        self.rate = rate
        self.scheduled = 0  # requests due so far
        self.sent = 0  # bytes written
        self.owed = 0  # bytes due but not yet written
        self.blocked = False
        self.batches: deque[list[int]] = deque()  # [first request index, count] awaiting replies
        self.answered = 0
        self.errors = 0
        self.dead = False
        self.written = 0  # whole requests written, known once the step is over


def open_loop(port: int, conns: int, rate: float, start: float, duration: float,
              warm: float, grace: float, seed: int) -> dict[str, Any]:
    """Offer ``rate`` requests/s over ``conns`` connections from ``start`` for ``duration``."""
    blob, offs = request_blob(seed)
    m, size = BLOB_REQUESTS, offs[BLOB_REQUESTS]
    view = memoryview(blob + blob)
    socks = _connect(port, conns)
    ep = select.epoll()
    cs: dict[int, _OpenConn] = {}
    per = rate / conns
    for i, s in enumerate(socks):
        # stagger the connections' schedules evenly inside one period
        cs[s.fileno()] = _OpenConn(s, start + i / rate, per)
        ep.register(s.fileno(), select.EPOLLIN)
    hist = Hist()
    end = start + duration
    counted = 0  # replies inside the goodput window
    w0 = start + warm
    conn_errors = 0
    clock = time.monotonic

    def nbytes(first: int, n: int) -> int:
        i = first % m
        full, rest = divmod(n, m)
        return full * size + offs[i + rest] - offs[i]

    def kill(c: _OpenConn) -> None:
        nonlocal conn_errors
        if not c.dead:
            c.dead, conn_errors = True, conn_errors + 1
            with contextlib.suppress(OSError):
                ep.unregister(c.sock.fileno())

    def push(c: _OpenConn) -> None:
        while c.owed and not c.blocked:
            pos = c.sent % size
            want = min(c.owed, size)
            try:
                k = c.sock.send(view[pos : pos + want])
            except BlockingIOError:
                k = 0
            except _GONE:
                kill(c)
                return
            c.sent += k
            c.owed -= k
            if k < want:
                c.blocked = True
                ep.modify(c.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    def read(c: _OpenConn, now: float) -> None:
        nonlocal counted
        if c.dead:
            return
        try:
            data = c.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except _GONE:
            data = b""
        if not data:
            kill(c)
            return
        ok, err = c.parser.feed(data)
        got = ok + err
        c.answered += ok
        c.errors += err
        if w0 <= now <= end:
            counted += got
        batches, t0, rate = c.batches, c.t0, c.rate
        while got and batches:
            b = batches[0]
            take = min(got, b[1])
            # take consecutive requests: their latencies are evenly spaced; 8 slices
            step = max(1, -(-take // 8))
            j = b[0]
            left = take
            while left:
                k = min(step, left)
                hist.add(now - (t0 + (j + (k - 1) / 2) / rate), k)
                j += k
                left -= k
            b[0] += take
            b[1] -= take
            got -= take
            if not b[1]:
                batches.popleft()

    _sleep_until(start)
    live = list(cs.values())
    while True:
        now = clock()
        if now >= end:
            break
        for c in live:
            if c.dead:
                continue
            due = min(int((now - c.t0) * c.rate) + 1, int((end - c.t0) * c.rate) + 1)
            n = due - c.scheduled
            if n > 0:
                c.batches.append([c.scheduled, n])
                c.owed += nbytes(c.scheduled, n)
                c.scheduled = due
                push(c)
        for fd, ev in ep.poll(0.001):
            c = cs[fd]
            if ev & select.EPOLLOUT and not c.dead:
                c.blocked = False
                ep.modify(fd, select.EPOLLIN)
                push(c)
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                read(c, clock())
    # The step is over: finish the request a partial write cut, forget the rest.
    scheduled = sum(c.scheduled for c in live)
    written = 0
    for c in live:
        full, rem = divmod(c.sent, size)
        idx = bisect.bisect_right(offs, rem) - 1
        n = full * m + idx
        if rem != offs[idx] and not c.dead:
            c.sock.setblocking(True)
            c.sock.settimeout(5)
            try:
                c.sock.sendall(view[rem : offs[idx + 1]])
                n += 1
            except OSError:
                c.dead = True
            c.sock.setblocking(False)
        c.written = n
        written += n
        # batches beyond what was written never reach the server
        keep, acc = deque(), c.answered + c.errors
        for b in c.batches:
            if acc >= n:
                break
            b[1] = min(b[1], n - acc)
            acc += b[1]
            keep.append(b)
        c.batches = keep
        if c.blocked and not c.dead:
            c.blocked = False
            ep.modify(c.sock.fileno(), select.EPOLLIN)
    deadline = end + grace
    while any(not c.dead and c.answered + c.errors < c.written for c in live):
        now = clock()
        if now >= deadline:
            break
        for fd, _ev in ep.poll(min(0.05, deadline - now)):
            read(cs[fd], clock())
    answered = sum(c.answered for c in live)
    errors = sum(c.errors for c in live)
    for s in socks:
        s.close()
    ep.close()
    return {
        "scheduled": scheduled,
        "written": written,
        "answered": answered,
        "errors": errors,
        "unanswered": written - answered - errors,
        "unsent": scheduled - written,
        "in_window": counted,
        "window_s": duration - warm,
        "conn_errors": conn_errors,
        "hist": hist.counts,
        "cpu_s": _own_cpu(),
    }


# ---------------------------------------------------------- closed loop


def closed_loop(port: int, conns: int, depth: int, start: float, duration: float,
                warm: float, grace: float, seed: int, gap: float = 0.0) -> dict[str, Any]:
    """Each connection keeps ``depth`` requests in flight (``gap``: with depth 1, wait
    this long after each reply before the next request). Latency from the send."""
    blob, offs = request_blob(seed)
    m = BLOB_REQUESTS
    socks = _connect(port, conns)
    ep = select.epoll()
    hist = Hist()
    state: dict[int, dict[str, Any]] = {}
    for i, s in enumerate(socks):
        # each connection starts at its own place in the blob
        state[s.fileno()] = {"sock": s, "parser": Replies(), "next": (i * 517) % m,
                             "inflight": deque(), "n": 0, "due": 0.0, "pending": b""}
        ep.register(s.fileno(), select.EPOLLIN)
    end = start + duration
    w0 = start + warm
    counted = answered = errors = conn_errors = 0
    clock = time.monotonic

    def send(st: dict[str, Any], k: int, now: float) -> None:
        nonlocal conn_errors
        i = st["next"]
        data = bytearray()
        while k:
            take = min(k, m - i)
            data += blob[offs[i] : offs[i + take]]
            st["inflight"].append([now, take])
            st["n"] += take
            i = (i + take) % m
            k -= take
        st["next"] = i
        data = st["pending"] + bytes(data) if st["pending"] else bytes(data)
        try:
            w = st["sock"].send(data)
        except BlockingIOError:
            w = 0
        except _GONE:
            conn_errors += 1
            st["dead"] = True
            return
        st["pending"] = data[w:]
        ep.modify(st["sock"].fileno(),
                  select.EPOLLIN | (select.EPOLLOUT if st["pending"] else 0))

    _sleep_until(start)
    now = clock()
    for st in state.values():
        send(st, depth, now)
    waiting: list[dict[str, Any]] = []  # polite connections pausing before their next request
    while True:
        now = clock()
        if now >= end:
            break
        if waiting:
            for st in [st for st in waiting if st["due"] <= now]:
                waiting.remove(st)
                send(st, 1, now)
            timeout = max(0.0, min(st["due"] for st in waiting) - now) if waiting else 0.05
        else:
            timeout = 0.05
        for fd, ev in ep.poll(min(timeout, end - now)):
            st = state[fd]
            if st.get("dead"):
                continue
            if ev & select.EPOLLOUT and st["pending"]:
                try:
                    w = st["sock"].send(st["pending"])
                except BlockingIOError:
                    w = 0
                except _GONE:
                    conn_errors += 1
                    st["dead"] = True
                    continue
                st["pending"] = st["pending"][w:]
                if not st["pending"]:
                    ep.modify(fd, select.EPOLLIN)
            if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = st["sock"].recv(1 << 18)
            except BlockingIOError:
                continue
            except _GONE:
                data = b""
            t = clock()
            if not data:
                conn_errors += 1
                st["dead"] = True
                ep.unregister(fd)
                continue
            ok, err = st["parser"].feed(data)
            got = ok + err
            answered += ok
            errors += err
            if w0 <= t <= end:
                counted += got
            left = got
            inflight = st["inflight"]
            while left and inflight:
                b = inflight[0]
                take = min(left, b[1])
                hist.add(t - b[0], take)
                b[1] -= take
                left -= take
                if not b[1]:
                    inflight.popleft()
            if got and t < end:
                if gap:
                    st["due"] = t + gap
                    waiting.append(st)
                else:
                    send(st, got, t)
    for s in socks:
        s.close()
    ep.close()
    return {"answered": answered, "errors": errors, "in_window": counted,
            "window_s": duration - warm, "conn_errors": conn_errors, "hist": hist.counts,
            "cpu_s": _own_cpu()}


# -------------------------------------------------- processes and memory


def _child(fn: Any, args: tuple[Any, ...], w: Any) -> None:
    try:
        w.send(fn(*args))
    except BaseException as exc:  # report, never hang the parent
        w.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        w.close()


def run_procs(jobs: list[tuple[Any, tuple[Any, ...]]], timeout: float) -> list[dict[str, Any]]:
    """Run each (function, args) in a forked process; their results in order."""
    ctx = multiprocessing.get_context("fork")
    procs = []
    for fn, args in jobs:
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(fn, args, w), daemon=True)
        p.start()
        w.close()
        procs.append((p, r))
    out = []
    for p, r in procs:
        if r.poll(timeout):
            out.append(r.recv())
        else:
            out.append({"error": "load generator did not report in time"})
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    for res in out:
        if "error" in res:
            raise RuntimeError(res["error"])
    return out


def _tree(pid: int) -> list[int]:
    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.Error:
        return [pid]


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssWatch:
    """Samples the summed VmRSS of a process tree every 50 ms; peak per phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pids = _tree(pid)
        self.label: str | None = None
        self.peaks: dict[str, int] = {}
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_tree = 0.0
        while not self._stop.wait(0.05):
            now = time.monotonic()
            if now - last_tree > 0.25:
                self.pids, last_tree = _tree(self.pid), now
            kib = sum(_status_kib(p, "VmRSS:") for p in self.pids)
            self.samples.append((now, kib))
            if self.label is not None:
                self.peaks[self.label] = max(self.peaks.get(self.label, 0), kib)

    @contextlib.contextmanager
    def phase(self, label: str) -> Iterator[None]:
        self.label = label
        try:
            yield
        finally:
            self.label = None

    def now_kib(self) -> int:
        return sum(_status_kib(p, "VmRSS:") for p in _tree(self.pid))

    def hwm_kib(self) -> int:
        return sum(_status_kib(p, "VmHWM:") for p in _tree(self.pid))

    def peak_between(self, t0: float, t1: float) -> int:
        return max((k for t, k in self.samples if t0 <= t <= t1), default=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


# -------------------------------------------------------------- kv part


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hist = Hist()
    for r in results:
        hist.merge(r["hist"])
        for k, v in r.items():
            if k != "hist" and isinstance(v, int | float):
                out[k] = out.get(k, 0) + v
    out["window_s"] = results[0]["window_s"]
    out["hist"] = hist
    return out


def kv_contender(name: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]],
                                                              list[dict[str, Any]]]:
    from .kv import server, tree_cpu

    steps: list[dict[str, Any]] = []
    greedy: list[dict[str, Any]] = []
    d, warm, grace = args.duration, args.warm, args.grace
    timeout = d + grace + 60
    with server(name, "2") as (port, proc):
        watch = RssWatch(proc.pid)
        try:
            idle = watch.now_kib()
            # capacity: a closed-loop burst on the same connections
            with watch.phase("capacity"):
                t = time.monotonic() + 0.3
                cpu0 = tree_cpu(proc)
                res = _merge(run_procs(
                    [(closed_loop, (port, args.conns, args.depth, t, args.capacity_s,
                                    min(warm, args.capacity_s / 4), grace, 100 + i))
                     for i in range(args.senders)], timeout))
                wall = time.monotonic() - t
            capacity = res["in_window"] / res["window_s"]
            cap_cores = f"{(tree_cpu(proc) - cpu0) / wall:.2f}+{res['cpu_s'] / wall:.2f}"
            print(f"{name}: capacity {capacity:,.0f} req/s (closed loop, "
                  f"{args.senders}x{args.conns} connections x {args.depth} deep; "
                  f"srv+cli cores {cap_cores})", file=sys.stderr)
            for mult in args.steps:
                rate = capacity * mult
                label = f"{mult:g}x"
                with watch.phase(label):
                    t = time.monotonic() + 0.3
                    cpu0 = tree_cpu(proc)
                    res = _merge(run_procs(
                        [(open_loop, (port, args.conns, rate / args.senders, t, d, warm, grace,
                                      200 + i)) for i in range(args.senders)], timeout))
                    wall = time.monotonic() - t
                    srv_cores = (tree_cpu(proc) - cpu0) / wall
                hist = res["hist"]
                goodput = res["in_window"] / res["window_s"]
                row = Result(name, PAYLOAD, goodput, hist.pct(50), hist.pct(99), None)
                steps.append({**asdict(row), "case": label, "offered_x": mult,
                              "offered_per_s": round(res["scheduled"] / d),
                              "goodput_per_s": round(goodput), "capacity_per_s": round(capacity),
                              "capacity_cores": cap_cores,
                              "errors": res["errors"], "conn_errors": res["conn_errors"],
                              "unanswered": res["unanswered"], "unsent": res["unsent"],
                              "server_cores": round(srv_cores, 2),
                              "client_cores": round(res["cpu_s"] / wall, 2),
                              "peak_rss_mib": _mib(watch.peaks.get(label))})
                print(f"{name} {label}: offered {res['scheduled'] / d:,.0f}/s goodput "
                      f"{goodput:,.0f}/s p99 {hist.pct(99) or 0:,.0f} µs", file=sys.stderr)
            # greedy neighbours, on the same server
            for case in ("quiet", "greedy"):
                with watch.phase(case):
                    t = time.monotonic() + 0.3
                    jobs: list[tuple[Any, tuple[Any, ...]]] = [
                        (closed_loop, (port, args.polite, 1, t, d, warm, grace, 300, args.gap))]
                    if case == "greedy":
                        jobs.append((closed_loop, (port, args.greedy, args.greedy_depth, t, d,
                                                   warm, grace, 400)))
                    out = run_procs(jobs, timeout)
                polite = out[0]
                hist = Hist(polite["hist"])
                rate = polite["in_window"] / polite["window_s"]
                row = Result(name, PAYLOAD, rate, hist.pct(50), hist.pct(99), None)
                g = out[1] if len(out) > 1 else None
                greedy.append({**asdict(row), "case": case,
                               "polite_errors": polite["errors"] + polite["conn_errors"],
                               "greedy_per_s": None if g is None
                               else round(g["in_window"] / g["window_s"]),
                               "greedy_errors": None if g is None
                               else g["errors"] + g["conn_errors"],
                               "peak_rss_mib": _mib(watch.peaks.get(case))})
            hwm = watch.hwm_kib()
        finally:
            watch.close()
    for r in steps + greedy:
        r["idle_rss_mib"] = _mib(idle)
        r["hwm_rss_mib"] = _mib(hwm)
    quiet = greedy[0]
    for r in greedy:
        r["p50_x_quiet"] = _ratio(r["rtt_p50_us"], quiet["rtt_p50_us"])
        r["p99_x_quiet"] = _ratio(r["rtt_p99_us"], quiet["rtt_p99_us"])
        r["rate_x_quiet"] = _ratio(r["msgs_per_s"], quiet["msgs_per_s"])
    return steps, greedy


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


# ----------------------------------------------------------- actor part


@actorq.actor
class Slow:
    """An async actor that takes about a millisecond a message."""

    def __init__(self) -> None:
        self.done = 0
        self.pings = 0

    async def work(self, i: int) -> None:
        await actorq.sleep(0.001)
        self.done += 1

    async def ping(self) -> int:
        await actorq.sleep(0.001)
        self.pings += 1
        return self.done

    def counts(self) -> list[int]:
        """[work messages run, pings answered]."""
        return [self.done, self.pings]


@actorq.actor
class Flooder:
    async def flood(self, target: actorq.ActorRef, seconds: float) -> list[int]:
        """Tell ``target.work`` as fast as the runtime lets us, for ``seconds``;
        returns [tells sent, tells refused at the sender]."""
        tell = target.work.tell
        sent = refused = 0
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            for _ in range(256):
                try:
                    waiting = tell(sent)
                    if waiting is not None:
                        await waiting  # parks while the way to the target is congested
                except actorq.Overloaded:
                    refused += 1
                sent += 1
        return [sent, refused]


async def _asks(ref: actorq.ActorRef, seconds: float) -> dict[str, Any]:
    ping = ref.ping.with_timeout(10)
    hist, errors, n = Hist(), 0, 0
    clock = time.perf_counter
    t_end = time.monotonic() + seconds
    t_start = time.monotonic()
    while time.monotonic() < t_end:
        t0 = clock()
        try:
            await ping()
        except (actorq.Overloaded, TimeoutError, actorq.RemoteError):
            errors += 1
            continue
        hist.add(clock() - t0)
        n += 1
    return {"hist": hist.counts, "n": n, "errors": errors,
            "rate": n / (time.monotonic() - t_start)}


async def _flood(flooder: actorq.ActorRef, slow: actorq.ActorRef, seconds: float) -> list[int]:
    return list(await flooder.flood.with_timeout(seconds + 30)(slow, seconds))


def _actor_main(seconds: float) -> Any:
    async def main(rt: actorq.Runtime) -> dict[str, Any]:
        slow = await rt.spawn(Slow, cpu=rt.workers[-1])
        flooder = await rt.spawn(Flooder, cpu=rt.workers[0])
        for _ in range(50):  # warm-up
            await slow.ping()
        t0 = time.monotonic()
        quiet = await _asks(slow, seconds)
        before = await slow.counts()
        t1 = time.monotonic()
        # Asked, not told, from a task of main's: nothing waits in the flooder's
        # mailbox meanwhile (a message queued behind a throttled async method is
        # never taken: see the Overload section of bench/RESULTS.md).
        flood = actorq.current_loop().spawn(_flood(flooder, slow, seconds + 0.5))
        await actorq.sleep(0.2)
        t2 = time.monotonic()
        loaded = await _asks(slow, seconds)
        t3 = time.monotonic()
        st = await rt.stats()
        row: dict[str, Any] = {}
        for w in st["workers"]:
            for a in w.get("actors", []):
                if a.get("id") == slow.id:
                    row = dict(a)
        worker = next((w for w in st["workers"] if any(
            a.get("id") == slow.id for a in w.get("actors", []))), {})
        sent, refused = await flood
        t4 = time.monotonic()
        for _ in range(200):  # the flood's leftovers may still fill a window of 1
            try:
                after = await slow.counts()
                break
            except actorq.Overloaded:
                await actorq.sleep(0.05)
        return {"quiet": quiet, "loaded": loaded, "phases": [t0, t1, t2, t3], "slow": row,
                "shed_tells": worker.get("shed_tells"),
                "ran_per_s": (sum(after) - sum(before)) / (t4 - t1),
                "work_ran": after[0] - before[0], "flood_s": t4 - t1,
                "flood_sent": sent, "flood_refused": refused}

    return main


def _actor_child(fq: bool, seconds: float, w: int) -> None:
    rt = actorq.start(_actor_main(seconds), workers=2, fair_queueing=fq, log_level="error")
    result = rt.join(timeout=seconds * 4 + 120)
    os.write(w, json.dumps(result).encode())


def actor_run(fq: bool, seconds: float) -> dict[str, Any]:
    """One runtime in a forked child (its supervisor), so its RSS is its own."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            _actor_child(fq, seconds, w)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    watch = RssWatch(pid)
    data = b""
    try:
        while chunk := os.read(r, 1 << 16):
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
        watch.close()
    if status != 0 or not data:
        raise RuntimeError("the actor overload run failed (see stderr)")
    res = json.loads(data)
    t0, t1, t2, t3 = res["phases"]
    res["rss_quiet_kib"] = watch.peak_between(t0, t1)
    res["rss_flood_kib"] = watch.peak_between(t2, t3)
    return res


def actor_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for fq in (True, False):
        res = actor_run(fq, args.duration)
        q, f = Hist(res["quiet"]["hist"]), Hist(res["loaded"]["hist"])
        s = res["slow"]
        label = f"fair_queueing={'on' if fq else 'off'}"
        for case, h, part, rss in (("quiet", q, res["quiet"], res["rss_quiet_kib"]),
                                   ("flood", f, res["loaded"], res["rss_flood_kib"])):
            row = Result("actorq-actor", None, part["rate"], h.pct(50), h.pct(99), None)
            rows.append({**asdict(row), "case": f"{case}, {label}", "fair_queueing": fq,
                         "flood": case == "flood", "errors": part["errors"],
                         "peak_rss_mib": _mib(rss)})
        fl = rows[-1]
        fl["p50_x_quiet"] = _ratio(fl["rtt_p50_us"], rows[-2]["rtt_p50_us"])
        fl["p99_x_quiet"] = _ratio(fl["rtt_p99_us"], rows[-2]["rtt_p99_us"])
        fl["rate_x_quiet"] = _ratio(fl["msgs_per_s"], rows[-2]["msgs_per_s"])
        for key in ("queued", "window", "admitted", "shed", "expired", "congested",
                    "sojourn_p50_ms", "sojourn_p99_ms"):
            fl[key] = s.get(key)
        fl["shed_tells"] = res["shed_tells"]
        fl["ran_per_s"] = round(res["ran_per_s"])  # the slow actor's goodput in the flood
        fl["work_ran"] = res["work_ran"]
        rows[-2]["ran_per_s"] = round(rows[-2]["msgs_per_s"])  # quiet: only the pings ran
        fl["flood_sent"] = res["flood_sent"]
        fl["flood_refused"] = res["flood_refused"]
        print(f"actor {label}: quiet p99 {rows[-2]['rtt_p99_us'] or 0:,.0f} µs, flood p99 "
              f"{fl['rtt_p99_us'] or 0:,.0f} µs, shed {fl['shed']}, window {fl['window']}",
              file=sys.stderr)
    return rows


# --------------------------------------------------------------- targets


def targets(kv: list[dict[str, Any]], greedy: list[dict[str, Any]],
            actor: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name in dict.fromkeys(r["contender"] for r in kv):
        steps = [r for r in kv if r["contender"] == name]
        best = max(r["goodput_per_s"] for r in steps)
        top = max(steps, key=lambda r: r["offered_x"])
        share = top["goodput_per_s"] / best if best else 0.0
        out.append({"target": f"goodput at {top['offered_x']:g}x >= {COLLAPSE:.0%} of peak",
                    "where": name, "measured": round(share, 3), "limit": COLLAPSE,
                    "met": share >= COLLAPSE,
                    "detail": f"{top['goodput_per_s']:,} of {best:,} req/s; closed-loop "
                              f"capacity {top['capacity_per_s']:,}"})
        g = [r for r in greedy if r["contender"] == name]
        loud = next((r for r in g if r["case"] == "greedy"), None)
        if loud is not None:
            x = loud["p99_x_quiet"]
            out.append({"target": f"polite p99 beside greedy <= {POLITE_P99:g}x quiet",
                        "where": name, "measured": x, "limit": POLITE_P99,
                        "met": x is not None and x <= POLITE_P99,
                        "detail": f"{loud['rtt_p99_us'] or 0:,.0f} vs "
                                  f"{g[0]['rtt_p99_us'] or 0:,.0f} µs"})
        calm = max([r["peak_rss_mib"] or 0 for r in steps if r["offered_x"] <= 1]
                   + [r["peak_rss_mib"] or 0 for r in g if r["case"] == "quiet"])
        hostile = [(r["case"], r["peak_rss_mib"] or 0) for r in steps if r["offered_x"] > 1]
        hostile += [("greedy", r["peak_rss_mib"] or 0) for r in g if r["case"] == "greedy"]
        worst = max(hostile, key=lambda c: c[1]) if hostile else ("-", 0)
        x = worst[1] / calm if calm else None
        out.append({"target": f"peak RSS flat (hostile <= {RSS_FLAT:g}x calm)", "where": name,
                    "measured": None if x is None else round(x, 3), "limit": RSS_FLAT,
                    "met": x is not None and x <= RSS_FLAT,
                    "detail": f"worst {worst[0]} {worst[1]:.1f} MiB vs calm {calm:.1f} MiB"})
    for fq in (True, False):
        rows = [r for r in actor if r["fair_queueing"] is fq]
        if len(rows) < 2:
            continue
        quiet, flood = rows
        where = f"actors, fair_queueing={'on' if fq else 'off'}"
        x = flood["p99_x_quiet"]
        out.append({"target": f"polite p99 beside a flood <= {POLITE_P99:g}x quiet",
                    "where": where, "measured": x, "limit": POLITE_P99,
                    "met": x is not None and x <= POLITE_P99,
                    "detail": f"{flood['rtt_p99_us'] or 0:,.0f} vs "
                              f"{quiet['rtt_p99_us'] or 0:,.0f} µs"})
        calm, loud = quiet["peak_rss_mib"] or 0, flood["peak_rss_mib"] or 0
        x = loud / calm if calm else None
        out.append({"target": f"peak RSS flat (flood <= {RSS_FLAT:g}x quiet)", "where": where,
                    "measured": None if x is None else round(x, 3), "limit": RSS_FLAT,
                    "met": x is not None and x <= RSS_FLAT,
                    "detail": f"{loud:.1f} vs {calm:.1f} MiB"})
    return out


# ------------------------------------------------------------------ main


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_tables(doc: dict[str, Any]) -> None:
    a = doc["args"]
    print(f"overload: {doc['machine']}; load average {doc['loadavg']}")
    print(f"kv open loop: {a['senders']} sender processes x {a['conns']} connections, "
          f"{a['duration']} s per step, SET/GET 1:1, {PAYLOAD} B values, {KEYS} keys; "
          f"1x = closed-loop capacity ({a['depth']} deep per connection):")
    for r in doc["kv"]:
        if r["offered_x"] == 1.0:
            print(f"  {r['contender']}: {r['capacity_per_s']:,} req/s, srv+cli cores "
                  f"{r['capacity_cores']}")
    print(f"{'contender':<14}{'step':>6}{'offered/s':>12}{'goodput/s':>11}{'p50 µs':>11}"
          f"{'p99 µs':>11}{'errors':>8}{'unansw':>8}{'unsent':>12}{'srv+cli cores':>15}"
          f"{'RSS MiB':>9}")
    for r in doc["kv"]:
        cores = f"{_f(r.get('server_cores'), '.2f')}+{_f(r.get('client_cores'), '.2f')}"
        print(f"{r['contender']:<14}{r['case']:>6}{r['offered_per_s']:>12,}"
              f"{r['goodput_per_s']:>11,}{_f(r['rtt_p50_us'], ',.0f'):>11}"
              f"{_f(r['rtt_p99_us'], ',.0f'):>11}{r['errors'] + r['conn_errors']:>8,}"
              f"{r['unanswered']:>8,}{r['unsent']:>12,}{cores:>15}"
              f"{_f(r['peak_rss_mib'], '.1f'):>9}")
    print(f"\ngreedy neighbour: {a['polite']} polite clients (1 at a time, {a['gap'] * 1000:g} ms "
          f"apart) beside {a['greedy']} greedy ones ({a['greedy_depth']} deep)")
    print(f"{'contender':<14}{'case':<8}{'polite/s':>10}{'p50 µs':>10}{'p99 µs':>11}"
          f"{'p50 x':>7}{'p99 x':>7}{'rate x':>7}{'greedy/s':>10}{'errors':>8}{'RSS MiB':>9}")
    for r in doc["greedy"]:
        print(f"{r['contender']:<14}{r['case']:<8}{_f(r['msgs_per_s'], ',.0f'):>10}"
              f"{_f(r['rtt_p50_us'], ',.0f'):>10}{_f(r['rtt_p99_us'], ',.0f'):>11}"
              f"{_f(r['p50_x_quiet'], '.2f'):>7}{_f(r['p99_x_quiet'], '.2f'):>7}"
              f"{_f(r['rate_x_quiet'], '.2f'):>7}{_f(r['greedy_per_s'], ','):>10}"
              f"{r['polite_errors']:>8}{_f(r['peak_rss_mib'], '.1f'):>9}")
    print("\nactors: polite asker (main) beside a flooding teller, slow actor 1 ms/message "
          "(ran/s: messages the slow actor ran per second, pings and work)")
    print(f"{'case':<28}{'asks/s':>8}{'p50 µs':>10}{'p99 µs':>11}{'p99 x':>8}{'ran/s':>7}"
          f"{'shed':>11}{'window':>8}{'queued':>8}{'soj p99 ms':>11}{'errors':>7}{'RSS MiB':>9}")
    for r in doc["actor"]:
        print(f"{r['case']:<28}{_f(r['msgs_per_s'], ',.0f'):>8}{_f(r['rtt_p50_us'], ',.0f'):>10}"
              f"{_f(r['rtt_p99_us'], ',.0f'):>11}{_f(r.get('p99_x_quiet'), '.2f'):>8}"
              f"{_f(r.get('ran_per_s'), ','):>7}{_f(r.get('shed'), ','):>11}"
              f"{_f(r.get('window'), ','):>8}"
              f"{_f(r.get('queued'), ','):>8}{_f(r.get('sojourn_p99_ms'), 'g'):>11}"
              f"{r['errors']:>7}{_f(r['peak_rss_mib'], '.1f'):>9}")
    print("\ntargets")
    for t in doc["targets"]:
        print(f"  {'met    ' if t['met'] else 'NOT MET'} {t['target']:<44} {t['where']:<30} "
              f"{_f(t['measured'], 'g'):>7}  ({t['detail']})")
    for s in doc["skipped"]:
        print(f"skipped: {s}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench overload",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    ap.add_argument("--json-out", default=None, help="also write the JSON document here")
    ap.add_argument("--contenders", default=None,
                    help=f"comma-separated among {','.join(CONTENDERS)} (--quick: actorq-kv)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per step / phase")
    ap.add_argument("--capacity-s", type=float, default=3.0, help="closed-loop burst seconds")
    ap.add_argument("--grace", type=float, default=3.0,
                    help="seconds after a step for written requests to be answered")
    ap.add_argument("--senders", type=int, default=2, help="load generator processes")
    ap.add_argument("--conns", type=int, default=4, help="connections per sender process")
    ap.add_argument("--depth", type=int, default=128, help="requests in flight per connection "
                    "while measuring capacity")
    ap.add_argument("--steps", default=",".join(f"{s:g}" for s in STEPS),
                    help="offered load as multiples of capacity")
    ap.add_argument("--polite", type=int, default=10)
    ap.add_argument("--gap", type=float, default=0.002, help="polite pause between requests, s")
    ap.add_argument("--greedy", type=int, default=4)
    ap.add_argument("--greedy-depth", type=int, default=1000)
    ap.add_argument("--no-actor", action="store_true", help="skip the actor-level part")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.capacity_s, args.grace = 0.5, 0.5, 1.0
    args.warm = min(0.5, args.duration / 5)
    args.steps = [float(s) for s in args.steps.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = (args.contenders or ("actorq-kv" if args.quick else ",".join(CONTENDERS))).split(",")
    skipped = []
    if "redis-server" in names and shutil.which("redis-server") is None:
        names.remove("redis-server")
        skipped.append("redis-server (not installed)")
        print("bench overload: redis-server not installed; skipping it", file=sys.stderr)
    kv: list[dict[str, Any]] = []
    greedy: list[dict[str, Any]] = []
    for name in names:
        s, g = kv_contender(name, args)
        kv += s
        greedy += g
    actor = [] if args.no_actor else actor_rows(args)
    doc = {
        "machine": machine_info(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "args": {k: getattr(args, k) for k in ("duration", "senders", "conns", "depth", "steps",
                                               "polite", "gap", "greedy", "greedy_depth",
                                               "quick")},
        "kv": kv,
        "greedy": greedy,
        "actor": actor,
        "targets": targets(kv, greedy, actor),
        "skipped": skipped,
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=1)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print_tables(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

