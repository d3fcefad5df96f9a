"""Where an actor runs: colour it, then compress or spread it over the universe.

This is libtorque's unbuilt idea made concrete: *where work runs should follow
what memory it touches*. Every actor has a colour. A group of actors that
share state is one colour and is **compressed**: its members sit as close as
their data allows. An actor with private state is its own colour and is
**spread**: colours go as far apart as the machine allows, so each gets its
own caches and memory bandwidth. (Glommio calls the two policies ``MaxPack``
and ``MaxSpread``; BEAM's ``+sbt tnnps`` is a fixed spread order.)

Pure: no processes, no I/O. Inputs are a :class:`~actorq.topology.universe.Universe`
and its :class:`~actorq.topology.model.Machine`; the output is a CPU and a
human reason for each actor.

The rules
=========

Spread (private colours, and the first member of each group). Walk the tree
of groups top-down and, at each level, take the child whose key is least:

1. *class*: a child with an empty core beats one with only an idle SMT
   thread, which beats one whose CPUs are all busy. On hybrid machines the
   empty-core class is split by CPU type, fastest first (``prefer_fast``).
2. *tier*: among those, the child holding an empty group at the highest
   level wins: an empty node beats a node with an empty package, which beats
   one with only an empty core. So N actors occupy distinct nodes, then
   packages, then cores, and SMT siblings only when every core has one.
3. *balance*: declared weight per core (per CPU once no core is empty).
4. *order*: the lowest CPU number, so the result is deterministic.

Compress (a group, ``state="shared"``). The first member picks a *home* by
the spread walk, then narrows it to what its footprint needs: the smallest
cache on the chosen CPU that holds the footprint, and within it the largest
group inside one NUMA node. A footprint that fits a core's private caches
gives a core home (its SMT siblings are used: they share that cache); one
that fits the L3 gives the L3's group; one larger than every cache gives the
node. Later members fill the home, then its parent groups up to the node
(free cores first; SMT siblings in the node before leaving it, since remote
memory costs more than a shared core), then spill to the nearest node by the
distance matrix that has room, and only when every CPU is busy share one.
``writes="private"`` (members write disjoint data: false sharing, not true
sharing) never gets a core home, so members never share a core while
another is free. ``footprint=None`` means "unknown": the last-level cache.

Pins win: ``cpu=`` places exactly there (an error when that CPU is not in
the placer's set); ``node=`` spreads within that node (a CPU-less node, e.g.
GPU memory or MCDRAM, is redirected to the nearest node with CPUs).

Which CPUs
==========

The universe's CPUs (``build_universe``'s default view is the cpuset's
usable CPUs), narrowed to ``cpus=`` (the runtime's worker CPUs). CPU-less
nodes never appear: placement walks groups of CPUs. CPUs that belong to no
node (no ``node/`` directory, or an offline node) form one pseudo-node,
``None``, last in every distance order.

Cost
====

Every group keeps counters (actors, weight, empty CPUs, empty cores per CPU
type, empty groups per level) and a cached key. A placement walks one path
down (picking the least child: a scan for fan-outs up to 16, a lazily
invalidated heap above) and one path up (updating counters and keys), so it
costs O(levels^2 + levels x log fan-out): independent of the number of CPUs
and actors (levels is 2 to 6 on real machines). A group member whose node is
full visits nodes in distance order (cached per node), so O(nodes) then.
``bench/placement.py``: 10,000 placements on the 256-CPU POWER7 tree take
0.1-0.35 s on a shared 2-vCPU VM, about 4x faster than a naive scan of all CPUs.

Hints
=====

``Hints(group=None, state=None, footprint=None, writes=None, cpu=None,
node=None, weight=1.0)``. ``state`` defaults to ``"shared"`` when a group is
named and ``"private"`` otherwise; ``Hints(group="g", state="private")``
labels a set of actors that are spread like any private ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from .errors import PlacementError
from .topology.model import Cache, Machine
from .topology.universe import Universe

__all__ = ["Hints", "Placement", "Placer", "Plan", "plan"]

# Fan-outs above this keep a heap of child keys; below it a scan is faster in Python.
_HEAP_FANOUT = 16


# ---------------------------------------------------------------------------
# Public records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hints:
    """What an actor tells the placer about the memory it touches."""

    group: str | None = None
    state: str | None = None  # "shared" | "private"; None: shared iff group is set
    footprint: int | None = None  # bytes of state the group touches
    writes: str | None = None  # "shared" | "private" | None
    cpu: int | None = None
    node: int | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.state not in (None, "shared", "private"):
            raise PlacementError(f"Hints.state must be 'shared' or 'private', not {self.state!r}")
        if self.writes not in (None, "shared", "private"):
            raise PlacementError(
                f"Hints.writes must be 'shared', 'private' or None, not {self.writes!r}"
            )
        if self.state == "shared" and not self.group:
            raise PlacementError(
                "Hints(state='shared') needs group=NAME: the actors that share that state"
            )
        fp = self.footprint
        if fp is not None and (not isinstance(fp, int) or isinstance(fp, bool) or fp < 0):
            raise PlacementError(f"Hints.footprint must be a byte count >= 0, not {fp!r}")
        if not self.weight > 0:
            raise PlacementError(f"Hints.weight must be > 0, not {self.weight!r}")
        for pin in ("cpu", "node"):
            v = getattr(self, pin)
            if v is not None and (not isinstance(v, int) or v < 0):
                raise PlacementError(f"Hints.{pin} must be an int >= 0, not {v!r}")

    @property
    def shared(self) -> bool:
        """True when this actor is compressed with its group."""
        if self.state is None:
            return self.group is not None
        return self.state == "shared"


@dataclass(frozen=True)
class Placement:
    """One decision: the CPU, why, and where that CPU sits."""

    cpu: int
    reason: str
    name: str = ""
    group: str | None = None
    core: int | None = None
    package: int | None = None
    node: int | None = None
    weight: float = 1.0
    how: str = "spread"  # "pinned" | "spread" | "compressed" | "spilled" | "overloaded"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "group": self.group,
            "cpu": self.cpu,
            "core": self.core,
            "package": self.package,
            "node": self.node,
            "reason": self.reason,
        }


@dataclass
class Plan:
    """A batch of placements (the result of :func:`plan`)."""

    placements: dict[str, Placement] = field(default_factory=dict)

    def by_cpu(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for name, p in self.placements.items():
            out.setdefault(p.cpu, []).append(name)
        return out

    def to_json(self) -> dict[str, object]:
        return {"actors": [p.to_json() for p in self.placements.values()]}


# ---------------------------------------------------------------------------
# The tree the placer walks
# ---------------------------------------------------------------------------


class _G:
    """A group of the universe restricted to the placer's CPUs, with counters."""

    __slots__ = (
        "caches",
        "children",
        "cpu",
        "cpus",
        "depth",
        "free_core",
        "free_lvl",
        "heap",
        "key",
        "kind",
        "label",
        "load",
        "n",
        "ncores",
        "ncpus",
        "node",
        "node_top",
        "one_node",
        "order",
        "parent",
        "slot",
        "ver",
    )

    def __init__(self, depth: int, kind: str, cpus: frozenset[int]) -> None:
        self.depth = depth
        self.kind = kind
        self.cpus = cpus
        self.order = min(cpus)
        self.children: list[_G] = []
        self.parent: _G | None = None
        self.slot = 0  # index in parent.children
        self.heap: list[tuple[tuple[int, int, float, int], int, int]] | None = None
        self.ver = 0
        self.key: tuple[int, int, float, int] = (0, 0, 0.0, 0)
        self.n = 0
        self.load = 0.0
        self.ncpus = len(cpus)
        self.ncores = 0
        self.free_core: list[int] = []
        self.free_lvl: list[int] = [0] * (depth + 1)
        self.node: int | None = None
        self.node_top: _G = self
        self.one_node = True
        self.label = ""
        self.cpu = -1  # leaves only
        self.caches: tuple[Cache, ...] = ()


