"""The kv benchmark: redis-benchmark against examples/kvserver and its peers, in one run.

    python -m bench kv [--workers N|all] [--payload 64] [--requests 200000]
                       [--clients 50] [--pipelines 1,16] [--repeat 3] [--json]

Contenders, all started first, then driven in turn (one client run each per
repetition, so the VM's drift falls on all of them alike) by the same
``redis-benchmark -t set,get -n N -c C -P P -d PAYLOAD``:

- ``actorq-kv``: ``python -m examples.kvserver`` with ``--workers`` workers;
- ``actorq-kv-hop`` (on request): the same with ``KVSERVER_MOVE=0``: a
  connection stays on the worker that accepted it and every request for
  another worker's key hops there and back (the design before connections
  moved to their keys' worker);
- ``actorq-kv-1w`` (on request): the same with one worker;
- ``asyncio-resp``: ``bench/resp_asyncio.py``, one process, same parser and
  command table (so the difference is the runtime, not the protocol code);
- ``uvloop-resp``: the same on uvloop, where installed;
- ``redis-server``: where installed (``apt-get install redis-server``).

Per contender and case (SET/GET x pipeline depth): requests/s (median of
``--repeat`` runs, with spread), p50 and p99 latency as redis-benchmark
reports them, and the CPU the server and the client used (cores busy:
CPU seconds over wall seconds; 1.0 = one core flat out). On a 2-CPU machine
the client competes with the server for the CPUs; the CPU columns show it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import psutil

from ._common import Result, machine_info, median_spread

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen[str], timeout: float = 60.0) -> int:
    """Read the server's stdout until ``listening on HOST:PORT``; return the port."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("listening on "):
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"server {proc.args} did not start: {''.join(seen)[-2000:]}")


