"""Placement rules on small synthetic machines whose shape each test states."""

from __future__ import annotations

import pytest
from test_placement_machines import KiB, MiB, synthetic, universe_of

from actorq import PlacementError
from actorq.placement import Hints, Placer, plan


def placer(**shape: object) -> Placer:
    m = synthetic(**shape)  # type: ignore[arg-type]
    return Placer(universe_of(m), m)


def place_n(p: Placer, n: int, prefix: str = "a", **hints: object) -> list[int]:
    return [p.place(f"{prefix}{i}", Hints(**hints)).cpu for i in range(n)]  # type: ignore[arg-type]


def core_of(p: Placer, cpu: int) -> int | None:
    return p.machine.cpus[cpu].core


# --- spread -------------------------------------------------------------------------------


def test_private_actors_take_packages_then_cores_then_smt_siblings() -> None:
    p = placer(packages=2, cores_per_node=4, smt=2)
    cpus = place_n(p, 16)
    pkgs = [p.machine.cpus[c].package for c in cpus]
    assert pkgs[:2] == [0, 1]
    cores = [core_of(p, c) for c in cpus]
    assert len(set(cores[:8])) == 8, "eight actors on eight distinct cores before any sibling"
    assert len(set(cpus)) == 16
    assert "SMT sibling" in p.placements["a8"].reason
    # Every CPU has one: the next one doubles up, with a reason that says so.
    p.place("extra", Hints())
    assert "every cpu busy" in p.placements["extra"].reason


def test_sibling_numbering_does_not_fool_the_spread() -> None:
    # Core n = CPUs n and n+8: the first 8 actors must use CPUs 0-7, one per core.
    p = placer(packages=2, cores_per_node=4, smt=2, sibling_numbering=True)
    assert sorted(place_n(p, 8)) == list(range(8))


def test_snc_nodes_inside_packages_are_spread_first() -> None:
    p = placer(packages=2, nodes_per_package=2, cores_per_node=3, l3="package")
    cpus = place_n(p, 4)
    assert sorted(p.machine.cpus[c].node for c in cpus) == [0, 1, 2, 3]
    assert sorted(p.machine.cpus[c].package for c in cpus[:2]) == [0, 1]


def test_sparse_node_ids_and_unequal_nodes_balance_per_core() -> None:
    # Node 7 has 1 usable core, node 40 has 4: after one each, the bigger node fills first.
    m = synthetic(packages=2, cores_per_node=4, node_ids=[7, 40], allowed={0, 4, 5, 6, 7})
    p = Placer(universe_of(m), m)
    cpus = place_n(p, 5)
    assert {m.cpus[c].node for c in cpus[:2]} == {7, 40}
    assert sorted(cpus) == [0, 4, 5, 6, 7]


def test_an_empty_node_wins_over_a_less_loaded_package() -> None:
    # Package 0 keeps 2 cores per node (cpuset), package 1 has 8 per node. Per-core balance
    # alone would put the 4th actor in package 1's busy nodes; node 1 is still empty.
    allowed = {0, 1, 8, 9} | set(range(16, 32))
    m = synthetic(packages=2, nodes_per_package=2, cores_per_node=8, allowed=allowed)
    p = Placer(universe_of(m), m)
    cpus = place_n(p, 4)
    assert sorted(m.cpus[c].node for c in cpus) == [0, 1, 2, 3]


def test_hybrid_prefers_fast_cores_then_slow_cores_then_siblings() -> None:
    # Per node: 2 performance cores with SMT2, then 2 efficiency cores (the last 2 cores).
    m = synthetic(cores_per_node=4, smt=2, efficiency_cores=2)
    p = Placer(universe_of(m), m)
    cpus = place_n(p, 4)
    kinds = [m.cpus[c].type for c in cpus]
    assert kinds == [0, 0, 1, 1], "fast cores first, then slow cores, before any SMT sibling"
    assert "performance core" in p.placements["a0"].reason
    q = Placer(universe_of(m), m, prefer_fast=False)
    assert [m.cpus[c].type for c in place_n(q, 2)] == [0, 0]  # plain order: lowest CPUs