@dataclass
class _Color:
    """A compressed group's state: its members and a home per node it reached."""

    name: str
    footprint: int | None
    core_ok: bool
    members: set[str] = field(default_factory=set)
    homes: dict[int | None, _G] = field(default_factory=dict)


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def _type_speed(machine: Machine, tid: int) -> tuple[int, int]:
    for t in machine.types:
        if t.id == tid:
            kind = {"performance": 2, "efficiency": 0}.get(t.kind or "", 1)
            return (t.capacity or 0, kind)
    return (0, 1)


class Placer:
    """Incremental, deterministic placement over a set of CPUs.

    ``cpus`` are the CPUs that may receive actors (the runtime's worker CPUs);
    default: every CPU of the universe (whose default view is the cpuset's).
    ``prefer_fast`` puts the first actors on the fastest CPU type of a hybrid
    machine.
    """

    def __init__(
        self,
        universe: Universe,
        machine: Machine,
        cpus: Iterable[int] | None = None,
        *,
        prefer_fast: bool = True,
    ) -> None:
        self.universe = universe
        self.machine = machine
        # The universe's view decides (build_universe's "allowed" is the cpuset's CPUs).
        usable = frozenset(universe.cpus) & machine.online_cpus
        if cpus is None:
            chosen = usable
        else:
            chosen = frozenset(cpus)
            bad = sorted(chosen - usable)
            if bad:
                raise PlacementError(
                    f"cpus {bad} are not usable on this machine (offline, outside the cpuset, or "
                    f"unknown); usable cpus are {_cpulist(usable)}"
                )
        if not chosen:
            raise PlacementError(
                "no usable CPU to place actors on; check the cpuset and the cpus= argument"
            )
        self.cpus = chosen
        self._hints: dict[str, Hints] = {}
        self._placed: dict[str, Placement] = {}
        self._leaf_of_actor: dict[str, _G] = {}
        self._colors: dict[str, _Color] = {}
        self._near: dict[int | None, list[int | None]] = {}
        self._build(prefer_fast)

    # -- construction ------------------------------------------------------

    def _build(self, prefer_fast: bool) -> None:
        m, u, cpus = self.machine, self.universe, self.cpus
        self._cache_by_id = cache_by_id = {c.id: c for c in m.caches}
        # CPU type ranks, fastest first; equal speeds share a rank.
        speeds = sorted({_type_speed(m, m.cpus[c].type) for c in cpus}, reverse=True)
        if not prefer_fast:
            speeds = speeds[:1]
        rank_of_speed = {s: i for i, s in enumerate(speeds)}
        self._nranks = len(speeds)

        def rank(cpu: int) -> int:
            return rank_of_speed.get(_type_speed(m, m.cpus[cpu].type), 0) if prefer_fast else 0

        # Leaves, then the universe's levels restricted to our CPUs, bottom-up.
        leaves: dict[int, _G] = {}
        for c in sorted(cpus):
            g = _G(0, "cpu", frozenset((c,)))
            g.cpu = c
            g.label = f"cpu {c}"
            leaves[c] = g
        self._leaves = leaves
        below: dict[int, _G] = dict(leaves)  # cpu -> its group one level down
        levels: list[list[_G]] = [list(leaves.values())]
        for depth0, lvl in enumerate(u.levels):
            groups: list[_G] = []
            made: dict[int, _G] = {}
            for pos, grp in enumerate(lvl.groups):
                mine = grp.cpus & cpus
                if not mine:
                    continue
                g = _G(depth0 + 1, lvl.kind, mine)
                g.label = self._label(lvl.kind, grp.index, mine)
                made[pos] = g
                groups.append(g)
                kids = {id(below[c]): below[c] for c in mine}
                g.children = sorted(kids.values(), key=_orderof)
            for c in cpus:
                below[c] = made[u.cpu_path[c][depth0]]
            levels.append(groups)
        if len(levels[-1]) != 1:
            root = _G(len(levels), "machine", cpus)
            root.label = "machine"
            root.children = sorted(levels[-1], key=_orderof)
            levels.append([root])
        self._root = root = levels[-1][0]
        self._levels = levels
        for lvl_groups in levels:
            for g in lvl_groups:
                g.free_core = [0] * self._nranks
                for i, k in enumerate(g.children):
                    k.parent = g
                    k.slot = i
        # Per group, bottom-up: caches used by all its CPUs, its node, empty groups per level.
        for lvl_groups in levels:
            for g in lvl_groups:
                common: set[int] | None = None
                nodes: set[int | None] = set()
                for c in g.cpus:
                    ids = set(m.cpus[c].caches)
                    common = ids if common is None else common & ids
                    nodes.add(m.cpus[c].node)
                g.caches = tuple(
                    sorted(
                        (cache_by_id[i] for i in common or () if i in cache_by_id),
                        key=lambda cc: (cc.level, cc.size),
                    )
                )
                # CPUs without a node (no node/ directory, or an offline node) form the
                # pseudo-node None; ``one_node`` tells it apart from "spans several nodes".
                g.one_node = len(nodes) == 1
                g.node = next(iter(nodes)) if g.one_node else None
                lv = [0] * (g.depth + 1)
                for k in g.children:
                    for d, v in enumerate(k.free_lvl):
                        lv[d] += v
                lv[g.depth] = 1
                g.free_lvl = lv
        # node_top: the largest ancestor still inside one node (or pseudo-node).
        for lvl_groups in reversed(levels):
            for g in lvl_groups:
                p = g.parent
                if p is not None and g.one_node and p.one_node and p.node == g.node:
                    g.node_top = p.node_top
                else:
                    g.node_top = g
        # Cores: counted from the smallest group holding all of a core's CPUs up to the root.
        self._core_of: dict[int, int] = {}
        self._core_n: dict[int, int] = {}
        self._core_rank: dict[int, int] = {}
        self._core_depth: dict[int, int] = {}
        self._core_cpus: dict[int, frozenset[int]] = {}
        by_core: dict[int, list[int]] = {}
        for c in sorted(cpus):
            core = m.cpus[c].core
            by_core.setdefault(core if core is not None else -1 - c, []).append(c)
        for key, members in by_core.items():
            mset = frozenset(members)
            for c in members:
                self._core_of[c] = key
            self._core_n[key] = 0
            self._core_cpus[key] = mset
            r = min(rank(c) for c in members)
            self._core_rank[key] = r
            up: _G | None = leaves[members[0]]
            while up is not None and not mset <= up.cpus:
                up = up.parent
            assert up is not None
            self._core_depth[key] = up.depth
            while up is not None:
                up.ncores += 1
                up.free_core[r] += 1
                up = up.parent
        # A cache group that is one core (a P-core's own L2) is named as the core.
        for lvl_groups in levels[2:]:
            for g in lvl_groups:
                if g.ncores == 1 and g.kind in ("l2", "l3", "cluster"):
                    g.label = f"core {m.cpus[g.order].core} ({g.label})"
        # Node roots: the topmost groups inside each node.
        self._node_roots: dict[int | None, list[_G]] = {}
        for lvl_groups in levels:
            for g in lvl_groups:
                if g.node_top is g and g.one_node:
                    self._node_roots.setdefault(g.node, []).append(g)
        for roots in self._node_roots.values():
            roots.sort(key=_orderof)
        for lvl_groups in levels:
            for g in lvl_groups:
                g.key = self._key(g)
        for lvl_groups in levels:
            for g in lvl_groups:
                if len(g.children) > _HEAP_FANOUT:
                    g.heap = [(k.key, k.ver, k.slot) for k in g.children]
                    heapq.heapify(g.heap)

    def _label(self, kind: str, index: int, cpus: frozenset[int]) -> str:
        """A group's name in reasons, with its aliases: "node 1 (package 1, L3 #1)"."""
        m = self.machine
        some = m.cpus[min(cpus)]
        if kind == "machine":
            return "machine"
        if kind == "core" and some.core is not None:
            return f"core {some.core}"
        names: list[str] = []
        node = m.nodes.get(some.node) if some.node is not None else None
        if node is not None and cpus == node.cpus & self.cpus:
            names.append(f"node {some.node}")
        pkg = next((p for p in m.packages if p.id == some.package), None)
        if pkg is not None and cpus == pkg.cpus & self.cpus and len(pkg.cpus & self.cpus) > 1:
            names.append(f"package {pkg.id}")
        if kind not in ("node", "package"):
            names.append(f"{kind.upper() if kind in ('l2', 'l3') else kind} #{index}")
        if not names:
            names.append(f"{kind} #{index}")
        return names[0] + (f" ({', '.join(names[1:])})" if len(names) > 1 else "")

    # -- keys and the walk ---------------------------------------------------

    def _key(self, g: _G) -> tuple[int, int, float, int]:
        fc = g.free_core
        cls = len(fc) + 1
        for r, v in enumerate(fc):
            if v:
                cls = r
                break
        else:
            if g.free_lvl[0]:
                cls = len(fc)
        if cls <= len(fc):
            lv = g.free_lvl
            d = len(lv) - 1
            while not lv[d]:
                d -= 1
            tier = -d
            bal = g.load / g.ncores if cls < len(fc) else g.load / g.ncpus
        else:
            tier = 0
            bal = g.load / g.ncpus
        return (cls, tier, bal, g.order)

    @staticmethod
    def _best(g: _G) -> _G:
        h = g.heap
        if h is None:
            return min(g.children, key=_keyof)
        kids = g.children
        while True:
            _, ver, slot = h[0]
            k = kids[slot]
            if ver == k.ver:
                return k
            heapq.heappop(h)

    def _descend(self, g: _G) -> _G:
        while g.children:
            g = self._best(g)
        return g

    def _descend_roots(self, roots: list[_G]) -> _G:
        return self._descend(min(roots, key=_keyof) if len(roots) > 1 else roots[0])

    def _account(self, leaf: _G, weight: float, delta: int) -> None:
        """Add (delta=+1) or remove (-1) one actor of ``weight`` on ``leaf``; fix counters."""
        path: list[_G] = []
        g: _G | None = leaf
        while g is not None:
            path.append(g)
            g = g.parent
        # Groups that change between empty and non-empty are a prefix of the path.
        t = 0
        edge = 0 if delta > 0 else 1
        while t < len(path) and path[t].n == edge:
            t += 1
        core = self._core_of[leaf.cpu]
        before = self._core_n[core]
        self._core_n[core] = before + delta
        core_depth = self._core_depth[core] if before == edge else len(path)
        r = self._core_rank[core]
        for i, g in enumerate(path):
            g.n += delta
            g.load = g.load + weight * delta if g.n else 0.0  # no float residue once empty
            if t:
                lv = g.free_lvl
                for j in range(min(i + 1, t)):
                    lv[j] -= delta
            if g.depth >= core_depth:
                g.free_core[r] -= delta
        for g in path:
            g.key = self._key(g)
            p = g.parent
            if p is not None and p.heap is not None:
                g.ver += 1
                h = p.heap
                heapq.heappush(h, (g.key, g.ver, g.slot))
                if len(h) > 4 * len(p.children) + 32:
                    p.heap = [(k.key, k.ver, k.slot) for k in p.children]
                    heapq.heapify(p.heap)

    # -- public API ------------------------------------------------------------

    def place(self, name: str, hints: Hints | None = None) -> Placement:
        """Choose a CPU for actor ``name``, record its load, and say why."""
        if name in self._placed:
            raise PlacementError(
                f"actor {name!r} is already placed on cpu {self._placed[name].cpu}; "
                "release it first"
            )
        hints = hints or Hints()
        if hints.cpu is not None:
            leaf = self._leaves.get(hints.cpu)
            if leaf is None:
                raise PlacementError(
                    f"actor {name!r} is pinned to cpu {hints.cpu}, which is not one of the "
                    f"placer's cpus ({_cpulist(self.cpus)}); pin to one of those or add a "
                    f"worker on cpu {hints.cpu}"
                )
            how, reason = "pinned", f"pinned: cpu={hints.cpu} requested"
        else:
            roots, pin_why = self._pin_roots(name, hints)
            if hints.shared:
                assert hints.group is not None
                leaf, how, reason = self._compress(name, hints, roots)
            else:
                leaf = self._descend_roots(roots)
                how, reason = "spread", "private: spread to " + self._why_spread(leaf)
            if pin_why:
                reason = pin_why + "; " + reason
        return self._commit(name, hints, leaf, how, reason)

    def release(self, name: str) -> Placement | None:
        """Forget actor ``name`` (it stopped); returns its placement, None if unknown."""
        p = self._placed.pop(name, None)
        if p is None:
            return None
        leaf = self._leaf_of_actor.pop(name)
        hints = self._hints.pop(name)
        self._account(leaf, hints.weight, -1)
        if hints.shared and hints.group in self._colors:
            col = self._colors[hints.group]
            col.members.discard(name)
            if not col.members:
                del self._colors[hints.group]
        return p

    def add_load(self, cpu: int, weight: float = 1.0) -> None:
        """Count work the placer did not place (another process, a pre-existing plan).

        It occupies ``cpu`` like one actor of ``weight``, for good.
        """
        leaf = self._leaves.get(cpu)
        if leaf is None:
            raise PlacementError(
                f"load given for cpu {cpu}, which is not one of the placer's cpus "
                f"({_cpulist(self.cpus)})"
            )
        if not weight > 0:
            raise PlacementError(f"load for cpu {cpu} must be > 0, not {weight!r}")
        self._account(leaf, weight, +1)

    @property
    def placements(self) -> dict[str, Placement]:
        return dict(self._placed)

    def load(self) -> dict[int, float]:
        """Declared weight per CPU."""
        return {c: g.load for c, g in self._leaves.items()}

    def counts(self) -> dict[int, int]:
        """Actors per CPU."""
        return {c: g.n for c, g in self._leaves.items()}

    def replan(
        self, universe: Universe, machine: Machine, cpus: Iterable[int] | None = None
    ) -> Plan:
        """Place every current actor again on a new universe (CPUs came or went)."""
        return plan(universe, machine, list(self._hints.items()), cpus=cpus)

    # -- pieces ------------------------------------------------------------------

    def _pin_roots(self, name: str, hints: Hints) -> tuple[list[_G], str]:
        if hints.node is None:
            return [self._root], ""
        n = hints.node
        roots = self._node_roots.get(n)
        if roots:
            return roots, f"pinned to node {n}"
        node = self.machine.nodes.get(n)
        if node is None:
            raise PlacementError(
                f"actor {name!r} is pinned to node {n}, which this machine does not have "
                f"(nodes: {sorted(self.machine.nodes)})"
            )
        if node.cpus:
            raise PlacementError(
                f"actor {name!r} is pinned to node {n}, but none of its cpus "
                f"({_cpulist(node.cpus)}) is one of the placer's cpus ({_cpulist(self.cpus)}); "
                "pin elsewhere or add workers there"
            )
        # A CPU-less node (GPU memory, MCDRAM, CXL): run next to it instead.
        near = self._nodes_by_distance(n)
        if not near:
            raise PlacementError(
                f"actor {name!r} is pinned to CPU-less node {n} and no node with cpus is known"
            )
        d = node.distances.get(near[0]) if near[0] is not None else None
        return self._node_roots[near[0]], (
            f"pinned to node {n}, which has no cpus (memory only); nearest node with cpus is "
            f"{near[0]} at distance {d}"
        )

    def _nodes_by_distance(self, origin: int | None) -> list[int | None]:
        """Other nodes with placer CPUs, nearest to ``origin`` first (ties: lower id).

        CPUs without a node (pseudo-node None) and nodes missing from the
        distance row come last.
        """
        near = self._near.get(origin)
        if near is None:
            near = self._near[origin] = self._sort_nodes(origin)
        return near

    def _sort_nodes(self, origin: int | None) -> list[int | None]:
        dist = self.machine.nodes[origin].distances if origin in self.machine.nodes else {}
        cands = [n for n in self._node_roots if n != origin]
        far = 1 << 30
        return sorted(cands, key=lambda n: (far, 0) if n is None else (dist.get(n, far - 1), n))

    def _compress(self, name: str, hints: Hints, roots: list[_G]) -> tuple[_G, str, str]:
        gname = hints.group
        assert gname is not None
        tag = f"group {gname}"
        col = self._colors.get(gname)
        if col is None:
            col = _Color(gname, hints.footprint, hints.writes != "private")
            self._colors[gname] = col
        else:  # members may disagree: the largest footprint and the strictest writes win
            fp = hints.footprint
            if fp is not None and (col.footprint is None or fp > col.footprint):
                col.footprint = fp
            col.core_ok = col.core_ok and hints.writes != "private"
        if roots[0] is not self._root:  # pinned to a node
            order: list[int | None] = [self._node_key(roots[0])]
        elif col.homes:
            first = next(iter(col.homes))
            # With every CPU busy there is nowhere to spill: skip the walk over nodes.
            order = [first, *self._nodes_by_distance(first)] if self._root.free_lvl[0] else [first]
        else:  # the group's first member: the spread walk picks the emptiest place
            order = [self._node_key(self._descend(self._root))]
        for i, nd in enumerate(order):
            home = col.homes.get(nd)
            why = ""
            if home is None:
                if not self._node_free(nd):
                    continue
                home, why = self._home_for(col, self._descend_roots(self._node_roots[nd]))
                col.homes[nd] = home
            leaf = self._fill(col, home)
            if leaf is None:
                continue
            where = self._where(leaf)
            if i == 0 and why:
                return leaf, "compressed", f"{tag}: {why}; {where}"
            if i == 0:
                up = self._lowest_common(leaf, home)
                scope = (
                    f"in its home {home.label}"
                    if up is home
                    else f"its home {home.label} is full, expanded to {up.label}"
                )
                return leaf, "compressed", f"{tag}: {scope}; {where}"
            d = self._distance(order[0], nd)
            return (
                leaf,
                "spilled",
                (
                    f"{tag}: node {order[0]} is full; spilled to node {nd}, the nearest with a "
                    f"free cpu (distance {d}); {why + '; ' if why else ''}{where}"
                ),
            )
        # Every CPU busy: share the least-loaded CPU of the home node (which stays home).
        top = self._node_roots.get(order[0], [self._root])
        leaf = self._descend_roots(top)
        if order[0] not in col.homes:
            col.homes[order[0]] = self._home_for(col, leaf)[0]
        return (
            leaf,
            "overloaded",
            (
                f"{tag}: every cpu busy; shares {self._where(leaf)}, the least loaded near home "
                f"(load {leaf.load:g})"
            ),
        )

    def _node_key(self, g: _G) -> int | None:
        """The key of ``g``'s node in ``_node_roots`` (None: CPUs without a node)."""
        return g.node_top.node

    def _node_free(self, nd: int | None) -> bool:
        return any(r.free_lvl[0] for r in self._node_roots.get(nd, ()))

    def _fill(self, col: _Color, home: _G) -> _G | None:
        """A CPU for the next member, from ``home`` up to its node; None when the node is full.

        A core home (the data fits the core's own caches) takes its SMT siblings
        first. Any other home takes free cores up to the node, then idle SMT
        siblings up to the node.
        """
        top = home.node_top
        passes = ("cpu",) if home.ncores == 1 and col.core_ok else ("core", "cpu")
        for want in passes:
            g: _G | None = home
            while g is not None:
                if any(g.free_core) if want == "core" else g.free_lvl[0]:
                    return self._descend(g)
                if g is top:
                    break
                g = g.parent
        return None

    def _home_for(self, col: _Color, leaf: _G) -> tuple[_G, str]:
        """Narrow a compressed group's home around ``leaf`` to what its footprint needs.

        The target is the smallest data cache of ``leaf``'s CPU that holds the
        footprint (the last level when the footprint is unknown); the home is the
        largest group around ``leaf`` inside that cache's CPUs and inside one node.
        """
        fp = col.footprint
        mine = (self._cache_by_id.get(i) for i in self.machine.cpus[leaf.cpu].caches)
        caches = sorted(
            (c for c in mine if c is not None and c.type != "instruction"),
            key=lambda c: (c.level, c.size),
        )
        core_cpus = self._core_cpus[self._core_of[leaf.cpu]]
        if not col.core_ok:  # private writes: never confine the group to one core
            caches = [c for c in caches if not (c.cpus & self.cpus) <= core_cpus]
        if fp is None:
            target = caches[-1] if caches else None
        else:
            target = next((c for c in caches if c.size >= fp), None)
        top = leaf.node_top
        if target is None:
            if fp is None:
                return top, f"compressed into {top.label} (no cache information)"
            return top, f"compressed into {top.label}, footprint {_size(fp)} exceeds every cache"
        home = leaf
        g: _G | None = leaf
        while g is not None and g.cpus <= target.cpus:
            home = g
            if g is top:
                break
            g = g.parent
        if home.depth == 0 and home.parent is not None:
            home = home.parent  # the unit is at least a core
        cache = f"{_size(target.size)} L{target.level}"
        if fp is None:
            fits = f"footprint unknown, so its last-level cache ({cache})"
        else:
            fits = f"footprint {_size(fp)} fits the {cache}"
            if not col.core_ok:
                fits += " (private writes: not confined to one core)"
        return home, f"compressed into {home.label}, {fits}"

    @staticmethod
    def _lowest_common(leaf: _G, home: _G) -> _G:
        g: _G | None = home
        while g is not None and leaf.cpu not in g.cpus:
            g = g.parent
        return g if g is not None else home

    def _distance(self, a: int | None, b: int | None) -> int | None:
        if a is None or b is None or a not in self.machine.nodes:
            return None
        return self.machine.nodes[a].distances.get(b)

    def _where(self, leaf: _G) -> str:
        c = self.machine.cpus[leaf.cpu]
        parts = []
        if c.node is not None:
            parts.append(f"node {c.node}")
        if c.package is not None:
            parts.append(f"package {c.package}")
        if c.core is not None:
            parts.append(f"core {c.core}")
        parts.append(f"cpu {leaf.cpu}")
        return ", ".join(parts)

    def _why_spread(self, leaf: _G) -> str:
        where = self._where(leaf)
        if leaf.n:
            return f"{where}: every cpu busy, least loaded (load {leaf.load:g})"
        if self._core_n[self._core_of[leaf.cpu]]:
            return f"{where}: an idle SMT sibling (no empty core left)"
        g = leaf
        while g.parent is not None and g.parent.n == 0 and g.parent is not self._root:
            g = g.parent
        what = f"first actor in {g.label}" if g.depth > 1 else "an empty core"
        if self._nranks > 1:
            t = self._type_name(leaf.cpu)
            if t:
                what += f", {t}"
        return f"{where}: {what}"

    def _type_name(self, cpu: int) -> str | None:
        tid = self.machine.cpus[cpu].type
        for t in self.machine.types:
            if t.id == tid:
                if t.kind:
                    return f"{t.kind} core"
                if t.capacity is not None:
                    return f"capacity {t.capacity}"
        return None

    def _commit(self, name: str, hints: Hints, leaf: _G, how: str, reason: str) -> Placement:
        self._account(leaf, hints.weight, +1)
        p = self._placement(name, hints, leaf, how, reason)
        self._placed[name] = p
        self._leaf_of_actor[name] = leaf
        self._hints[name] = hints
        if hints.shared and hints.group in self._colors:
            self._colors[hints.group].members.add(name)
        return p

    def _placement(self, name: str, hints: Hints, leaf: _G, how: str, reason: str) -> Placement:
        c = self.machine.cpus[leaf.cpu]
        return Placement(
            cpu=leaf.cpu,
            reason=reason,
            name=name,
            group=hints.group,
            core=c.core,
            package=c.package,
            node=c.node,
            weight=hints.weight,
            how=how,
        )


