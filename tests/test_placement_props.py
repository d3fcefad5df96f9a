"""Property tests: random machines, random hint mixes, random releases; the rules always hold."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_placement_machines import KiB, MiB, synthetic, universe_of

from actorq.placement import Hints, Placer
from actorq.topology import build_universe
from actorq.topology.model import Machine


@st.composite
def machines(draw: st.DrawFn) -> Machine:
    packages = draw(st.integers(1, 3))
    nodes_per_package = draw(st.integers(1, 2))
    cores_per_node = draw(st.integers(1, 5))
    smt = draw(st.sampled_from([1, 2, 4]))
    shape: dict[str, Any] = dict(
        packages=packages,
        nodes_per_package=nodes_per_package,
        cores_per_node=cores_per_node,
        smt=smt,
        l2_cores=draw(st.integers(1, 2)),
        l3=draw(st.sampled_from(["package", "node", "none"])),
        sibling_numbering=draw(st.booleans()),
        cpuless_nodes=draw(st.integers(0, 1)),
        efficiency_cores=draw(st.integers(0, cores_per_node - 1)),
    )
    ncpus = packages * nodes_per_package * cores_per_node * smt
    if draw(st.booleans()):
        shape["allowed"] = set(draw(st.sets(st.integers(0, ncpus - 1), min_size=1)))
    return synthetic(**shape)


def hint_mix(nodes: list[int]) -> st.SearchStrategy[Hints]:
    private = st.builds(Hints, weight=st.sampled_from([1.0, 1.0, 2.5]))
    shared = st.builds(
        Hints,
        group=st.sampled_from(["g0", "g1", "g2"]),
        footprint=st.sampled_from([None, 16 * KiB, 512 * KiB, 4 * MiB, 64 * MiB]),
        writes=st.sampled_from([None, "shared", "private"]),
    )
    pinned = st.builds(Hints, node=st.sampled_from(nodes))
    pinned_shared = st.builds(
        Hints, group=st.sampled_from(["g0", "g1"]), node=st.sampled_from(nodes)
    )
    return st.one_of(private, private, shared, shared, pinned, pinned_shared)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), real_universe=st.booleans())
def test_rules_hold_for_any_mix(data: st.DataObject, real_universe: bool) -> None:
    m = data.draw(machines())
    # Both this file's universe builder and topology's own must give a tree the rules hold on.
    u = build_universe(m) if real_universe else universe_of(m)
    p = Placer(u, m)
    cpus = sorted(p.cpus)
    hybrid = len({m.cpus[c].type for c in cpus}) > 1
    nodes = sorted({m.cpus[c].node for c in cpus})  # type: ignore[type-var]
    ops = data.draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("place"), hint_mix(nodes)),
                st.tuples(st.just("release"), st.integers(0, 1000)),
            ),
            max_size=3 * len(cpus) + 4,
        )
    )
    live: list[str] = []
    group_first_node: dict[str, int | None] = {}
    group_members: dict[str, set[str]] = {}
    results = []
    for i, (op, arg) in enumerate(ops):
        if op == "release":
            if live:
                name = live.pop(arg % len(live))
                pl = p.release(name)
                assert pl is not None
                if pl.group in group_members:
                    group_members[pl.group].discard(name)
            continue
        hints: Hints = arg  # type: ignore[assignment]
        before = p.counts()
        busy_cores = {m.cpus[c].core for c in cpus if before[c]}
        name = f"x{i}"
        pl = p.place(name, hints)
        live.append(name)
        results.append((pl.cpu, pl.reason))
        c = pl.cpu
        assert c in p.cpus
        assert pl.reason
        free_cpus = [x for x in cpus if not before[x]]
        if before[c]:
            # Doubling up only when nothing is free (within the pinned node, or the group's reach).
            scope = [x for x in free_cpus if hints.node is None or m.cpus[x].node == hints.node]
            assert not scope, (pl.reason, scope)
        if hints.node is not None:
            assert m.cpus[c].node == hints.node
        elif not hints.shared:
            # Private: a busy core only when every core is busy; on one-type machines,
            # a busy node/package only when every one is busy.
            if m.cpus[c].core in busy_cores:
                assert busy_cores >= {m.cpus[x].core for x in cpus}, pl.reason
            if not hybrid:
                for attr in ("node", "package"):
                    busy = {getattr(m.cpus[x], attr) for x in cpus if before[x]}
                    if getattr(m.cpus[c], attr) in busy:
                        assert busy >= {getattr(m.cpus[x], attr) for x in cpus}, (attr, pl.reason)
        if hints.shared:
            g = hints.group
            assert g is not None
            members = group_members.setdefault(g, set())
            if not members:
                group_first_node[g] = m.cpus[c].node
            home = group_first_node[g]
            if hints.node is None and pl.how == "spilled":
                assert not [x for x in free_cpus if m.cpus[x].node == home], pl.reason
            elif hints.node is None and pl.how == "compressed":
                assert m.cpus[c].node == home, pl.reason
            members.add(name)
        assert sum(p.counts().values()) == len(live)

    # Determinism: the same operations on a fresh placer give the same answers.
    q = Placer(u, m)
    again = []
    live2: list[str] = []
    for i, (op, arg) in enumerate(ops):
        if op == "release":
            if live2:
                q.release(live2.pop(arg % len(live2)))
            continue
        pl = q.place(f"x{i}", arg)  # type: ignore[arg-type]
        live2.append(f"x{i}")
        again.append((pl.cpu, pl.reason))
    assert again == results
