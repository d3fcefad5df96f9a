"""The machine and its universe as text (for people) or JSON (for programs).

JSON schema, version 1 (``SCHEMA``). Other tools read this: fields are only
ever added within a version; renaming or removing one bumps ``schema``. All
CPU sets are sorted lists of ints, sizes are bytes, and maps keyed by a
number (node ids, page sizes, IRQs) have string keys, as JSON requires.

::

    {
      "schema": 1,
      "root": "/",                         # where discovery read from
      "view": "allowed",                   # which CPUs the universe covers ("allowed" | "all")
      "numa_source": "libnuma: cross-checked, agrees with sysfs",
      "warnings": [str],                   # partial-result notes from discovery
      "base_page_size": 4096,
      "memory_total": int | null,          # /proc/meminfo MemTotal, bytes
      "hugepages": {"2097152": 0, ...},    # system-wide pools: page size -> nr_hugepages
      "types": [{"id", "vendor", "model_name", "family", "model", "stepping",
                 "kind",                   # "performance" | "efficiency" | null
                 "capacity",               # cpu_capacity or max MHz | null
                 "flags": [str], "cpus": [int]}],
      "packages": [{"id", "os_index", "cpus": [int], "cores": [int]}],
      "cores": [{"id", "package", "cpus": [int]}],
      "cpus": [{"id", "online", "allowed", "package", "core", "node", "type",
                "die", "cluster", "core_id", "siblings": [int], "caches": [int]}],
      "caches": [{"id", "level",
                  "type",                  # "data" | "instruction" | "unified"
                  "size", "line", "ways", "sets",   # line/ways/sets may be null
                  "cpus": [int]}],
      "numa_nodes": [{"id", "cpus": [int], "allowed", "memory_total", "memory_free",
                      "distances": {"<node id>": int},   # 10 = local
                      "page_sizes": {"<bytes>": int}}],  # pool count; base page: -1
      "devices": [{"name", "kind", "pci_address", "node", "local_cpus": [int],
                   "irq_affinity": {"<irq>": [int]}}],
      "limits": {"cpuset": [int] | null, "cpuset_source", "mems": [int] | null,
                 "affinity": [int] | null, "cpu_quota": float | null,
                 "isolated": [int], "nohz_full": [int]},
      "universe": {"levels": [{"depth", "kind",
                               "groups": [{"index", "cpus": [int], "caches": [int],
                                           "node", "parent"}]}]}
    }

Offline CPUs appear in ``cpus`` with ``online: false`` and null
package/core; ``universe`` covers only ``view``'s CPUs.
"""

from __future__ import annotations

from collections.abc import Iterable

from .cpulist import format_cpulist
from .model import Cache, Machine
from .universe import Universe

SCHEMA = 1


def _ints(cpus: Iterable[int] | None) -> list[int] | None:
    return None if cpus is None else sorted(cpus)


def to_json(machine: Machine, universe: Universe, view: str = "allowed") -> dict:
    """A JSON-ready dict in schema ``SCHEMA`` (see the module docstring)."""
    m = machine
    lim = m.limits
    return {
        "schema": SCHEMA,
        "root": m.root,
        "view": view,
        "numa_source": m.numa_source,
        "warnings": list(m.warnings),
        "base_page_size": m.base_page_size,
        "memory_total": m.memory_total,
        "hugepages": {str(k): v for k, v in m.hugepages.items()},
        "types": [
            {
                "id": t.id,
                "vendor": t.vendor,
                "model_name": t.model_name,
                "family": t.family,
                "model": t.model,
                "stepping": t.stepping,
                "kind": t.kind,
                "capacity": t.capacity,
                "flags": sorted(t.flags),
                "cpus": sorted(c.id for c in m.cpus.values() if c.online and c.type == t.id),
            }
            for t in m.types
        ],
        "packages": [
            {"id": p.id, "os_index": p.os_index, "cpus": _ints(p.cpus), "cores": list(p.cores)}
            for p in m.packages
        ],
        "cores": [{"id": k.id, "package": k.package, "cpus": _ints(k.cpus)} for k in m.cores],
        "cpus": [
            {
                "id": c.id,
                "online": c.online,
                "allowed": c.allowed,
                "package": c.package,
                "core": c.core,
                "node": c.node,
                "type": c.type,
                "die": c.die,
                "cluster": c.cluster,
                "core_id": c.core_id,
                "siblings": _ints(c.siblings),
                "caches": list(c.caches),
            }
            for c in sorted(m.cpus.values(), key=lambda c: c.id)
        ],
        "caches": [
            {
                "id": k.id,
                "level": k.level,
                "type": k.type,
                "size": k.size,
                "line": k.line,
                "ways": k.ways,
                "sets": k.sets,
                "cpus": _ints(k.cpus),
            }
            for k in m.caches
        ],
        "numa_nodes": [
            {
                "id": n.id,
                "cpus": _ints(n.cpus),
                "allowed": n.allowed,
                "memory_total": n.memory_total,
                "memory_free": n.memory_free,
                "distances": {str(k): v for k, v in sorted(n.distances.items())},
                "page_sizes": {str(k): v for k, v in sorted(n.page_sizes.items())},
            }
            for n in sorted(m.nodes.values(), key=lambda n: n.id)
        ],
        "devices": [
            {
                "name": d.name,
                "kind": d.kind,
                "pci_address": d.pci_address,
                "node": d.node,
                "local_cpus": _ints(d.local_cpus),
                "irq_affinity": {str(k): _ints(v) for k, v in sorted(d.irq_affinity.items())},
            }
            for d in m.devices
        ],
        "limits": {
            "cpuset": _ints(lim.cpuset),
            "cpuset_source": lim.cpuset_source,
            "mems": _ints(lim.mems),
            "affinity": _ints(lim.affinity),
            "cpu_quota": lim.cpu_quota,
            "isolated": _ints(lim.isolated),
            "nohz_full": _ints(lim.nohz_full),
        },
        "universe": {
            "levels": [
                {
                    "depth": lv.depth,
                    "kind": lv.kind,
                    "groups": [
                        {
                            "index": g.index,
                            "cpus": _ints(g.cpus),
                            "caches": [k.id for k in g.caches],
                            "node": g.node,
                            "parent": g.parent,
                        }
                        for g in lv.groups
                    ],
                }
                for lv in universe.levels
            ]
        },
    }


