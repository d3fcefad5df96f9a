"""The scheduling universe's invariants, on all 14 real machines and this one.

Invariants (from actorq/topology/universe.py): every usable CPU is in exactly
one group per level; groups nest (each group of level k+1 is a union of
groups of level k, and ``parent`` says which); no level is the same partition
as the one below it; a uniprocessor is one level.
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import MACHINES
from hypothesis import given, settings
from hypothesis import strategies as st

from actorq.errors import ActorqTopologyError
from actorq.topology import build_universe, discover
from actorq.topology.model import Cache, Core, Cpu, Machine, NumaNode, Package
from actorq.topology.universe import Universe

KIND_ORDER = ("core", "l2", "cluster", "l3", "package", "node", "machine")


@pytest.fixture(scope="module")
def machines(hwloc_trees) -> dict[str, Machine]:
    found = {name: discover(str(root)) for name, root in hwloc_trees.items()}
    found["live"] = discover("/")
    return found


def check_invariants(m: Machine, u: Universe, cpus: frozenset[int]) -> None:
    assert u.cpus == cpus
    assert u.levels, "a universe has at least one level"
    kinds = [lv.kind for lv in u.levels]
    assert len(set(kinds)) == len(kinds), f"duplicate level kind in {kinds}"
    assert kinds[0] == "core"
    for depth, lv in enumerate(u.levels):
        assert lv.depth == depth
        seen: set[int] = set()
        for n, g in enumerate(lv.groups):
            assert g.level == depth
            assert g.index == n
            assert g.cpus
            assert not (g.cpus & seen), "a CPU in two groups of one level"
            seen |= g.cpus
            for c in g.cpus:
                assert u.cpu_path[c][depth] == n
                assert u.group_of(c, depth) is g
            # Caches: shared by all the group's CPUs and by no other usable CPU.
            for k in g.caches:
                assert k.cpus & cpus == g.cpus
            nodes = {m.cpus[c].node for c in g.cpus}
            assert g.node == (next(iter(nodes)) if len(nodes) == 1 else None)
        assert seen == cpus, "every usable CPU is in exactly one group per level"
        if depth + 1 < len(u.levels):
            upper = u.levels[depth + 1]
            assert len(upper.groups) < len(lv.groups), "a level equal to the one below"
            for g in lv.groups:
                assert g.parent is not None
                assert g.cpus <= upper.groups[g.parent].cpus
        else:
            assert all(g.parent is None for g in lv.groups)
    # Level 0 is the cores: SMT siblings together.
    for g in u.levels[0].groups:
        assert len({m.cpus[c].core for c in g.cpus}) == 1
    assert all(len(path) == len(u.levels) for path in u.cpu_path.values())


@pytest.mark.parametrize("name", [*MACHINES, "live"])
@pytest.mark.parametrize("view", ["allowed", "all"])
def test_invariants(machines, name, view):
    m = machines[name]
    u = build_universe(m, view)
    check_invariants(m, u, m.allowed_cpus if view == "allowed" else m.online_cpus)


def _levels(m: Machine, view: str = "allowed") -> list[tuple[str, int]]:
    return [(lv.kind, len(lv.groups)) for lv in build_universe(m, view).levels]


def test_known_shapes(machines):
    """A few machines whose right answer is clear from their README rows."""
    # Kunpeng 920: clusters of 4 cores, an L3 per NUMA node, 2 packages.
    assert _levels(machines["128arm-2pa2n8cluster4co.tar.bz2"]) == [
        ("core", 128),
        ("cluster", 32),
        ("l3", 4),
        ("package", 2),
        ("machine", 1),
    ]
    # Raptor Lake: 6 SMT P-cores; E-cores share an L2 per 4; one L3.
    assert _levels(machines["20em64t-hybrid-1p6c2t+2ca4co1t.tar.bz2"]) == [
        ("core", 14),
        ("l2", 8),
        ("l3", 1),
    ]
    # SNC2: a NUMA node is finer than the package's L3, so it sits below it.
    assert _levels(machines["memorysidecaches.tar.bz2"]) == [
        ("core", 40),
        ("node", 4),
        ("l3", 2),
        ("machine", 1),
    ]
    # POWER7 LPAR: no socket information; NUMA nodes group the cores.
    assert _levels(machines["256ppc-8n8s4t.tar.bz2"]) == [
        ("core", 64),
        ("node", 8),
        ("machine", 1),
    ]
    # cgroup2 cpuset 0-5: only one package's first six cores are usable.
    assert _levels(machines["32amd64-4s2n4c-cgroup2.tar.bz2"]) == [
        ("core", 6),
        ("l3", 2),
        ("package", 1),
    ]
    assert _levels(machines["32amd64-4s2n4c-cgroup2.tar.bz2"], "all")[-1] == ("machine", 1)


def test_level_kinds_are_known(machines):
    for m in machines.values():
        for lv in build_universe(m).levels:
            assert lv.kind in KIND_ORDER


def _only(m: Machine, cpus: set[int]) -> Machine:
    """The same machine with only ``cpus`` allowed (as a cpuset would)."""
    new = {c.id: dataclasses.replace(c, allowed=c.online and c.id in cpus) for c in m.cpus.values()}
    return dataclasses.replace(m, cpus=new)


def test_uniprocessor_is_one_level(machines):
    for name in ("256ppc-8n8s4t.tar.bz2", "2arm-2c.tar.bz2", "live"):
        m = _only(machines[name], {min(machines[name].online_cpus)})
        u = build_universe(m)
        assert len(u.levels) == 1
        assert u.levels[0].kind == "core"
        check_invariants(m, u, m.allowed_cpus)


def test_no_usable_cpu_is_an_error(machines):
    m = _only(machines["2arm-2c.tar.bz2"], set())
    with pytest.raises(ActorqTopologyError, match="no usable CPU"):
        build_universe(m)


def test_bad_view_is_rejected(machines):
    with pytest.raises(ValueError, match="view"):
        build_universe(machines["live"], "some")


def test_group_caches_on_live_machine(machines):
    """Each core group carries its private caches; the top group the shared ones."""
    m = machines["live"]
    u = build_universe(m)
    for g in u.levels[0].groups:
        for cid in m.cpus[min(g.cpus)].caches:
            k = m.caches[cid]
            if k.cpus & m.allowed_cpus == g.cpus:
                assert k in g.caches


# ------------------------------------------------- arbitrary (even inconsistent) machines


def _groups(keys: list[int]) -> list[frozenset[int]]:
    acc: dict[int, set[int]] = {}
    for cpu, k in enumerate(keys):
        acc.setdefault(k, set()).add(cpu)
    return sorted((frozenset(v) for v in acc.values()), key=min)


@st.composite
def random_machines(draw) -> Machine:
    """Machines whose cores, caches, clusters, packages and nodes need not nest."""
    n = draw(st.integers(min_value=1, max_value=24))
    key = st.lists(st.integers(min_value=0, max_value=n), min_size=n, max_size=n)
    cores = _groups(draw(key))
    packages = _groups(draw(key))
    core_of = {c: i for i, g in enumerate(cores) for c in g}
    pkg_of = {c: i for i, g in enumerate(packages) for c in g}
    caches: list[Cache] = []
    for level in (2, 3):
        for g in _groups(draw(key)):
            caches.append(Cache(len(caches), level, "unified", 1 << 20, 64, 8, None, g))
    clusters = draw(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=n, max_size=n))
    node_keys = draw(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=n, max_size=n))
    allowed = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if not any(allowed):
        allowed[0] = True
    cpus = {
        c: Cpu(
            id=c,
            online=True,
            allowed=allowed[c],
            package=pkg_of[c],
            core=core_of[c],
            node=node_keys[c],
            type=0,
            cluster=clusters[c],
            caches=tuple(k.id for k in caches if c in k.cpus),
        )
        for c in range(n)
    }
    nodes = {
        nid: NumaNode(
            nid, frozenset(c for c in range(n) if node_keys[c] == nid), None, None, {}, {}
        )
        for nid in {k for k in node_keys if k is not None}
    }
    return Machine(
        root="<hypothesis>",
        cpus=cpus,
        cores=tuple(Core(i, None, g) for i, g in enumerate(cores)),
        packages=tuple(Package(i, g, ()) for i, g in enumerate(packages)),
        caches=tuple(caches),
        nodes=nodes,
        types=(),
    )


@settings(max_examples=150, deadline=None)
@given(random_machines(), st.sampled_from(["allowed", "all"]))
def test_invariants_hold_for_any_machine(m, view):
    """Joining each candidate with the level below keeps the invariants even
    when the kernel's sets do not nest (hand-edited trees, odd firmware)."""
    u = build_universe(m, view)
    check_invariants(m, u, m.allowed_cpus if view == "allowed" else m.online_cpus)
