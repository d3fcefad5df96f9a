"""The scheduling universe: ordered levels of groups of CPUs.

(Contract written first so placement can build on it; discovery fills in
``build_universe``. The invariants below are tested in tests/test_universe.py.)

Level 0 groups the SMT threads of one core. Each next level extends its groups
through what they reach at equal cost: cores sharing an L2 or a cluster, then
an L3 or a package, then a NUMA node, then the whole machine.

Invariants:
- every usable CPU is in exactly one group per level;
- groups nest: each group of level k+1 is a union of groups of level k;
- no level is the same partition as the one below it (duplicates are dropped);
- a uniprocessor is one level.

How ``build_universe`` keeps them whatever the kernel says: each candidate
partition (L2 instances, clusters, L3 instances, packages, NUMA nodes, the
machine) is taken finest first (stable, so ties keep that order) and *joined*
with the level below, i.e. replaced by the finest partition coarser than both;
a join that changes nothing is dropped, and the level keeps the first kind
that produced it. So a NUMA node smaller than its package (Intel SNC, AMD
Magny-Cours) sits below the package, an L3 that is the whole package is named
"l3", and sets that do not nest (hand-edited trees) still give nested levels.
CPUs a candidate says nothing about (no L2 in sysfs) stand alone in it.
Levels cover one *view*: "allowed" (online CPUs the cpuset and affinity
allow) or "all" (every online CPU); offline CPUs are never in a universe.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ActorqTopologyError
from .model import Cache, Machine


@dataclass(frozen=True)
class Group:
    """CPUs that reach each other at one cost: a core, an L2, a package, a node."""

    level: int
    index: int  # position inside its level
    cpus: frozenset[int]
    caches: tuple[Cache, ...]  # caches shared by all of ``cpus`` and no CPU outside
    node: int | None  # the NUMA node whose memory is local to this group, if one
    parent: int | None  # index of the enclosing group in level+1, None at the top


@dataclass(frozen=True)
class Level:
    depth: int
    kind: str  # "core" | "cluster" | "l2" | "l3" | "package" | "node" | "machine"
    groups: tuple[Group, ...]


@dataclass(frozen=True)
class Universe:
    levels: tuple[Level, ...]
    # cpu -> index of its group at each level (len == len(levels)); O(1) lookups.
    cpu_path: dict[int, tuple[int, ...]]

    @property
    def cpus(self) -> frozenset[int]:
        return frozenset(self.cpu_path)

    def group_of(self, cpu: int, depth: int) -> Group:
        return self.levels[depth].groups[self.cpu_path[cpu][depth]]


# Candidate partitions, in the order the contract names them; build_universe
# sorts them finest-first (stable), so a NUMA node smaller than its package
# (Intel SNC, AMD Magny-Cours dies) lands below the package/L3 level.
_KINDS = ("core", "l2", "cluster", "l3", "package", "node", "machine")


def build_universe(machine: Machine, view: str = "allowed") -> Universe:
    """Levels of groups over the usable CPUs (``view="allowed"``) or all online ones.

    Each candidate partition (cores, L2 instances, clusters, L3 instances,
    packages, NUMA nodes, the machine) is *joined* with the level below it (the
    finest partition coarser than both), so groups nest even when the kernel's
    sets do not; a join that changes nothing is dropped.
    """
    if view == "allowed":
        cpus = machine.allowed_cpus
    elif view == "all":
        cpus = machine.online_cpus
    else:
        raise ValueError(f"view must be 'allowed' or 'all', not {view!r}")
    if not cpus:
        raise ActorqTopologyError(
            f"{machine.root}: no {'usable' if view == 'allowed' else 'online'} CPU "
            f"(cpuset {machine.limits.cpuset_source or 'none'}); nothing to schedule on"
        )
    ordered = sorted(cpus)
    by_id = machine.cpus

    def cache_key(level: int) -> dict[int, object]:
        key: dict[int, object] = {}
        for cache in machine.caches:
            if cache.level == level and cache.type == "unified":
                for c in cache.cpus & cpus:
                    key.setdefault(c, ("cache", cache.id))
        return key

    l2, l3 = cache_key(2), cache_key(3)
    keys: dict[str, dict[int, object]] = {
        "core": {c: by_id[c].core for c in ordered},
        "l2": {c: l2.get(c, ("cpu", c)) for c in ordered},
        "cluster": {
            c: by_id[c].cluster if by_id[c].cluster is not None else ("cpu", c) for c in ordered
        },
        "l3": {c: l3.get(c, ("cpu", c)) for c in ordered},
        "package": {c: by_id[c].package for c in ordered},
        "node": {c: by_id[c].node for c in ordered},
        "machine": {c: 0 for c in ordered},
    }
    candidates = [(kind, _partition(keys[kind], ordered)) for kind in _KINDS]
    first = candidates[0]
    rest = sorted(candidates[1:], key=lambda kc: -len(kc[1]))  # stable: ties keep contract order

    parts: list[tuple[str, list[frozenset[int]]]] = [first]
    for kind, part in rest:
        joined = _join(parts[-1][1], part)
        if joined != parts[-1][1]:
            parts.append((kind, joined))

    # Caches by the usable CPUs they serve, so each group finds its own in O(1).
    serving: dict[frozenset[int], list[Cache]] = {}
    for k in machine.caches:
        serving.setdefault(k.cpus & cpus, []).append(k)

    levels: list[Level] = []
    paths: dict[int, list[int]] = {c: [] for c in ordered}
    for depth, (kind, groups) in enumerate(parts):
        upper = parts[depth + 1][1] if depth + 1 < len(parts) else None
        upper_of = {c: n for n, g in enumerate(upper) for c in g} if upper else {}
        out = []
        for n, g in enumerate(groups):
            for c in g:
                paths[c].append(n)
            nodes = {by_id[c].node for c in g}
            out.append(
                Group(
                    level=depth,
                    index=n,
                    cpus=g,
                    caches=tuple(serving.get(g, ())),
                    node=nodes.pop() if len(nodes) == 1 else None,
                    parent=upper_of[min(g)] if upper else None,
                )
            )
        levels.append(Level(depth=depth, kind=kind, groups=tuple(out)))
    return Universe(levels=tuple(levels), cpu_path={c: tuple(p) for c, p in paths.items()})


def _partition(key: dict[int, object], ordered: list[int]) -> list[frozenset[int]]:
    acc: dict[object, list[int]] = {}
    for c in ordered:
        acc.setdefault(key[c], []).append(c)
    return sorted((frozenset(v) for v in acc.values()), key=min)


def _join(a: list[frozenset[int]], b: list[frozenset[int]]) -> list[frozenset[int]]:
    """The finest partition coarser than both ``a`` and ``b`` (union-find over shared CPUs)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for part in (a, b):
        for g in part:
            it = iter(g)
            r = find(next(it))
            for x in it:
                s = find(x)
                if s != r:
                    parent[s] = r
    acc: dict[int, set[int]] = {}
    for x in parent:
        acc.setdefault(find(x), set()).add(x)
    return sorted((frozenset(v) for v in acc.values()), key=min)
