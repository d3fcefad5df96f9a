"""The embed benchmark: calling actors from outside processes, against the peers.

    python -m bench embed [--calls 20000] [--seconds 3] [--connections 32]
                          [--repeat 3] [--json]

One run, side by side, from this (outside) process:

- **asks**: p50/p99 latency and calls/s of one small call (a counter's
  ``add(1)``), blocking with 1 in flight and asyncio with 1 and 64 in
  flight, through
  - ``actorq-direct``: ``actorq.connect`` on its direct channel (the default),
  - ``actorq-zmq``: ``actorq.connect(..., direct=False)``, through the supervisor,
  - ``redis-py``: ``INCR`` against a ``redis-server`` started on a free
    loopback port (``/usr/bin/redis-server``), redis-py and redis.asyncio,
  - ``mp-manager``: a ``multiprocessing.Manager`` proxy of a counter object,
  - ``ray``: an actor handle, where Ray is installed (the row says when not);
- **web**: requests/s of ``examples/webapp`` (one uvicorn worker beside an
  ``actorq run`` runtime of one worker) under ``bench/httpload.py``, for
  handlers doing nothing (``/noop``), one actor ask (``/ask``) and one Redis
  ``INCR`` (``/redis``).

The servers (actorq's worker, redis-server, the Manager's process) are
pinned to one CPU and this process to another, so every contender crosses
the same two cores. Medians of ``--repeat`` runs. Targets (issue 13): outside ask p50 <= 30 us
and >= 3x redis-py's calls/s; a handler with one ask >= 0.9x the no-op
handler's req/s and ahead of the Redis handler. ``--json`` prints the rows
and the ratios as one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.managers import BaseManager
from typing import Any

from examples.webapp.serve import runtime, uvicorn_beside_runtime

from ._common import machine_info, median_spread, percentile, pin, two_cpus
from .httpload import load
from .kv import free_port, wait_connectable

REDIS_SERVER = "/usr/bin/redis-server"


# --- one contender's figures -------------------------------------------------------


def blocking(call: Callable[[int], Any], n: int) -> dict[str, float]:
    """``call(1)`` n times, one at a time."""
    for _ in range(min(1000, n // 10)):  # warm up (channels, caches)
        call(1)
    lat = []
    clock = time.perf_counter
    began = clock()
    for _ in range(n):
        t = clock()
        call(1)
        lat.append(clock() - t)
    return _figures(lat, clock() - began)


async def in_flight(call: Callable[[], Awaitable[Any]], n: int, width: int) -> dict[str, float]:
    for _ in range(min(500, n // 10)):
        await call()
    lat: list[float] = []
    clock = time.perf_counter

    async def lane(k: int) -> None:
        for _ in range(k):
            t = clock()
            await call()
            lat.append(clock() - t)

    began = clock()
    await asyncio.gather(*(lane(n // width) for _ in range(width)))
    return _figures(lat, clock() - began)


def _figures(lat: list[float], wall: float) -> dict[str, float]:
    lat.sort()
    return {
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
        "calls_s": len(lat) / wall,
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in runs[0]:
        out[key], spread = median_spread([r[key] for r in runs])
        if key == "calls_s":
            out["spread"] = spread
    return out


# --- peers ------------------------------------------------------------------------------


class _Count:
    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> int:
        self.value += n
        return self.value


class _Manager(BaseManager):
    pass


_Manager.register("Count", _Count)


def pin_pid(pid: int, cpu: int) -> None:
    """Pin another process (a peer's server) to ``cpu``, as actorq's worker is."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {cpu})


@contextlib.contextmanager
def redis_server(cpu: int) -> Iterator[int | None]:
    if not os.path.exists(REDIS_SERVER):
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [
            *(REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
    )
    pin_pid(proc.pid, cpu)
    try:
        wait_connectable(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


# --- the runs -----------------------------------------------------------------------------


def ask_rows(
    runtime_dir: str, redis_port: int | None, calls: int, repeat: int, server_cpu: int
) -> list[dict]:
    """Every contender once per round, ``repeat`` rounds (interleaved, so a slow
    phase of a shared machine hits them all alike); the median of each."""
    import actorq

    loop = asyncio.new_event_loop()
    cases: list[tuple[str, str, int, Callable[[], dict[str, float]]]] = []
    closers: list[Callable[[], Any]] = []
    skipped: list[dict[str, Any]] = []

    def asyncio_cases(name: str, call: Callable[[], Awaitable[Any]], n: int) -> None:
        for width in (1, 64):
            cases.append(
                (
                    name,
                    "asyncio",
                    width,
                    lambda w=width: loop.run_until_complete(in_flight(call, n, w)),
                )
            )

    for direct, name in ((True, "actorq-direct"), (False, "actorq-zmq")):
        n = calls if direct else calls // 4
        client = actorq.connect(runtime_dir, direct=direct)
        closers.append(client.close)
        add_one = client.lookup("hits").add
        cases.append((name, "blocking", 1, lambda f=add_one, n=n: blocking(f, n)))
        aclient = actorq.connect_async(runtime_dir, direct=direct)
        closers.append(aclient.close)
        ahits = loop.run_until_complete(aclient.lookup("hits"))
        asyncio_cases(name, lambda h=ahits: h.add(1), n)

    if redis_port is not None:
        import redis
        import redis.asyncio

        r = redis.Redis(port=redis_port)
        closers.append(r.close)
        cases.append(("redis-py", "blocking", 1, lambda: blocking(r.incr, calls)))
        ar = redis.asyncio.Redis(port=redis_port, max_connections=64)
        closers.append(lambda: loop.run_until_complete(ar.aclose()))
        asyncio_cases("redis-py", lambda: ar.incr("k"), calls)
    else:
        skipped.append({"contender": "redis-py", "mode": f"skipped: no {REDIS_SERVER}"})

    manager = _Manager()
    manager.start()
    closers.append(manager.shutdown)
    pin_pid(manager._process.pid, server_cpu)  # type: ignore[attr-defined]
    count = manager.Count()  # type: ignore[attr-defined]
    cases.append(("mp-manager", "blocking", 1, lambda: blocking(count.add, calls // 4)))

    try:
        import ray  # noqa: F401
    except ImportError:
        skipped.append({"contender": "ray", "mode": "skipped: Ray is not installed"})
    else:
        skipped.append({"contender": "ray", "mode": "skipped: installed, but not measured yet"})

    try:
        runs: list[list[dict[str, float]]] = [[] for _ in cases]
        for _ in range(repeat):
            for i, (*_, measure) in enumerate(cases):
                runs[i].append(measure())
    finally:
        for close in reversed(closers):
            close()
        loop.close()
    rows: list[dict[str, Any]] = [
        {"contender": name, "mode": mode, "in_flight": width, **_median(r)}
        for (name, mode, width, _), r in zip(cases, runs, strict=True)
    ]
    return rows + skipped


def web_rows(
    runtime_dir: str, redis_port: int | None, seconds: float, connections: int, repeat: int
) -> list[dict]:
    extra = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"} if redis_port else {}
    port = free_port()
    rows = []
    with uvicorn_beside_runtime(runtime_dir, port, web_workers=1, extra_env=extra):
        paths = ["/noop", "/ask"] + (["/redis"] if redis_port else [])
        runs: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(repeat):
            for path in paths:  # interleaved, so a slow phase of the VM hits all alike
                runs[path].append(asyncio.run(load(port, path, seconds, connections)))
        for path in paths:
            med, spread = median_spread(runs[path])
            rows.append({"handler": path, "req_s": med, "spread": spread})
    return rows


def ratios(asks: list[dict], web: list[dict]) -> dict[str, float | None]:
    def find(contender: str, mode: str, width: int) -> dict | None:
        for r in asks:
            if (r["contender"], r["mode"], r.get("in_flight")) == (contender, mode, width):
                return r
        return None

    direct = find("actorq-direct", "blocking", 1)
    redis_b = find("redis-py", "blocking", 1)
    zmq_b = find("actorq-zmq", "blocking", 1)
    req = {r["handler"]: r["req_s"] for r in web}
    return {
        "outside_ask_p50_us": direct["p50_us"] if direct else None,
        "direct_vs_redis_calls": direct["calls_s"] / redis_b["calls_s"]
        if direct and redis_b
        else None,
        "direct_vs_zmq_calls": direct["calls_s"] / zmq_b["calls_s"] if direct and zmq_b else None,
        "ask_vs_noop_handler": req["/ask"] / req["/noop"] if "/ask" in req else None,
        "ask_vs_redis_handler": req["/ask"] / req["/redis"] if "/redis" in req else None,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench embed", description=__doc__)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    # Servers (actorq's worker, redis-server, the Manager's process) on one CPU,
    # the calling process on another: every contender crosses the same cores.
    server_cpu, client_cpu = two_cpus()
    with (
        tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp,
        redis_server(server_cpu) as rport,
    ):
        rtdir = os.path.join(tmp, "rt")
        web = web_rows(rtdir, rport, args.seconds, args.connections, args.repeat)
        rtdir2 = os.path.join(tmp, "rt2")
        with runtime(rtdir2, cpus=str(server_cpu)):
            pin(client_cpu)  # after starting it: a child inherits the affinity
            asks = ask_rows(rtdir2, rport, args.calls, args.repeat, server_cpu)
    doc = {
        "machine": machine_info(),
        "asks": asks,
        "web": web,
        "ratios": ratios(asks, web),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    lines = [
        "| contender | form | in flight | p50 µs | p99 µs | calls/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["asks"]:
        if "calls_s" not in r:
            lines.append(f"| {r['contender']} | {r['mode']} | | | | |")
            continue
        lines.append(
            f"| {r['contender']} | {r['mode']} | {r['in_flight']} | {r['p50_us']:.1f} "
            f"| {r['p99_us']:.1f} | {r['calls_s']:,.0f} (±{r['spread'] * 50:.0f}%) |"
        )
    lines += ["", "| handler | req/s |", "|---|---|"]
    for r in doc["web"]:
        lines.append(f"| `{r['handler']}` | {r['req_s']:,.0f} (±{r['spread'] * 50:.0f}%) |")
    lines += [""] + [
        f"- {k}: {'n/a' if v is None else f'{v:.2f}'}" for k, v in doc["ratios"].items()
    ]
    return "\n".join(lines)
