"""actorq's shared-memory ring against the usual ways to move bytes between
two processes, side by side in one run.

    python -m bench ring [--json] [--reps 5] [--same-cpu] [--quick]

Message: a msgpack tuple ``(actor_id, "inc", (counter, payload))`` with a 64 B
or 4 KiB payload, encoded with a reused Packer; the receiver decodes every
message and checks the counter sequence. Producer and consumer are forked
processes pinned to two different CPUs (``--same-cpu``: both on one CPU).

* one-way throughput: the producer sends N messages as fast as it can; the
  rate is N over the time from the producer's first send to the consumer's
  last decode (CLOCK_MONOTONIC is shared by all processes).
* round trip: the client sends one message, the server decodes it and replies
  with a newly encoded one, the client decodes the reply; p50/p99 over
  ``--rtt`` round trips after a warm-up.
* idle CPU: a ring reader with nothing to read, after its spin budget
  decays, sleeps on its doorbell; its CPU time over 2 s is reported.

Each figure is the median of ``--reps`` repetitions, contenders interleaved
within each repetition so drifts of the shared VM hit all of them alike;
``spread`` is (max - min) / median. ``--json`` prints the list of Result
records only (the idle figure goes to stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from typing import Any

from bench._common import Result, emit, machine_info, median_spread, percentile, pin, two_cpus

ACTOR_ID = 7
CONTENDERS = [
    "actorq-ring",
    "actorq-ring-batched",
    "mp-queue",
    "mp-pipe",
    "faster-fifo",
    "zmq-pushpull",
    "zmq-dealer-router",
]
EXTRA = ["actorq-ring-nospin"]  # text table only: round trip with spinning disabled
BATCH = 64

# --------------------------------------------------------------------------------------
# transports: each gives (sender factory, receiver factory) usable after fork.
# A factory returns (send(bytes) or recv() -> bytes, flush(), close()).
# --------------------------------------------------------------------------------------


class Transport:
    """One direction of one contender. ``setup`` runs in the parent before fork;
    ``sender``/``receiver`` run in the children."""

    batched = False

    def setup(self) -> None: ...

    def sender(self) -> tuple[Callable[[bytes], None], Callable[[], None]]:
        raise NotImplementedError

    def receiver(self) -> Callable[[], Any]:
        """recv() -> bytes for peers; rings instead use ``drain_loop``."""
        raise NotImplementedError

    def finish(self) -> None:
        """In the sending child, before it exits: flush what background threads
        still hold (mp.Queue's feeder, zmq's I/O thread), or messages are lost."""

    def teardown(self) -> None: ...


class RingT(Transport):
    def __init__(self, batched: bool = False, spin: bool = True) -> None:
        self.batched = batched
        self.spin = spin

    def setup(self) -> None:
        from actorq.shm import Ring

        self.ring = Ring.create(1 << 20, slab=None)

    def sender(self) -> tuple[Callable[[bytes], None], Callable[[], None]]:
        from actorq.errors import RingFull

        w = self.ring.writer()
        if not self.batched:
            send_nowait, send = w.send_nowait, w.send

            def send1(m: bytes) -> None:
                try:
                    send_nowait(m)
                except RingFull:
                    send(m)

            return send1, w.publish
        write, publish = w.write, w.publish
        count = [0]

        def sendb(m: bytes) -> None:
            try:
                write(m)
            except RingFull:
                publish()
                w.send(m)
            count[0] += 1
            if count[0] % BATCH == 0:
                publish()

        return sendb, publish

    def reader(self) -> Any:
        r = self.ring.reader()
        if not self.spin:
            r.spinner.max_s = r.spinner.min_s = r.spinner.budget = 0.0
        return r

    def teardown(self) -> None:
        self.ring.close()


class MpQueueT(Transport):
    def setup(self) -> None:
        import multiprocessing as mp

        self.q = mp.get_context("fork").Queue()

    def sender(self) -> tuple[Callable[[bytes], None], Callable[[], None]]:
        return self.q.put, lambda: None

    def receiver(self) -> Callable[[], Any]:
        get = self.q.get
        return lambda: get(timeout=30)

    def finish(self) -> None:
        self.q.close()
        self.q.join_thread()

    def teardown(self) -> None:
        self.q.close()


class MpPipeT(Transport):
    def setup(self) -> None:
        import multiprocessing as mp

        self.r, self.w = mp.get_context("fork").Pipe(duplex=False)

    def sender(self) -> tuple[Callable[[bytes], None], Callable[[], None]]:
        return self.w.send_bytes, lambda: None

    def receiver(self) -> Callable[[], Any]:
        r = self.r

        def recv() -> bytes:
            if not r.poll(30):
                raise RuntimeError("mp-pipe: nothing received for 30 s")
            return r.recv_bytes()

        return recv

    def teardown(self) -> None:
        self.r.close()
        self.w.close()


class FasterFifoT(Transport):
    def setup(self) -> None:
        from faster_fifo import Queue

        self.q = Queue(max_size_bytes=8 << 20)

    def sender(self) -> tuple[Callable[[bytes], None], Callable[[], None]]:
        return self.q.put, lambda: None

    def receiver(self) -> Callable[[], Any]:
        get = self.q.get
        return lambda: get(timeout=30)

    def teardown(self) -> None:
        self.q.close()


class ZmqT(Transport):
    def __init__(self, kind: str) -> None:
        self.kind = kind  # "pushpull" or "dealer-router"

    def setup(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="actorq-bench-")
        self.addr = f"ipc://{self.dir}/s"

    def sender(self) -> tuple[Callable[[bytes], None], Callable[[], None]]:
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.PUSH if self.kind == "pushpull" else zmq.DEALER)
        s.connect(self.addr)
        self._keep = (ctx, s)
        return s.send, lambda: None

    def finish(self) -> None:
        ctx, s = self._keep
        s.close(linger=-1)  # wait until zmq's I/O thread handed over everything
        ctx.term()

    def receiver(self) -> Callable[[], Any]:
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.PULL if self.kind == "pushpull" else zmq.ROUTER)
        s.setsockopt(zmq.RCVTIMEO, 30_000)
        s.bind(self.addr)
        self._keep = (ctx, s)
        if self.kind == "pushpull":
            return s.recv
        recv_multipart = s.recv_multipart
        return lambda: recv_multipart()[1]

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def make(name: str) -> Transport:
    return {
        "actorq-ring": lambda: RingT(),
        "actorq-ring-batched": lambda: RingT(batched=True),
        "actorq-ring-nospin": lambda: RingT(spin=False),
        "mp-queue": MpQueueT,
        "mp-pipe": MpPipeT,
        "faster-fifo": FasterFifoT,
        "zmq-pushpull": lambda: ZmqT("pushpull"),
        "zmq-dealer-router": lambda: ZmqT("dealer-router"),
    }[name]()


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------


def spawn(fn: Callable[..., None], *args: Any) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _die_with_parent()
            fn(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a child never outlives a benchmark that failed."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def reap(pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"benchmark child {pid} failed")
            return
        time.sleep(0.002)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise RuntimeError(f"benchmark child {pid} hung")


def _wait_byte(fd: int, timeout: float = 120.0) -> None:
    import select

    if not select.select([fd], [], [], timeout)[0]:
        raise RuntimeError(f"the consumer did not finish in {timeout} s")
    os.read(fd, 1)


def put_float(fd: int, *v: float) -> None:
    os.write(fd, array("d", v).tobytes())  # <= PIPE_BUF: one atomic write


def cpu_time() -> float:
    """CPU seconds of this process, all threads (zmq's I/O thread included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def get_floats(fd: int, n: int, timeout: float = 120.0) -> list[float]:
    import select

    data = b""
    while len(data) < 8 * n:
        if not select.select([fd], [], [], timeout)[0]:
            raise RuntimeError(f"no report from a benchmark child in {timeout} s")
        chunk = os.read(fd, 8 * n - len(data))
        if not chunk:
            raise RuntimeError("a benchmark child died before reporting")
        data += chunk
    return list(array("d", data))


def _consume_ring(t: RingT, n: int, check: Callable[[bytes], None], done: list[int]) -> None:
    r = t.reader()
    while done[0] < n:
        if not r.wait(timeout=30):
            raise RuntimeError("ring consumer got nothing for 30 s")
        r.drain(check)


def throughput_consumer(
    t: Transport, n: int, cpu: int, ready_w: int, out_w: int, done_w: int
) -> None:
    import msgpack

    pin(cpu)
    unpackb = msgpack.unpackb
    done = [0]
    cpu0 = cpu_time()

    def check(b: bytes) -> None:
        _aid, _m, (c, _p) = unpackb(b)
        if c != done[0]:
            raise AssertionError(f"counter {c}, expected {done[0]}")
        done[0] = c + 1

    if isinstance(t, RingT):
        os.write(ready_w, b"r")
        _consume_ring(t, n, check, done)
    else:
        recv = t.receiver()
        os.write(ready_w, b"r")
        while done[0] < n:
            check(recv())
    put_float(out_w, time.perf_counter(), cpu_time() - cpu0)
    os.write(done_w, b"d")


def throughput_producer(
    t: Transport, n: int, payload: bytes, cpu: int, go_r: int, out_w: int, done_r: int
) -> None:
    import msgpack

    pin(cpu)
    send, flush = t.sender()
    pack = msgpack.Packer().pack
    os.read(go_r, 1)
    cpu0 = cpu_time()
    t0 = time.perf_counter()
    for c in range(n):
        send(pack((ACTOR_ID, "inc", (c, payload))))
    flush()
    # Keep our end open until the consumer has everything: a ROUTER drops what
    # a disconnected DEALER had queued, and mp.Queue's feeder thread must run.
    _wait_byte(done_r)
    t.finish()
    put_float(out_w, t0, cpu_time() - cpu0)


def run_throughput(name: str, n: int, payload: bytes, cpus: tuple[int, int]) -> tuple[float, float]:
    """(messages per second, CPU µs per message for both processes together)."""
    t = make(name)
    t.setup()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    done_r, done_w = os.pipe()
    try:
        cons = spawn(throughput_consumer, t, n, cpus[1], ready_w, out_w, done_w)
        os.read(ready_r, 1)
        if isinstance(t, ZmqT):
            time.sleep(0.05)  # the bind is done; give the connect a moment
        prod = spawn(throughput_producer, t, n, payload, cpus[0], go_r, out_w, done_r)
        os.write(go_w, b"g")
        t_a, cpu_a, t_b, cpu_b = get_floats(out_r, 4)
        reap(prod)
        reap(cons)
    finally:
        for fd in (ready_r, ready_w, go_r, go_w, out_r, out_w, done_r, done_w):
            os.close(fd)
        t.teardown()
    return n / (max(t_a, t_b) - min(t_a, t_b)), (cpu_a + cpu_b) / n * 1e6


# -- round trips ---------------------------------------------------------------------------


def rtt_server(fwd: Transport, back: Transport, n: int, cpu: int, ready_w: int) -> None:
    import msgpack

    pin(cpu)
    pack = msgpack.Packer().pack
    unpackb = msgpack.unpackb
    dealer_router = isinstance(fwd, ZmqT) and fwd.kind == "dealer-router"
    send, flush = back.sender() if not dealer_router else (None, None)
    seen = [0]

    def echo(b: bytes) -> None:
        aid, m, (c, p) = unpackb(b)
        if c != seen[0]:
            raise AssertionError(f"server: counter {c}, expected {seen[0]}")
        seen[0] = c + 1
        send(pack((aid, m, (c, p))))  # type: ignore[misc]
        flush()  # type: ignore[misc]

    if isinstance(fwd, RingT):
        os.write(ready_w, b"r")
        _consume_ring(fwd, n, echo, seen)
    elif isinstance(fwd, ZmqT) and fwd.kind == "dealer-router":
        import zmq  # one ROUTER socket: replies go back to the requesting DEALER

        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.RCVTIMEO, 30_000)
        router.bind(fwd.addr)
        os.write(ready_w, b"r")
        while seen[0] < n:
            ident, b = router.recv_multipart()
            aid, m, (c, p) = unpackb(b)
            if c != seen[0]:
                raise AssertionError(f"server: counter {c}, expected {seen[0]}")
            seen[0] = c + 1
            router.send_multipart([ident, pack((aid, m, (c, p)))])
    else:
        recv = fwd.receiver()
        os.write(ready_w, b"r")
        while seen[0] < n:
            echo(recv())
    if not dealer_router:
        back.finish()