def test_weights_balance_once_every_cpu_is_busy() -> None:
    p = placer(cores_per_node=2)
    p.place("heavy", Hints(weight=3.0))
    p.place("light", Hints())
    # Both CPUs busy; the next three go to the light one until it catches up.
    cpus = place_n(p, 2, prefix="x")
    light = p.placements["light"].cpu
    assert cpus == [light, light]
    assert p.load()[light] == 3.0


def test_large_fanout_uses_the_heap_and_stays_correct_after_release() -> None:
    p = placer(cores_per_node=40, l3="package")  # 40 core children under one group
    cpus = place_n(p, 40)
    assert sorted(cpus) == list(range(40))
    for name in ("a7", "a31", "a3"):
        p.release(name)
    again = place_n(p, 3, prefix="b")
    assert sorted(again) == [3, 7, 31]


def test_release_frees_the_cpu_for_the_next_actor() -> None:
    p = placer(packages=2, cores_per_node=2)
    place_n(p, 4)
    freed = p.release("a2")
    assert freed is not None
    assert p.release("a2") is None
    assert p.place("b", Hints()).cpu == freed.cpu
    with pytest.raises(PlacementError, match="already placed"):
        p.place("b", Hints())


# --- compress -----------------------------------------------------------------------------


def test_group_that_fits_the_core_cache_shares_one_core() -> None:
    p = placer(packages=2, cores_per_node=4, smt=2, l2=1 * MiB)
    cpus = place_n(p, 3, prefix="kv", group="kv", footprint=256 * KiB)
    assert core_of(p, cpus[0]) == core_of(p, cpus[1]), "SMT siblings: the data fits the core"
    assert core_of(p, cpus[2]) != core_of(p, cpus[0])
    assert p.machine.cpus[cpus[2]].package == p.machine.cpus[cpus[0]].package
    assert "fits the 1 MiB L2" in p.placements["kv0"].reason


def test_group_that_fits_l3_stays_in_its_package_on_distinct_cores() -> None:
    p = placer(packages=2, cores_per_node=4, smt=2, l3_size=16 * MiB)
    cpus = place_n(p, 4, prefix="kv", group="kv", footprint=8 * MiB)
    assert len({p.machine.cpus[c].package for c in cpus}) == 1
    assert len({core_of(p, c) for c in cpus}) == 4, "no SMT sibling while a core of the L3 is free"
    assert "fits the 16 MiB L3" in p.placements["kv0"].reason
    # Then SMT siblings inside the node, before leaving it.
    more = place_n(p, 4, prefix="kw", group="kv")
    assert {p.machine.cpus[c].package for c in more} == {p.machine.cpus[cpus[0]].package}


def test_group_in_a_shared_l2_takes_a_free_core_before_an_smt_sibling() -> None:
    # The footprint needs the L2 two cores share: not one core's own cache, so a third
    # member goes to another core of the node rather than onto an SMT sibling.
    p = placer(cores_per_node=4, smt=2, l2_cores=2, l1=32 * KiB, l2=2 * MiB)
    cpus = place_n(p, 3, prefix="kv", group="kv", footprint=1 * MiB)
    assert len({core_of(p, c) for c in cpus}) == 3
    assert "expanded to" in p.placements["kv2"].reason


def test_group_spills_to_the_nearest_node_by_distance() -> None:
    # Nodes 0..3, one package each; node 0's nearest is node 3, not node 1.
    d = {(0, 1): 30, (0, 2): 30, (0, 3): 15, (1, 2): 20, (1, 3): 20, (2, 3): 20}
    m = synthetic(packages=4, cores_per_node=2, distances=d)
    p = Placer(universe_of(m), m)
    cpus = place_n(p, 3, prefix="kv", group="kv", footprint=1 * MiB)
    assert [m.cpus[c].node for c in cpus] == [0, 0, 3]
    assert "spilled to node 3" in p.placements["kv2"].reason
    assert "distance 15" in p.placements["kv2"].reason
    assert p.placements["kv2"].how == "spilled"


