"""Small synthetic machines for placement tests: packages x nodes x cores x SMT.

Real machines come from the hwloc fixtures; these let a test say exactly what
shape it wants (sibling numbering, SNC nodes, hybrid types, cpusets, CPU-less
nodes) in one line. The universe is built here by the contract's rule
(partitions bottom-up, duplicates dropped) so placement can be tested before
and independently of ``actorq.topology.build_universe``.
"""

from __future__ import annotations

from actorq.topology.model import Cache, Core, Cpu, CpuType, Machine, NumaNode, Package
from actorq.topology.universe import Group, Level, Universe

KiB = 1 << 10
MiB = 1 << 20


def synthetic(
    packages: int = 1,
    nodes_per_package: int = 1,
    cores_per_node: int = 4,
    smt: int = 1,
    *,
    l2_cores: int = 1,
    l3: str = "package",  # "package" | "node" | "none"
    sibling_numbering: bool = False,
    allowed: set[int] | None = None,
    offline: set[int] | None = None,
    cpuless_nodes: int = 0,
    node_ids: list[int] | None = None,
    distances: dict[tuple[int, int], int] | None = None,
    efficiency_cores: int = 0,  # the last N cores of each node are a slower type
    l1: int = 48 * KiB,
    l2: int = 1 * MiB,
    l3_size: int = 16 * MiB,
) -> Machine:
    ncores = packages * nodes_per_package * cores_per_node
    nnodes = packages * nodes_per_package
    ids = node_ids or list(range(nnodes + cpuless_nodes))
    cpus: dict[int, Cpu] = {}
    cores: list[Core] = []
    caches: list[Cache] = []
    core_cpus: list[list[int]] = []
    for g in range(ncores):
        pkg = g // (nodes_per_package * cores_per_node)
        node_pos = g // cores_per_node
        tids = [g + t * ncores if sibling_numbering else g * smt + t for t in range(smt)]
        core_cpus.append(tids)
        slow = (g % cores_per_node) >= cores_per_node - efficiency_cores
        for t in tids:
            cpus[t] = Cpu(
                id=t,
                online=t not in (offline or set()),
                allowed=allowed is None or t in allowed,
                package=pkg,
                core=g,
                node=ids[node_pos],
                type=1 if slow else 0,
                siblings=frozenset(tids),
            )
        cores.append(Core(id=g, package=pkg, cpus=frozenset(tids)))

    def add_cache(level: int, size: int, members: list[int], ctype: str = "unified") -> None:
        caches.append(
            Cache(
                id=len(caches), level=level, type=ctype, size=size, line=64, ways=8, sets=None,
                cpus=frozenset(members),
            )
        )

    for g in range(ncores):
        add_cache(1, l1, core_cpus[g], "data")
        add_cache(1, 32 * KiB, core_cpus[g], "instruction")
    for n0 in range(0, ncores, cores_per_node):  # L2s group cores inside one node
        for g0 in range(n0, n0 + cores_per_node, l2_cores):
            span = range(g0, min(g0 + l2_cores, n0 + cores_per_node))
            add_cache(2, l2, [c for g in span for c in core_cpus[g]])
    if l3 != "none":
        span = cores_per_node * (nodes_per_package if l3 == "package" else 1)
        for g0 in range(0, ncores, span):
            add_cache(3, l3_size, [c for g in range(g0, g0 + span) for c in core_cpus[g]])
    with_caches = {
        c: tuple(x.id for x in sorted(caches, key=lambda k: k.level) if c in x.cpus) for c in cpus
    }
    cpus = {c: _replace_caches(cpu, with_caches[c]) for c, cpu in cpus.items()}
    pkgs = tuple(
        Package(
            id=p,
            cpus=frozenset(c for c, cpu in cpus.items() if cpu.package == p),
            cores=tuple(g for g in range(ncores) if cores[g].package == p),
        )
        for p in range(packages)
    )

    def dist(a: int, b: int) -> int:
        if distances and (a, b) in distances:
            return distances[(a, b)]
        if distances and (b, a) in distances:
            return distances[(b, a)]
        if a == b:
            return 10
        pa, pb = ids.index(a), ids.index(b)
        if pa >= nnodes or pb >= nnodes:
            return 40
        return 12 if pa // nodes_per_package == pb // nodes_per_package else 20

    nodes = {
        n: NumaNode(
            id=n,
            cpus=frozenset(c for c, cpu in cpus.items() if cpu.node == n),
            memory_total=8 << 30,
            memory_free=4 << 30,
            distances={m: dist(n, m) for m in ids},
            page_sizes={},
        )
        for n in ids
    }
    hybrid = bool(efficiency_cores)
    types = (
        CpuType(id=0, kind="performance" if hybrid else None, capacity=1024 if hybrid else None),
    )
    if efficiency_cores:
        types += (CpuType(id=1, kind="efficiency", capacity=512),)
    return Machine(
        root="/synthetic",
        cpus=cpus,
        cores=tuple(cores),
        packages=pkgs,
        caches=tuple(caches),
        nodes=nodes,
        types=types,
    )


def _replace_caches(cpu: Cpu, ids: tuple[int, ...]) -> Cpu:
    from dataclasses import replace

    return replace(cpu, caches=ids)


def universe_of(machine: Machine) -> Universe:
    """Levels bottom-up over the usable CPUs: core, l2, l3, package, node, machine."""
    usable = machine.allowed_cpus
    cands: list[tuple[str, list[frozenset[int]]]] = []
    cands.append(("core", [c.cpus & usable for c in machine.cores]))
    for lvl, kind in ((2, "l2"), (3, "l3")):
        cands.append((kind, [k.cpus & usable for k in machine.caches if k.level == lvl]))
    cands.append(("package", [p.cpus & usable for p in machine.packages]))
    cands.append(("node", [n.cpus & usable for n in machine.nodes.values()]))
    cands.append(("machine", [usable]))
    parts: list[tuple[str, list[frozenset[int]]]] = []
    for kind, groups in cands:
        groups = sorted({g for g in groups if g}, key=min)
        if not groups or sum(len(g) for g in groups) != len(usable):
            continue  # no such level (e.g. no L3 caches)
        parts.append((kind, groups))
    parts.sort(key=lambda kg: -len(kg[1]))  # finest first; stable keeps core < l2 < ... order
    levels: list[tuple[str, list[frozenset[int]]]] = []
    for kind, groups in parts:
        if levels and set(levels[-1][1]) == set(groups):
            continue
        if levels:  # must nest
            for g in levels[-1][1]:
                assert any(g <= h for h in groups), f"{kind} does not nest"
        levels.append((kind, groups))
    out: list[Level] = []
    cpu_path: dict[int, list[int]] = {c: [] for c in usable}
    for depth, (kind, groups) in enumerate(levels):
        up = levels[depth + 1][1] if depth + 1 < len(levels) else None
        gs = []
        for i, g in enumerate(groups):
            parent = next(j for j, h in enumerate(up) if g <= h) if up else None
            nodes = {machine.cpus[c].node for c in g}
            gs.append(
                Group(
                    level=depth,
                    index=i,
                    cpus=g,
                    caches=tuple(k for k in machine.caches if k.cpus & usable == g),
                    node=next(iter(nodes)) if len(nodes) == 1 else None,
                    parent=parent,
                )
            )
            for c in g:
                cpu_path[c].append(i)
        out.append(Level(depth=depth, kind=kind, groups=tuple(gs)))
    return Universe(levels=tuple(out), cpu_path={c: tuple(p) for c, p in cpu_path.items()})