def rtt_client(
    fwd: Transport, back: Transport, n: int, payload: bytes, cpu: int, ready_r: int, out_w: int
) -> None:
    import msgpack

    pin(cpu)
    pack = msgpack.Packer().pack
    unpackb = msgpack.unpackb
    times = array("d")
    now = time.perf_counter
    if isinstance(fwd, ZmqT) and fwd.kind == "dealer-router":
        import zmq

        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.RCVTIMEO, 30_000)
        dealer.connect(fwd.addr)
        send, flush, recv = dealer.send, (lambda: None), dealer.recv
    else:
        send, flush = fwd.sender()
    if isinstance(fwd, ZmqT) and fwd.kind == "dealer-router":
        pass
    elif isinstance(back, RingT):
        r = back.reader()
        got: list[bytes] = []

        def recv() -> bytes:
            while not got:
                if not r.wait(timeout=30):
                    raise RuntimeError("no reply for 30 s")
                r.drain(got.append)
            return got.pop()
    else:
        recv = back.receiver()  # type: ignore[assignment]
    os.read(ready_r, 1)
    if isinstance(back, ZmqT):
        time.sleep(0.05)
    for c in range(n):
        t0 = now()
        send(pack((ACTOR_ID, "inc", (c, payload))))
        flush()
        _aid, _m, (rc, _p) = unpackb(recv())
        times.append(now() - t0)
        if rc != c:
            raise AssertionError(f"client: reply {rc} to {c}")
    os.write(out_w, times.tobytes())
    if not (isinstance(fwd, ZmqT) and fwd.kind == "dealer-router"):
        fwd.finish()


