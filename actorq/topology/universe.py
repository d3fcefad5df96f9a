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
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Cache


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
