"""Loop overhead per event: actorq's loop against asyncio's default loop and uvloop.

Three workloads, every contender measured in the same run, interleaved
repetition by repetition (the VM's speed drifts, so only ratios within a run
mean anything), all in this one process pinned to one CPU:

- ``echo``: a 64-byte message bounced over a socketpair, both ends served by
  reader callbacks on the same loop (``add_reader`` everywhere: raw loop
  overhead, no transports). ``msgs_per_s`` = round trips/s; p50/p99 are
  round trip times (every 8th trip is timed).
- ``call_soon``: schedule N callbacks, run them all; callbacks/s.
- ``call_soon_chain``: N callbacks, each scheduling the next with
  ``call_soon`` (one in flight: the loop's per-turn cost shows); callbacks/s.
- ``timer0``: N ``call_later(0, ...)``; callbacks/s.
- ``--floor`` adds ``epoll-floor`` to the echo: the same echo on a bare
  epoll loop (a dict of callbacks and nothing else), to show how much of the
  gap to uvloop is a Python loop's floor rather than actorq's bookkeeping.
- ``timer``: N ``call_later(d, ...)`` with distinct positive delays spread
  over 1 ms (far less than the time to run them, so this is heap cost, not
  waiting); callbacks/s.

Besides wall-clock rates it reports events per CPU second of the process
(``time.process_time``): on a shared machine that is the steadier measure of
a loop's cost per event, as time spent descheduled does not count.

Through the asyncio API (``aio_*``; contenders ``actorq-aio`` =
``actorq.loop.new_event_loop()``, ``asyncio`` = the stock selector loop,
``uvloop``), each program identical on every loop, over TCP loopback:

- ``aio_protocol_echo``: 64 B round trips between two ``asyncio.Protocol``
  objects (``create_server``/``create_connection``); round trips/s.
- ``aio_stream_echo``: the same with ``asyncio.start_server`` and
  ``open_connection`` streams (``readexactly``); round trips/s.
- ``aio_sleep0``: 10 tasks each looping on ``await asyncio.sleep(0)``; steps/s.
- ``aio_many_conns``: 100 stream connections, each doing round trips at
  once against one server; round trips/s in all.

``python -m bench loop [--json] [--reps 9] [--workload echo ...] [--floor] [--cpu N]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import select
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bench._common import Result, emit, machine_info, median_spread, percentile, pin

CONTENDERS = ("actorq-loop", "asyncio", "uvloop")
AIO_CONTENDERS = ("actorq-aio", "asyncio", "uvloop")
AIO_WORKLOADS = ("aio_protocol_echo", "aio_stream_echo", "aio_sleep0", "aio_many_conns")
RATIOS: dict[str, dict[str, float]] = {}
CPU_RATES: dict[str, dict[str, float]] = {}
WORKLOADS = ("echo", "call_soon", "call_soon_chain", "timer0", "timer", *AIO_WORKLOADS)


class _Adapter:
    """The handful of loop operations the workloads need, for each contender."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "actorq-loop":
            from actorq.loop import Loop

            self.loop: Any = Loop()
        elif name == "asyncio":
            self.loop = asyncio.SelectorEventLoop()
        else:
            import uvloop

            self.loop = uvloop.new_event_loop()

    def close(self) -> None:
        self.loop.close()


def _echo(ad: _Adapter, n: int) -> tuple[float, list[float]]:
    loop = ad.loop
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    msg = b"x" * 64
    rtts: list[float] = []
    clock = time.perf_counter
    arecv, asend, brecv, bsend = a.recv, a.send, b.recv, b.send
    count = 0
    sent_at = 0.0

    def server() -> None:
        bsend(brecv(4096))  # < 4096 bytes back: drained (the essay's stream rule)

    def client() -> None:
        # Every 8th round trip is timed, so the clock costs all contenders little.
        nonlocal count, sent_at
        arecv(4096)
        count += 1
        if not count & 7:
            rtts.append(clock() - sent_at)
        if count >= n:
            loop.stop()
            return
        if not (count + 1) & 7:
            sent_at = clock()
        asend(msg)

    loop.add_reader(b.fileno(), server)
    loop.add_reader(a.fileno(), client)
    start = clock()
    asend(msg)
    loop.run_forever()
    took = clock() - start
    loop.remove_reader(a.fileno())
    loop.remove_reader(b.fileno())
    a.close()
    b.close()
    return n / took, rtts