_keyof = attrgetter("key")


def _orderof(g: _G) -> int:
    return g.order


def _cpulist(cpus: Iterable[int]) -> str:
    """0,1,2,5 -> "0-2,5"."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) or "(none)"


def plan(
    universe: Universe,
    machine: Machine,
    actors: Mapping[str, Hints] | Iterable[tuple[str, Hints]],
    load: Mapping[int, float] | None = None,
    *,
    cpus: Iterable[int] | None = None,
    prefer_fast: bool = True,
) -> Plan:
    """Place a whole set of actors at once.

    Order: CPU pins, then node pins, then groups (in order of first
    appearance, members together, so each group claims its home before
    private actors fill the machine), then private actors in the given order.
    ``load`` is work already on CPUs (cpu -> weight), e.g. from another plan.
    """
    items = list(actors.items()) if isinstance(actors, Mapping) else list(actors)
    placer = Placer(universe, machine, cpus, prefer_fast=prefer_fast)
    for cpu, w in sorted((load or {}).items()):
        if w > 0:
            placer.add_load(cpu, w)

    def rank(i_item: tuple[int, tuple[str, Hints]]) -> tuple[int, int, int]:
        i, (_, h) = i_item
        if h.cpu is not None:
            return (0, 0, i)
        if h.node is not None:
            return (1, 0, i)
        if h.shared:
            return (2, first_seen[h.group], i)
        return (3, 0, i)

    first_seen: dict[str | None, int] = {}
    for i, (_, h) in enumerate(items):
        if h.shared and h.group not in first_seen:
            first_seen[h.group] = i
    out = Plan()
    for _, (name, h) in sorted(enumerate(items), key=rank):
        out.placements[name] = placer.place(name, h)
    # Keep the caller's order in the result.
    out.placements = {name: out.placements[name] for name, _ in items}
    return out