def wait_connectable(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing accepts connections on 127.0.0.1:{port}")


@contextlib.contextmanager
def server(contender: str, workers: str) -> Iterator[tuple[int, psutil.Process]]:
    """Start one contender; yield its port and process (whose children count too)."""
    py = sys.executable
    stdout = subprocess.PIPE
    env = dict(os.environ)
    if contender in ("actorq-kv", "actorq-kv-hop", "actorq-kv-1w"):
        argv = [py, "-m", "examples.kvserver", "--port", "0"]
        if contender == "actorq-kv-1w":
            argv += ["--workers", "1"]
        elif workers != "all":
            argv += ["--workers", workers]
        if contender == "actorq-kv-hop":
            env["KVSERVER_MOVE"] = "0"
    elif contender == "asyncio-resp":
        argv = [py, "-m", "bench", "resp_asyncio", "--port", "0"]
    elif contender == "uvloop-resp":
        argv = [py, "-m", "bench", "resp_asyncio", "--port", "0", "--uvloop"]
    elif contender == "redis-server":
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        stdout = subprocess.DEVNULL
    else:
        raise ValueError(f"unknown contender {contender!r}")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    try:
        if contender == "redis-server":
            wait_connectable(port)
        else:
            port = wait_listening(proc)
            wait_connectable(port)
        yield port, psutil.Process(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def tree_cpu(p: psutil.Process) -> float:
    """CPU seconds used so far by a process and its live children."""
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = q.cpu_times()
            total += t.user + t.system
    return total


def run_client(port: int, requests: int, clients: int, pipeline: int,
               payload: int, keyspace: int = 0) -> tuple[dict[str, dict[str, float]], float, float]:
    """One redis-benchmark run: per-test CSV figures, client CPU seconds, wall seconds."""
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
            "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-d", str(payload),
            "--csv"]
    if keyspace:
        argv += ["-r", str(keyspace)]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.monotonic() - t0
    # communicate() reaped it; the rusage of reaped children is ours to read.
    usage = _child_cpu()
    if proc.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({proc.returncode}): {err.decode()[-500:]}")
    rows = {}
    for row in csv.DictReader(io.StringIO(out.decode())):
        rows[row["test"]] = {k: float(v) for k, v in row.items() if k != "test"}
    return rows, usage, wall


_last_child_cpu = 0.0


def _child_cpu() -> float:
    """CPU seconds of children reaped since the last call."""
    global _last_child_cpu
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = ru.ru_utime + ru.ru_stime
    used, _last_child_cpu = now - _last_child_cpu, now
    return used


def measure(contenders: list[str], args: argparse.Namespace) -> list[dict[str, object]]:
    """Every contender's figures, measured interleaved.

    All servers are started first (an idle one sleeps in epoll and costs
    nothing), then each repetition runs the client once against each
    contender in turn: on a shared VM whose speed drifts minute to minute,
    the drift then lands on every contender alike instead of on whichever
    ran during a slow minute, and the ratios stay comparable.
    """
    rows: list[dict[str, object]] = []
    with contextlib.ExitStack() as stack:
        servers = {c: stack.enter_context(server(c, args.workers)) for c in contenders}
        for pipeline in args.pipelines:
            runs: dict[str, dict[str, list[dict[str, float]]]] = {
                c: {"SET": [], "GET": []} for c in contenders}
            for _ in range(args.repeat):
                for c, (port, proc) in servers.items():
                    _child_cpu()
                    s0 = tree_cpu(proc)
                    figures, client_cpu, wall = run_client(port, args.requests, args.clients,
                                                           pipeline, args.payload, args.keyspace)
                    server_cpu = tree_cpu(proc) - s0
                    for test in runs[c]:
                        f = dict(figures[test])
                        # Both tests share one client run: CPU is reported per run.
                        f["server_cores"] = server_cpu / wall
                        f["client_cores"] = client_cpu / wall
                        runs[c][test].append(f)
            for c in contenders:
                for test, rs in runs[c].items():
                    rps, spread = median_spread([r["rps"] for r in rs])
                    mid = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
                    res = Result(c, args.payload, rps, mid["p50_latency_ms"] * 1000,
                                 mid["p99_latency_ms"] * 1000, spread)
                    rows.append({**asdict(res), "case": f"{test} -P {pipeline}",
                                 "server_cores": round(mid["server_cores"], 2),
                                 "client_cores": round(mid["client_cores"], 2)})
    order = {c: i for i, c in enumerate(contenders)}
    rows.sort(key=lambda r: order[str(r["contender"])])
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench kv", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="2", help="actorq-kv workers: a number or 'all'")
    ap.add_argument("--payload", type=int, default=64, help="value size in bytes (-d)")
    ap.add_argument("--requests", type=int, default=200_000, help="requests per test (-n)")
    ap.add_argument("--clients", type=int, default=50, help="connections (-c)")
    ap.add_argument("--pipelines", default="1,16", help="pipeline depths (-P), comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keyspace", type=int, default=0,
                    help="random keys out of this many (-r); default 0: redis-benchmark's one "
                    "fixed key, which lives on one shard, so half the connections hop workers")
    ap.add_argument("--contenders", default="actorq-kv,asyncio-resp,uvloop-resp,redis-server",
                    help="comma-separated; also actorq-kv-hop (connections never move "
                    "between workers) and actorq-kv-1w (one worker)")
    ap.add_argument("--json", action="store_true", help="print the JSON list of results")
    args = ap.parse_args(argv)
    args.pipelines = [int(p) for p in args.pipelines.split(",")]
    # SIGTERM (from `bench matrix` on timeout, or a user) unwinds like Ctrl-C, so
    # the server under test is stopped by server()'s finally, not left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("redis-benchmark") is None:
        print("bench kv: redis-benchmark not found; install Debian's redis-tools "
              "(apt-get install redis-tools)", file=sys.stderr)
        return 2
    contenders = []
    for c in args.contenders.split(","):
        if c == "redis-server" and shutil.which("redis-server") is None:
            print("bench kv: redis-server not installed; skipping it", file=sys.stderr)
            continue
        if c == "uvloop-resp" and not _has("uvloop"):
            print("bench kv: uvloop not installed; skipping it", file=sys.stderr)
            continue
        contenders.append(c)
    rows = measure(contenders, args)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    keys = f" -r {args.keyspace}" if args.keyspace else ""
    print(f"kv: redis-benchmark -t set,get -n {args.requests} -c {args.clients} -d {args.payload}"
          f"{keys};"
          f" actorq-kv workers={args.workers}; {machine_info()}")
    print(f"{'contender':<14}{'case':<11}{'req/s':>11}{'vs actorq':>10}{'p50 µs':>9}"
          f"{'p99 µs':>9}{'spread':>8}{'srv cores':>10}{'cli cores':>10}")
    base = {r["case"]: r["msgs_per_s"] for r in rows if r["contender"] == "actorq-kv"}
    for r in rows:
        ratio = (r["msgs_per_s"] / base[r["case"]]) if r["case"] in base else float("nan")
        print(f"{r['contender']:<14}{r['case']:<11}{r['msgs_per_s']:>11,.0f}{ratio:>10.2f}"
              f"{r['rtt_p50_us']:>9.0f}{r['rtt_p99_us']:>9.0f}{r['spread']:>8.2f}"
              f"{r['server_cores']:>10.2f}{r['client_cores']:>10.2f}")
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