def test_a_group_that_starts_on_a_full_node_still_calls_it_home() -> None:
    # Found by the property test: the first member, pinned to a full node, shares a CPU;
    # the next one must spill from that node, not start the group over elsewhere.
    p = placer(nodes_per_package=2, cores_per_node=1)
    place_n(p, 1)
    assert p.place("kv0", Hints(group="kv", node=0)).how == "overloaded"
    nxt = p.place("kv1", Hints(group="kv"))
    assert nxt.how == "spilled"
    assert "node 0 is full" in nxt.reason


def test_group_larger_than_every_cache_is_kept_in_one_node() -> None:
    p = placer(packages=2, nodes_per_package=2, cores_per_node=2, l3="node", l3_size=4 * MiB)
    cpus = place_n(p, 2, prefix="kv", group="kv", footprint=64 * MiB)
    assert len({p.machine.cpus[c].node for c in cpus}) == 1
    assert "exceeds every cache" in p.placements["kv0"].reason


def test_snc_group_stays_in_one_node_of_the_shared_l3() -> None:
    # L3 spans the package (2 nodes): the group must still stay within one node.
    p = placer(packages=2, nodes_per_package=2, cores_per_node=3, l3="package")
    cpus = place_n(p, 3, prefix="kv", group="kv", footprint=4 * MiB)
    assert len({p.machine.cpus[c].node for c in cpus}) == 1


def test_private_writes_never_share_a_core_while_one_is_free() -> None:
    p = placer(cores_per_node=4, smt=2)
    cpus = place_n(p, 4, prefix="kv", group="kv", footprint=16 * KiB, writes="private")
    assert len({core_of(p, c) for c in cpus}) == 4


def test_groups_are_spread_from_each_other() -> None:
    p = placer(packages=2, cores_per_node=4)
    a = place_n(p, 2, prefix="a", group="a", footprint=1 * MiB)
    b = place_n(p, 2, prefix="b", group="b", footprint=1 * MiB)
    pa = {p.machine.cpus[c].package for c in a}
    pb = {p.machine.cpus[c].package for c in b}
    assert len(pa) == 1
    assert len(pb) == 1
    assert pa != pb


def test_group_without_cache_information_is_compressed_into_the_node() -> None:
    m = synthetic(cores_per_node=2, l3="none")
    m = type(m)(**{**m.__dict__, "caches": ()})
    p = Placer(universe_of(m), m)
    p.place("kv0", Hints(group="kv"))
    assert "no cache information" in p.placements["kv0"].reason


def test_released_group_chooses_a_new_home() -> None:
    p = placer(packages=2, cores_per_node=2)
    place_n(p, 1, prefix="kv", group="kv")
    p.release("kv0")
    assert p.place("kv1", Hints(group="kv")).reason.startswith("group kv: compressed into")


# --- pins, sets, errors -------------------------------------------------------------------


def test_cpu_pin_wins_and_a_pin_outside_the_set_is_an_error() -> None:
    m = synthetic(packages=2, cores_per_node=2)
    p = Placer(universe_of(m), m, cpus=[0, 1, 2])
    assert p.place("x", Hints(cpu=2, group="kv")).cpu == 2
    assert p.placements["x"].how == "pinned"
    with pytest.raises(PlacementError, match=r"cpu 3, which is not one of the placer's cpus \(0-2"):
        p.place("y", Hints(cpu=3))


def test_node_pin_spreads_inside_that_node() -> None:
    p = placer(packages=2, cores_per_node=4)
    cpus = place_n(p, 3, node=1)
    assert {p.machine.cpus[c].node for c in cpus} == {1}
    assert len(set(cpus)) == 3
    assert p.placements["a0"].reason.startswith("pinned to node 1")
    with pytest.raises(PlacementError, match="does not have"):
        p.place("z", Hints(node=9))


def test_pin_to_cpu_less_node_runs_on_the_nearest_node_with_cpus() -> None:
    d = {(0, 2): 40, (1, 2): 17}
    m = synthetic(packages=2, cores_per_node=2, cpuless_nodes=1, distances=d)
    p = Placer(universe_of(m), m)
    pl = p.place("gpu-feeder", Hints(node=2))
    assert m.cpus[pl.cpu].node == 1
    assert "no cpus" in pl.reason
    assert "distance 17" in pl.reason


