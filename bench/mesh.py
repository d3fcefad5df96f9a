"""The mesh: what the supervisor's data plane costs for 3, 17, 65 and 257 nodes.

Two layouts, each built in a fresh process (so nothing is shared between
measurements), in the same run:

- ``slots`` (today's ``RingMesh``): per node one sparse memfd of ring slots
  (one per possible sender, 256 KiB each), one sparse slab, a doorbell and a
  space eventfd;
- ``pairs`` (the layout before it, rebuilt here from its parts for
  comparison): per node an inbox segment and a doorbell, and per *ordered
  pair* a populated ring segment (capacity shrunk so the total stays near
  64 MiB: 256 KiB up to 16 nodes, down to 16 KiB), a dup of the reader's
  doorbell, a mapping of the reader's inbox segment, a space eventfd and a
  sparse slab. Where the fds it needs exceed RLIMIT_NOFILE it is not built:
  the row says how many it would need.

Figures per layout and size: fds the mesh holds in the supervisor, KiB of
memory its memfds have allocated right after the build (``touched``, from
each memfd's ``st_blocks``, deduplicated by inode) and after one 64-byte
record over every ordered pair (``used``; up to 65 nodes), the ring capacity
each pair gets, and the build time (median of ``--reps``).

``--runtime N``: also start a real runtime with N workers (oversubscribed on
a small machine; default 64, 0 to skip), and report the supervisor's fds,
the largest worker's fds, touched KiB and the seconds to up and to stopped.

``python -m bench mesh [--nodes 3,17,65,257] [--reps 3] [--runtime 64] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

OLD_FDS_PER_PAIR = 8  # ring memfd + mmap dup, doorbell dup, inbox dup + mmap dup, space, slab x2


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _memfd_kib(pid: str = "self") -> int:
    """KiB allocated by the memfds this process holds or maps (once per inode)."""
    seen: dict[tuple[int, int], int] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{name}"
        try:
            if os.readlink(path).startswith("/memfd:"):
                st = os.stat(path)
                seen[(st.st_dev, st.st_ino)] = st.st_blocks // 2
        except OSError:
            pass
    return sum(seen.values())


def _old_capacity(nodes: int) -> int:
    """The pairs layout's ring size: every pair up front, the total near 64 MiB."""
    per = (64 << 20) // max(1, nodes * (nodes - 1))
    return 1 << max(14, min(18, per.bit_length() - 1))


class PairsLayout:
    """The layout before the slot mesh, rebuilt from its parts (segments,
    eventfds, slabs), so its fds, memory and build time can be measured."""

    def __init__(self, nodes: int) -> None:
        from actorq.shm import Segment, Slab
        from actorq.shm.doorbell import new_eventfd
        from actorq.shm.ring import HDR

        self.capacity = cap = _old_capacity(nodes)
        self.things: list[Any] = []
        self.fds: list[int] = []
        inboxes, doorbells = [], []
        for j in range(nodes):
            inboxes.append(Segment.create(128 + nodes, name=f"old-inbox-{j}"))
            doorbells.append(new_eventfd())
        self.things += inboxes
        self.fds += doorbells
        self.rings: dict[tuple[int, int], Any] = {}
        for j in range(nodes):
            for i in range(nodes):
                if i != j:
                    seg = Segment.create(HDR + cap, name=f"old-ring-{i}-{j}")  # populated
                    self.rings[(i, j)] = seg
                    self.things.append(seg)
                    self.fds += [os.dup(doorbells[j]), new_eventfd()]
                    self.things.append(Segment.from_fd(os.dup(inboxes[j].fd)))
                    self.things.append(Slab.create(name=f"old-slab-{i}-{j}"))

    def send_everywhere(self) -> None:
        for seg in self.rings.values():
            seg.buf[256 : 256 + 72] = bytes(72)  # one 64-byte record and its header

    def close(self) -> None:
        for t in self.things:
            t.close()
        for fd in self.fds:
            os.close(fd)


class SlotsLayout:
    """Today's ``RingMesh``."""

    def __init__(self, nodes: int) -> None:
        from actorq._runtime.mesh import RingMesh

        self.mesh = RingMesh(nodes, 1 << 18)
        self.capacity = self.mesh.inboxes[0].capacity

    def send_everywhere(self) -> None:
        n = self.mesh.nodes
        for i in range(n):
            port = self.mesh.port(i)
            for j in range(n):
                if j != i:
                    port.writers[j].send_nowait(bytes(64))

    def close(self) -> None:
        self.mesh.close()