# --------------------------------------------------------------------------- text
def human_bytes(n: int | None) -> str:
    """4096 -> "4 KiB", 1288490188 -> "1.2 GiB"; exact units stay exact."""
    if n is None:
        return "?"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            text = f"{v:.0f}" if v >= 100 else f"{v:.2f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{n} B"


def _cache_name(k: Cache) -> str:
    suffix = {"data": "d", "instruction": "i", "unified": ""}[k.type]
    return f"L{k.level}{suffix}"


def _wrap(items: list[str], indent: str, width: int = 96) -> list[str]:
    lines, cur = [], indent
    for it in items:
        if len(cur) + len(it) + 1 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = indent
        cur += it + " "
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


_SHOW_GROUPS = 16  # per universe level in text; JSON has them all


def to_text(machine: Machine, universe: Universe, view: str = "allowed") -> str:
    """archdetect-style report: what is here, at a glance, then the details."""
    m = machine
    out: list[str] = []
    online = m.online_cpus
    allowed = m.allowed_cpus
    nodes = sorted(m.nodes.values(), key=lambda n: n.id)
    out.append(
        f"Machine ({m.root}): {len(online)} CPUs online of {len(m.cpus)}, "
        f"{len(allowed)} usable; {len(m.packages)} package(s), {len(m.cores)} core(s), "
        f"{len(nodes)} NUMA node(s), {human_bytes(m.memory_total)} memory"
    )
    lim = m.limits
    limit_bits = []
    if lim.cpuset is not None:
        mems = f", mems {format_cpulist(lim.mems)}" if lim.mems is not None else ""
        limit_bits.append(f"cpuset ({lim.cpuset_source}) {format_cpulist(lim.cpuset)}{mems}")
    if lim.affinity is not None:
        limit_bits.append(f"affinity {format_cpulist(lim.affinity)}")
    if lim.cpu_quota is not None:
        limit_bits.append(f"CPU quota {lim.cpu_quota:g} CPUs")
    if lim.isolated:
        limit_bits.append(f"isolated {format_cpulist(lim.isolated)}")
    if lim.nohz_full:
        limit_bits.append(f"nohz_full {format_cpulist(lim.nohz_full)}")
    if limit_bits:
        out.append("  limits: " + "; ".join(limit_bits))
    offline = sorted(set(m.cpus) - online)
    if offline:
        out.append(f"  offline CPUs: {format_cpulist(offline)}")
    out.append(f"  NUMA facts: {m.numa_source}")

    # Processor types, each with its caches (one line per geometry).
    out.append("")
    for t in m.types:
        cpus = sorted(c.id for c in m.cpus.values() if c.online and c.type == t.id)
        name = t.model_name or "unknown model"
        bits = [f"{t.vendor}" if t.vendor else None]
        if t.family is not None:
            bits.append(f"family {t.family} model {t.model} stepping {t.stepping}")
        if t.kind:
            bits.append(t.kind)
        if t.capacity is not None:
            bits.append(f"capacity {t.capacity}")
        extra = ", ".join(b for b in bits if b)
        extra = f" ({extra})" if extra else ""
        out.append(
            f"Processor type {t.id}: {name}{extra} x{len(cpus)}: CPUs {format_cpulist(cpus)}"
        )
        seen: dict[tuple, int] = {}
        for k in m.caches:
            if not (k.cpus & set(cpus)):
                continue
            key = (k.level, k.type, k.size, k.line, k.ways, len(k.cpus))
            seen[key] = seen.get(key, 0) + 1
        for (level, ctype, size, line, ways, share), count in seen.items():
            geo = [human_bytes(size)]
            if ways:
                geo.append(f"{ways}-way")
            if line:
                geo.append(f"{line} B lines")
            nm = _cache_name(Cache(0, level, ctype, size, line, ways, None, frozenset()))
            out.append(f"  {nm:<4} {', '.join(geo)}; {count} instance(s), {share} CPU(s) each")
        if len(t.flags) > 0:
            out.append(f"  {len(t.flags)} ISA flags")
    if not m.caches:
        out.append("  no cache information in sysfs")

    # Packages -> cores -> threads.
    out.append("")
    for p in m.packages:
        os_idx = f" (socket id {p.os_index})" if p.os_index is not None else ""
        head = f"Package {p.id}{os_idx}: {len(p.cores)} core(s), CPUs {format_cpulist(p.cpus)}"
        items = []
        for kid in p.cores:
            core = m.cores[kid]
            mark = "" if core.cpus <= allowed else ("-" if not core.cpus & allowed else "~")
            items.append(f"c{kid}[{format_cpulist(core.cpus)}]{mark}")
        line = f"{head}: {' '.join(items)}"
        if len(line) <= 96:  # small packages (one core, POWER LPARs) on one line
            out.append(line)
        else:
            out.append(head)
            out.extend(_wrap(items, "  "))
    if allowed != online:
        out.append("  (- : core not usable under the cpuset/affinity, ~ : partly usable)")

    # Memory nodes.
    out.append("")
    if not nodes:
        out.append(
            f"Memory: {human_bytes(m.memory_total)}, no NUMA nodes in sysfs (one flat memory)"
        )
    for n in nodes:
        pages = ", ".join(
            human_bytes(size) + ("" if count < 0 else f" x{count}")
            for size, count in sorted(n.page_sizes.items())
        )
        kind = "CPUs " + format_cpulist(n.cpus) if n.cpus else "no CPUs (memory only)"
        usable = "" if n.allowed else " [not in cpuset mems]"
        free = f", {human_bytes(n.memory_free)} free" if n.memory_free is not None else ""
        out.append(
            f"Node {n.id}: {human_bytes(n.memory_total)}{free}; {kind}; pages {pages}{usable}"
        )
    if len(nodes) > 1:
        ids = [n.id for n in nodes]
        w = max(4, *(len(str(i)) + 1 for i in ids))
        out.append("NUMA distances:")
        out.append(" " * 6 + "".join(f"{i:>{w}}" for i in ids))
        for n in nodes:
            row = "".join(f"{n.distances.get(j, '-'):>{w}}" for j in ids)
            out.append(f"  {n.id:>4}{row}")

    # Devices.
    if m.devices:
        out.append("")
        out.append("Devices:")
        for d in m.devices:
            where = f"node {d.node}" if d.node is not None else "node unknown"
            pci = f" {d.pci_address}" if d.pci_address else ""
            irq = f", {len(d.irq_affinity)} IRQ(s)" if d.irq_affinity else ""
            out.append(f"  {d.name} ({d.kind}{pci}): {where}{irq}")

    # Universe.
    out.append("")
    out.append(f"Scheduling universe ({view} CPUs: {format_cpulist(universe.cpus)}):")
    for lv in universe.levels:
        items = [f"[{format_cpulist(g.cpus)}]" for g in lv.groups[:_SHOW_GROUPS]]
        if len(lv.groups) > _SHOW_GROUPS:
            items.append(f"... {len(lv.groups) - _SHOW_GROUPS} more (see --json)")
        # Name only the caches every group of the level shares (hybrid levels mix kinds).
        names = [{_cache_name(k) for k in g.caches} for g in lv.groups]
        common = sorted(set.intersection(*names)) if names else []
        what = " sharing " + " ".join(common) if common else ""
        head = f"  {lv.depth} {lv.kind:<8} {len(lv.groups):>3} group(s){what}: "
        wrapped = _wrap(items, " " * len(head))
        wrapped[0] = head + wrapped[0].lstrip()
        out.extend(wrapped)

    if m.warnings:
        out.append("")
        out.append("Warnings:")
        out.extend(f"  {w}" for w in m.warnings)
    return "\n".join(out) + "\n"