def _echo_floor(n: int) -> float:
    """The same echo on the least loop there can be: epoll ET, a dict of
    callbacks, nothing else (no timers, no statistics, no queue). Not a
    contender: the floor that shows what a loop's own bookkeeping costs."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    ep = select.epoll()
    for s in (a, b):
        ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
    msg = b"x" * 64
    arecv, asend, brecv, bsend = a.recv, a.send, b.recv, b.send
    count = 0

    def server() -> None:
        bsend(brecv(4096))

    def client() -> None:
        nonlocal count
        arecv(4096)
        count += 1
        if count < n:
            asend(msg)

    cbs = {a.fileno(): client, b.fileno(): server}
    poll = ep.poll
    start = time.perf_counter()
    asend(msg)
    while count < n:
        for fd, _ev in poll(-1, 256):
            cbs[fd]()
    took = time.perf_counter() - start
    ep.close()
    a.close()
    b.close()
    return n / took


def _storm(ad: _Adapter, n: int, schedule: Callable[[Any, Callable[[], None], int], None]) -> float:
    loop = ad.loop
    left = [n]

    def cb() -> None:
        left[0] -= 1
        if not left[0]:
            loop.stop()

    start = time.perf_counter()
    for i in range(n):
        schedule(loop, cb, i)
    loop.run_forever()
    return n / (time.perf_counter() - start)


def _chain(ad: _Adapter, n: int) -> float:
    loop = ad.loop
    left = [n]

    def cb() -> None:
        left[0] -= 1
        if left[0]:
            loop.call_soon(cb)
        else:
            loop.stop()

    start = time.perf_counter()
    loop.call_soon(cb)
    loop.run_forever()
    return n / (time.perf_counter() - start)


def _call_soon(loop: Any, cb: Callable[[], None], i: int) -> None:
    loop.call_soon(cb)


def _timer0(loop: Any, cb: Callable[[], None], i: int) -> None:
    loop.call_later(0, cb)


def _make_timer(n: int) -> Callable[[Any, Callable[[], None], int], None]:
    # Distinct positive delays over 1 ms, in a scrambled order (so the heap works).
    step = 0.001 / n

    def sched(loop: Any, cb: Callable[[], None], i: int) -> None:
        loop.call_later(step * (1 + (i * 7919) % n), cb)

    return sched


# --- through the asyncio API ---------------------------------------------------------
_MSG = b"x" * 64


def _aio_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "actorq-aio":
        import actorq.loop

        return actorq.loop.new_event_loop()
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    import uvloop

    return uvloop.new_event_loop()  # type: ignore[no-any-return]


class _Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(None)


class _Pinger(asyncio.Protocol):
    """Sends 64 B, waits for 64 B back, n times; ``done`` when finished."""

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.left, self.done, self.got = n, done, 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(_MSG)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got < 64:
            return
        self.got -= 64
        self.left -= 1
        if self.left:
            self.transport.write(_MSG)
        elif not self.done.done():
            self.done.set_result(None)


async def _protocol_echo(n: int) -> float:
    loop = asyncio.get_running_loop()
    echoes: list[_Echo] = []

    def echo() -> _Echo:
        echoes.append(_Echo())
        return echoes[-1]

    server = await loop.create_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    done = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Pinger(n, done), "127.0.0.1", port)
    t0 = time.perf_counter()
    await done
    dt = time.perf_counter() - t0
    transport.close()
    server.close()
    await asyncio.gather(*(e.lost for e in echoes))  # the server side saw EOF and closed
    return n / dt


class _StreamServer:
    """An echo server of 64 B records; ``close()`` also waits for its handlers
    (3.11's ``Server.wait_closed`` does not), so no task outlives the loop."""

    async def start(self) -> int:
        self.handlers: set[asyncio.Task[Any]] = set()
        self.server = await asyncio.start_server(self.echo, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                writer.write(await reader.readexactly(64))
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        await asyncio.gather(*self.handlers)


async def _stream_client(port: int, n: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        writer.write(_MSG)
        await reader.readexactly(64)
    writer.close()
    await writer.wait_closed()


async def _stream_echo(n: int) -> float:
    server = _StreamServer()
    port = await server.start()
    t0 = time.perf_counter()
    await _stream_client(port, n)
    dt = time.perf_counter() - t0
    await server.close()
    return n / dt


async def _many_conns(n: int, conns: int = 100) -> float:
    server = _StreamServer()
    port = await server.start()
    per = max(1, n // conns)
    t0 = time.perf_counter()
    await asyncio.gather(*(_stream_client(port, per) for _ in range(conns)))
    dt = time.perf_counter() - t0
    await server.close()
    return per * conns / dt


async def _sleep0(n: int, tasks: int = 10) -> float:
    per = n // tasks

    async def spin() -> None:
        for _ in range(per):
            await asyncio.sleep(0)

    t0 = time.perf_counter()
    await asyncio.gather(*(spin() for _ in range(tasks)))
    return per * tasks / (time.perf_counter() - t0)


_AIO_PROGRAMS = {
    "aio_protocol_echo": _protocol_echo,
    "aio_stream_echo": _stream_echo,
    "aio_sleep0": _sleep0,
    "aio_many_conns": _many_conns,
}


def _aio(contender: str, workload: str, n: int) -> float:
    loop = _aio_loop(contender)
    try:
        return loop.run_until_complete(_AIO_PROGRAMS[workload](n))
    finally:
        loop.close()


def run(
    workloads: list[str], reps: int, n_echo: int, n_storm: int, floor: bool = False
) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = {}
    for w in workloads:
        aio = w in AIO_WORKLOADS
        contenders = AIO_CONTENDERS if aio else CONTENDERS
        names = contenders + (("epoll-floor",) if floor and w == "echo" else ())
        rates: dict[str, list[float]] = {c: [] for c in names}
        cpu_rates: dict[str, list[float]] = {c: [] for c in names}
        rtts: dict[str, list[float]] = {c: [] for c in names}
        n_events = n_echo if w == "echo" or (aio and w != "aio_sleep0") else n_storm
        for _ in range(reps):
            if "epoll-floor" in names:
                gc.disable()
                try:
                    c0 = time.process_time()
                    rates["epoll-floor"].append(_echo_floor(n_echo))
                    cpu_rates["epoll-floor"].append(n_events / (time.process_time() - c0))
                finally:
                    gc.enable()
            for c in contenders:
                if aio:
                    gc.collect()
                    gc.disable()
                    c0 = time.process_time()
                    try:
                        r = _aio(c, w, n_events)
                    finally:
                        cpu = time.process_time() - c0
                        gc.enable()
                    rates[c].append(r)
                    cpu_rates[c].append(n_events / cpu)
                    continue
                ad = _Adapter(c)
                gc.collect()
                gc.disable()
                c0 = time.process_time()
                try:
                    if w == "echo":
                        r, t = _echo(ad, n_echo)
                        rtts[c].extend(t)
                    elif w == "call_soon":
                        r = _storm(ad, n_storm, _call_soon)
                    elif w == "call_soon_chain":
                        r = _chain(ad, n_storm)
                    elif w == "timer0":
                        r = _storm(ad, n_storm, _timer0)
                    else:
                        r = _storm(ad, n_storm, _make_timer(n_storm))
                finally:
                    cpu = time.process_time() - c0
                    gc.enable()
                    ad.close()
                rates[c].append(r)
                cpu_rates[c].append(n_events / cpu)
        results = []
        for c in names:
            med, spread = median_spread(rates[c])
            p50 = p99 = None
            if rtts[c]:
                s = sorted(rtts[c])
                p50, p99 = percentile(s, 50) * 1e6, percentile(s, 99) * 1e6
            results.append(Result(c, 64 if w == "echo" else None, med, p50, p99, spread))
        out[w] = results
        # Ratios within each repetition (all contenders ran back to back),
        # then their median: steadier than a ratio of medians when the VM's
        # speed drifts between repetitions.
        RATIOS[w] = {
            c: statistics.median(x / a for x, a in zip(rates[c], rates["asyncio"], strict=True))
            for c in names
        }
        # Events per CPU second of this process: what a neighbour's load does
        # not change (time spent descheduled is not counted).
        CPU_RATES[w] = {c: statistics.median(cpu_rates[c]) for c in names}
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench loop", description=__doc__.split("\n")[0])
    p.add_argument(
        "--json", action="store_true", help="JSON records, one per contender and workload"
    )
    p.add_argument("--reps", type=int, default=9, help="repetitions per contender (median)")
    p.add_argument("--workload", action="append", choices=WORKLOADS, help="repeat to pick several")
    p.add_argument("--echo-n", type=int, default=20000, help="round trips per echo repetition")
    p.add_argument("--storm-n", type=int, default=100000, help="callbacks per storm repetition")
    p.add_argument(
        "--floor", action="store_true", help="also run the echo on a bare epoll loop (reference)"
    )
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one)")
    args = p.parse_args(argv)
    # On a shared VM a preempted callback trips the slow-callback warning; it
    # says nothing about the loop here, so keep it off the results.
    logging.getLogger("actorq.loop").setLevel(logging.ERROR)
    import os

    pin(args.cpu if args.cpu is not None else max(os.sched_getaffinity(0)))
    results = run(
        args.workload or list(WORKLOADS), args.reps, args.echo_n, args.storm_n, args.floor
    )
    if args.json:
        records = []
        for w, rs in results.items():
            for r in rs:
                records.append(
                    {"workload": w, **asdict(r), "cpu_msgs_per_s": CPU_RATES[w][r.contender]}
                )
        print(json.dumps(records, indent=1))
        return 0
    info = machine_info()
    print(
        f"# {info['cpu_model']}, {info['cpus']} CPUs, "
        f"Python {info['python']}, kernel {info['kernel']}"
    )
    for w, rs in results.items():
        emit(rs, False, title=f"\n== {w} ==")
        base = next(r for r in rs if r.contender == "asyncio").msgs_per_s or 1.0
        ratios = (f"{r.contender} {(r.msgs_per_s or 0) / base:.2f}x" for r in rs)
        print("ratio of medians to asyncio: " + ", ".join(ratios))
        per_rep = (f"{c} {x:.2f}x" for c, x in RATIOS[w].items())
        print("median of per-repetition ratios: " + ", ".join(per_rep))
        cpu_base = CPU_RATES[w]["asyncio"]
        per_cpu = (f"{c} {x:,.0f}/s ({x / cpu_base:.2f}x)" for c, x in CPU_RATES[w].items())
        print("events per CPU second: " + ", ".join(per_cpu))
    return 0