def _one(layout: str, nodes: int) -> dict[str, Any]:
    """Build one layout in this (fresh) process and measure it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out: dict[str, Any] = {"layout": layout, "nodes": nodes, "fd_limit": hard}
    if layout == "pairs":
        pairs = nodes * (nodes - 1)
        need = OLD_FDS_PER_PAIR * pairs + 2 * nodes
        maps = 3 * pairs + nodes
        with open("/proc/sys/vm/max_map_count") as f:
            max_maps = int(f.read())
        why = None
        if maps + 1000 > max_maps:
            why = f"needs ~{maps:,} mappings > vm.max_map_count {max_maps:,}"
        elif need + 64 > hard:
            try:  # root may lift the hard limit, to measure what others cannot start
                resource.setrlimit(resource.RLIMIT_NOFILE, (need + 256, need + 256))
                out["note"] = f"limit lifted from {hard:,} to measure"
            except (ValueError, OSError):
                why = f"needs ~{need:,} fds > RLIMIT_NOFILE {hard:,}"
        if why is not None:
            out.update(skipped=why, fds=need, capacity=_old_capacity(nodes))
            return out
    import actorq._runtime.mesh
    import actorq.shm  # noqa: F401  (imports are not part of the build time)

    fds0, kib0 = _fds(), _memfd_kib()
    t0 = time.perf_counter()
    mesh: Any = PairsLayout(nodes) if layout == "pairs" else SlotsLayout(nodes)
    out["build_s"] = time.perf_counter() - t0
    out["fds"] = _fds() - fds0
    out["touched_kib"] = _memfd_kib() - kib0
    out["capacity"] = mesh.capacity
    if nodes <= 65:
        mesh.send_everywhere()
        out["used_kib"] = _memfd_kib() - kib0
    t0 = time.perf_counter()
    mesh.close()
    out["close_s"] = time.perf_counter() - t0
    return out


def _measure(layout: str, nodes: int, reps: int) -> dict[str, Any]:
    runs = []
    for _ in range(reps):
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "mesh", "--one", layout, str(nodes)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            return {"layout": layout, "nodes": nodes, "error": proc.stderr.strip()[-400:]}
        runs.append(json.loads(proc.stdout))
        if "skipped" in runs[-1]:
            return runs[-1]
    row = runs[0]
    for key in ("build_s", "close_s"):
        row[key] = statistics.median(r[key] for r in runs)
        row[key[:-2] + "_ms"] = row[key] * 1000
    return row


def _runtime(workers: int) -> dict[str, Any]:
    import psutil

    import actorq

    me = psutil.Process()
    fds0, kib0 = me.num_fds(), _memfd_kib()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rt = actorq.start(workers=workers, runtime_dir=os.path.join(tmp, "rt"))
        up = time.perf_counter() - t0
        kids = me.children()
        row = {
            "workers": workers,
            "cpus": len(os.sched_getaffinity(0)),
            "up_s": up,
            "supervisor_fds": me.num_fds() - fds0,
            "max_worker_fds": max(k.num_fds() for k in kids),
            "touched_kib": _memfd_kib() - kib0,
        }
        t0 = time.perf_counter()
        rt.stop(timeout=120)
        row["stop_s"] = time.perf_counter() - t0
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench mesh", description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", default="3,17,65,257")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=64, help="workers for a runtime start (0: no)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", nargs=2, metavar=("LAYOUT", "NODES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one[0], int(args.one[1]))))
        return 0
    rows = [
        _measure(layout, int(n), args.reps)
        for n in args.nodes.split(",")
        for layout in ("pairs", "slots")
    ]
    rt = _runtime(args.runtime) if args.runtime else None
    if args.json:
        print(json.dumps({"mesh": rows, "runtime": rt}, indent=1))
        return 0
    print(
        f"{'nodes':>6} {'layout':<7}{'fds':>9}{'touched KiB':>13}{'used KiB':>10}"
        f"{'ring KiB':>9}{'build ms':>10}{'close ms':>10}"
    )
    for r in rows:

        def f(key: str, spec: str, r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return "-" if v is None else format(v, spec)

        note = r.get("skipped") or r.get("error") or r.get("note") or ""
        print(
            f"{r['nodes']:>6} {r['layout']:<7}{f('fds', ',d'):>9}{f('touched_kib', ',d'):>13}"
            f"{f('used_kib', ',d'):>10}{(r.get('capacity') or 0) >> 10:>9}"
            f"{f('build_ms', '.1f'):>10}{f('close_ms', '.1f'):>10}  {note}"
        )
    if rt:
        print(
            f"runtime, {rt['workers']} workers on {rt['cpus']} CPUs: up in {rt['up_s']:.2f} s, "
            f"stopped in {rt['stop_s']:.2f} s; supervisor +{rt['supervisor_fds']} fds, "
            f"largest worker {rt['max_worker_fds']} fds, {rt['touched_kib']:,} KiB touched"
        )
    return 0
