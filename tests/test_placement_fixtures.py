"""Placement on the 14 real machines (hwloc sysfs snapshots): the rules hold on each."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MACHINES

from actorq.placement import Hints, Placer
from actorq.topology import build_universe, discover
from actorq.topology.model import Machine


def load(hwloc_trees: dict[str, Path], name: str) -> tuple[Machine, Placer]:
    m = discover(str(hwloc_trees[name]))
    return m, Placer(build_universe(m), m)


def fresh(p: Placer) -> Placer:
    return Placer(p.universe, p.machine)


def assert_spread_order(p: Placer, n: int) -> None:
    """Each private actor lands in a node/package/core that was empty if any such was empty."""
    m = p.machine
    keys = {
        "node": lambda c: m.cpus[c].node,
        "package": lambda c: m.cpus[c].package,
        "core": lambda c: m.cpus[c].core,
        "cpu": lambda c: c,
    }
    used: dict[str, set[object]] = {k: set() for k in keys}
    every = {k: {f(c) for c in p.cpus} for k, f in keys.items()}
    for i in range(n):
        pl = p.place(f"w{i}", Hints())
        assert pl.cpu in p.cpus
        assert pl.reason
        for k, f in keys.items():
            v = f(pl.cpu)
            if v in used[k]:
                assert used[k] >= every[k], (
                    f"actor w{i} doubled up in {k} {v} while {sorted(every[k] - used[k], key=str)} "
                    f"were empty: {pl.reason}"
                )
            used[k].add(v)


@pytest.mark.parametrize("name", MACHINES)
def test_private_actors_spread_nodes_packages_cores_then_siblings(
    hwloc_trees: dict[str, Path], name: str
) -> None:
    _, p = load(hwloc_trees, name)
    assert_spread_order(p, len(p.cpus) + 3)


@pytest.mark.parametrize("name", MACHINES)
def test_only_allowed_cpus_and_all_of_them(hwloc_trees: dict[str, Path], name: str) -> None:
    m, p = load(hwloc_trees, name)
    cpus = {p.place(f"a{i}", Hints()).cpu for i in range(2 * len(p.cpus))}
    assert cpus == set(m.allowed_cpus)
    cpuless = {n for n, node in m.nodes.items() if not node.cpus}
    assert not {m.cpus[c].node for c in cpus} & cpuless


@pytest.mark.parametrize("name", MACHINES)
def test_group_that_fits_stays_in_one_cache_and_node(
    hwloc_trees: dict[str, Path], name: str
) -> None:
    m, p = load(hwloc_trees, name)
    data = [c for c in m.caches if c.type != "instruction"]
    llc = max(data, key=lambda c: (c.level, c.size), default=None)
    footprint = llc.size // 2 if llc else 1 << 20
    first = p.place("kv0", Hints(group="kv", footprint=footprint))
    room = {c for c in p.cpus if m.cpus[c].node == first.node}
    if llc is not None:
        home = next(c for c in data if first.cpu in c.cpus and c.size >= footprint)
        room &= home.cpus
        assert "fits the" in first.reason
    # SMT siblings only when the data fits one core's own cache: otherwise one per core.
    cores = {m.cpus[c].core for c in room}
    fits = len(room) if len(cores) == 1 else len(cores)
    members = [first] + [p.place(f"kv{i}", Hints(group="kv")) for i in range(1, min(4, fits))]
    assert {pl.cpu for pl in members} <= room, [pl.reason for pl in members]


@pytest.mark.parametrize("name", MACHINES)
def test_group_too_big_for_a_node_spills_to_the_nearest(
    hwloc_trees: dict[str, Path], name: str
) -> None:
    m, p = load(hwloc_trees, name)
    nodes = sorted({m.cpus[c].node for c in p.cpus}, key=lambda n: (n is None, n))
    huge = 1 << 40
    first = p.place("big0", Hints(group="big", footprint=huge))
    home_cpus = [c for c in p.cpus if m.cpus[c].node == first.node]
    members = [first] + [
        p.place(f"big{i}", Hints(group="big")) for i in range(1, len(home_cpus) + 1)
    ]
    assert {pl.cpu for pl in members[:-1]} == set(home_cpus), "fills its node first"
    last = members[-1]
    if len(nodes) < 2:
        assert last.how == "overloaded"
        return
    assert last.how == "spilled", last.reason
    dist = m.nodes[first.node].distances if first.node in m.nodes else {}
    others = [n for n in nodes if n != first.node]

    def far(n: int | None) -> tuple[bool, int, int]:
        return (True, 0, 0) if n is None else (False, dist.get(n, 1 << 20), n)

    nearest = min(others, key=far)
    assert last.node == nearest, last.reason


@pytest.mark.parametrize("name", MACHINES)
def test_pins_and_cpu_less_nodes(hwloc_trees: dict[str, Path], name: str) -> None:
    m, p = load(hwloc_trees, name)
    cpu = max(p.cpus)
    assert p.place("pinned", Hints(cpu=cpu)).cpu == cpu
    for n, node in sorted(m.nodes.items()):
        if node.cpus & p.cpus:
            assert m.cpus[p.place(f"on{n}", Hints(node=n)).cpu].node == n
        elif not node.cpus:
            pl = p.place(f"near{n}", Hints(node=n))
            assert pl.cpu in p.cpus
            assert "no cpus" in pl.reason


@pytest.mark.parametrize("name", MACHINES)
def test_same_inputs_same_placements(hwloc_trees: dict[str, Path], name: str) -> None:
    def run() -> list[tuple[int, str]]:
        _, p = load(hwloc_trees, name)
        out = []
        for i in range(3 * len(p.cpus) // 2 + 2):
            if i % 3 == 0:
                h = Hints(group=f"g{i % 4}", footprint=(i % 5) << 20)
            else:
                h = Hints(weight=1.0 + i % 2)
            out.append((p.place(f"x{i}", h).cpu, p.placements[f"x{i}"].reason))
            if i % 5 == 4:
                p.release(f"x{i - 2}")
        return out

    assert run() == run()


@pytest.mark.parametrize("name", [n for n in MACHINES if "hybrid-1p" in n or "gb10" in n])
def test_hybrid_machines_use_the_fast_cores_first(hwloc_trees: dict[str, Path], name: str) -> None:
    m, p = load(hwloc_trees, name)

    def speed(c: int) -> tuple[int, int]:
        t = next(t for t in m.types if t.id == m.cpus[c].type)
        return (t.capacity or 0, {"performance": 2, "efficiency": 0}.get(t.kind or "", 1))

    fastest = max(speed(c) for c in p.cpus)
    fast_cores = {m.cpus[c].core for c in p.cpus if speed(c) == fastest}
    assert 0 < len(fast_cores) < len({m.cpus[c].core for c in p.cpus})
    first = [p.place(f"a{i}", Hints()) for i in range(len(fast_cores))]
    assert {m.cpus[pl.cpu].core for pl in first} == fast_cores
    nxt = p.place("next", Hints())
    assert speed(nxt.cpu) != fastest, "slow cores before the fast cores' SMT siblings"


@pytest.mark.parametrize("name", MACHINES)
def test_group_that_fits_a_core_shares_that_core(hwloc_trees: dict[str, Path], name: str) -> None:
    m, p = load(hwloc_trees, name)
    own: list[int] = []
    for core in m.cores:
        sizes = [c.size for c in m.caches if c.type != "instruction" and c.cpus <= core.cpus]
        if core.cpus & p.cpus and sizes:
            own.append(max(sizes))
    if not own:
        pytest.skip("no per-core cache on this machine")
    first = p.place("kv0", Hints(group="kv", footprint=min(own)))
    siblings = sorted(c for c in p.cpus if m.cpus[c].core == first.core)
    members = [first] + [p.place(f"kv{i}", Hints(group="kv")) for i in range(1, len(siblings))]
    assert sorted(pl.cpu for pl in members) == siblings, [pl.reason for pl in members]
    assert "compressed into core" in first.reason