def run_rtt(name: str, n: int, payload: bytes, cpus: tuple[int, int]) -> tuple[float, float]:
    fwd, back = make(name), make(name)
    fwd.setup()
    back.setup()
    ready_r, ready_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        # Each receiving end binds (zmq) and the sending end connects; zmq
        # retries a connect made before the bind.
        srv = spawn(rtt_server, fwd, back, n, cpus[1], ready_w)
        cli = spawn(rtt_client, fwd, back, n, payload, cpus[0], ready_r, out_w)
        os.close(out_w)
        out_w = -1
        data = b""
        while True:
            chunk = os.read(out_r, 1 << 16)
            if not chunk:
                break
            data += chunk
        reap(cli)
        reap(srv)
    finally:
        for fd in (ready_r, ready_w, out_r, out_w):
            if fd >= 0:
                os.close(fd)
        fwd.teardown()
        back.teardown()
    times = sorted(array("d", data)[n // 10 :])  # drop the warm-up tenth
    return percentile(times, 50) * 1e6, percentile(times, 99) * 1e6


# -- idle --------------------------------------------------------------------------------


def idle_reader(t: RingT, cpu: int, seconds: float) -> None:
    pin(cpu)
    r = t.reader()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if r.wait(timeout=max(0.0, end - time.monotonic())):
            r.drain(lambda b: None)


def idle_cpu(cpus: tuple[int, int], seconds: float = 2.0) -> float:
    """Fraction of one CPU an idle ring reader uses (after a 0.2 s settle)."""
    import psutil

    t = RingT()
    t.setup()
    try:
        pid = spawn(idle_reader, t, cpus[1], seconds + 0.4)
        time.sleep(0.2)
        p = psutil.Process(pid)
        c0, w0 = sum(p.cpu_times()[:2]), time.monotonic()
        time.sleep(seconds)
        c1, w1 = sum(p.cpu_times()[:2]), time.monotonic()
        reap(pid)
    finally:
        t.teardown()
    return (c1 - c0) / (w1 - w0)


# -- driver ------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ring", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the Result list as JSON")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per figure (median)")
    ap.add_argument("--count", type=int, default=100_000, help="messages per throughput run (64 B)")
    ap.add_argument("--rtt", type=int, default=5_000, help="round trips per run")
    ap.add_argument("--same-cpu", action="store_true", help="pin both processes to one CPU")
    ap.add_argument("--quick", action="store_true", help="tiny counts, 2 reps (smoke test)")
    ap.add_argument("--only", default="", help="comma-separated contenders to run")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.count, args.rtt = 2, 5_000, 500
    a, b = two_cpus()
    cpus = (a, a) if args.same_cpu else (a, b)
    names = CONTENDERS + EXTRA
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    try:
        import faster_fifo  # noqa: F401
    except ImportError:
        names = [n for n in names if n != "faster-fifo"]
        print("faster-fifo not installed: skipped", file=sys.stderr)

    log = sys.stderr
    rates: dict[tuple[str, int], list[float]] = {}
    cpus_per_msg: dict[tuple[str, int], list[float]] = {}
    rtts: dict[tuple[str, int], list[tuple[float, float]]] = {}
    payloads = {64: os.urandom(64), 4096: os.urandom(4096)}
    for rep in range(args.reps):
        for size, payload in payloads.items():
            n = args.count if size == 64 else max(1000, args.count // 2)
            for name in names:
                if name not in EXTRA:
                    r, c = run_throughput(name, n, payload, cpus)
                    rates.setdefault((name, size), []).append(r)
                    cpus_per_msg.setdefault((name, size), []).append(c)
                if name != "actorq-ring-batched":
                    rtts.setdefault((name, size), []).append(run_rtt(name, args.rtt, payload, cpus))
            print(f"rep {rep + 1}/{args.reps} {size} B done", file=log)

    results: list[Result] = []
    extra: list[Result] = []
    for size in payloads:
        for name in names:
            rate = spread = p50 = p99 = None
            if (name, size) in rates:
                rate, spread = median_spread(rates[(name, size)])
            if (name, size) in rtts:
                p50s = [x[0] for x in rtts[(name, size)]]
                p50, sp = median_spread(p50s)
                p99 = median_spread([x[1] for x in rtts[(name, size)]])[0]
                if spread is None:
                    spread = sp
            res = Result(name, size, rate, p50, p99, spread)
            (extra if name in EXTRA else results).append(res)

    idle = idle_cpu(cpus)
    if args.json:
        emit(results, True)
        print(f"idle ring reader CPU: {idle * 100:.2f}%", file=log)
        return 0
    info = machine_info()
    where = "same CPU" if args.same_cpu else f"CPUs {cpus[0]} and {cpus[1]}"
    emit(
        results + extra,
        False,
        f"ring vs peers, {where}, median of {args.reps}; {info['cpu_model']}, "
        f"{info['cpus']} CPUs, Python {info['python']}, kernel {info['kernel']}",
    )
    print()
    print(
        f"{'contender':<22}{'payload':>8}{'MB/s':>10}{'x mp-queue':>12}{'x zmq-push':>12}"
        f"{'CPU µs/msg':>12}"
    )
    for r in results:
        if r.msgs_per_s is None:
            continue
        q = next((x for x in results if x.contender == "mp-queue" and x.payload == r.payload), None)
        z = next(
            (x for x in results if x.contender == "zmq-pushpull" and x.payload == r.payload), None
        )

        def ratio(o: Result | None, r: Result = r) -> str:
            return f"{r.msgs_per_s / o.msgs_per_s:.2f}" if o and o.msgs_per_s else "-"  # type: ignore[operator]

        wire = len(_sample(r.payload or 0))
        print(
            f"{r.contender:<22}{r.payload:>8}{r.msgs_per_s * wire / 1e6:>10.1f}"
            f"{ratio(q):>12}{ratio(z):>12}"
            f"{statistics.median(cpus_per_msg[(r.contender, r.payload)]):>12.2f}"
        )
    print(f"\nidle ring reader: {idle * 100:.2f}% of one CPU over 2 s")
    print("CPU µs/msg: producer + consumer CPU time (all threads) per message, median")
    return 0


def _sample(size: int) -> bytes:
    import msgpack

    return msgpack.packb((ACTOR_ID, "inc", (10**6, bytes(size))))