def test_cpu_less_nodes_are_never_chosen() -> None:
    m = synthetic(packages=2, cores_per_node=2, cpuless_nodes=2)
    p = Placer(universe_of(m), m)
    cpus = place_n(p, 6) + place_n(p, 6, prefix="kv", group="kv", footprint=1 << 40)
    assert {m.cpus[c].node for c in cpus} <= {0, 1}


def test_worker_cpus_and_cpuset_restrict_the_choice() -> None:
    m = synthetic(packages=2, cores_per_node=4, smt=2, allowed={0, 1, 2, 3, 8, 9})
    u = universe_of(m)
    p = Placer(u, m)
    assert set(place_n(p, 20)) == {0, 1, 2, 3, 8, 9}
    w = Placer(u, m, cpus=[1, 8])
    assert set(place_n(w, 5)) == {1, 8}
    with pytest.raises(PlacementError, match=r"cpus \[4\] are not usable"):
        Placer(u, m, cpus=[1, 4])


def test_offline_cpus_are_never_chosen() -> None:
    m = synthetic(packages=2, cores_per_node=2, offline={1, 2})
    p = Placer(universe_of(m), m)
    assert set(place_n(p, 8)) == {0, 3}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"state": "maybe"},
        {"state": "shared"},
        {"writes": "sometimes"},
        {"weight": 0},
        {"footprint": -1},
        {"cpu": -2},
    ],
)
def test_bad_hints_name_the_field(kwargs: dict[str, object]) -> None:
    field = next(iter(kwargs))
    with pytest.raises(PlacementError, match=field):
        Hints(**kwargs)  # type: ignore[arg-type]


def test_state_defaults_to_shared_only_with_a_group() -> None:
    assert Hints(group="kv").shared
    assert not Hints().shared
    assert not Hints(group="kv", state="private").shared


# --- determinism and the batch form ---------------------------------------------------------


def test_same_inputs_same_result() -> None:
    def run() -> list[tuple[int, str]]:
        p = placer(packages=2, nodes_per_package=2, cores_per_node=3, smt=2)
        out = []
        for i in range(30):
            h = Hints(group=f"g{i % 3}", footprint=(i % 4) * MiB) if i % 2 else Hints()
            pl = p.place(f"x{i}", h)
            out.append((pl.cpu, pl.reason))
            if i % 7 == 6:
                p.release(f"x{i - 3}")
        return out

    assert run() == run()


def test_plan_places_groups_before_private_actors_and_keeps_order() -> None:
    m = synthetic(packages=2, cores_per_node=4)
    u = universe_of(m)
    actors = [(f"web{i}", Hints()) for i in range(4)] + [
        (f"kv{i}", Hints(group="kv", footprint=1 * MiB)) for i in range(3)
    ]
    result = plan(u, m, actors)
    assert list(result.placements) == [name for name, _ in actors]
    kv = [result.placements[f"kv{i}"] for i in range(3)]
    assert len({pl.package for pl in kv}) == 1
    assert len(set(result.by_cpu())) == 7
    doc = result.to_json()
    assert set(doc["actors"][0]) == {"name", "group", "cpu", "core", "package", "node", "reason"}  # type: ignore[index]


def test_plan_counts_existing_load() -> None:
    m = synthetic(cores_per_node=4)
    result = plan(universe_of(m), m, {"a": Hints(), "b": Hints()}, load={0: 1.0, 1: 1.0})
    assert sorted(pl.cpu for pl in result.placements.values()) == [2, 3]


def test_replan_moves_actors_onto_a_new_worker_set() -> None:
    m = synthetic(packages=2, cores_per_node=2)
    u = universe_of(m)
    p = Placer(u, m)
    place_n(p, 4)
    again = p.replan(u, m, cpus=[0, 1])
    assert {pl.cpu for pl in again.placements.values()} == {0, 1}
