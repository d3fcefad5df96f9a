"""Discovery: read /sys and /proc under a *root* and build a :class:`Machine`.

``discover(root)`` reads only files under ``root``. With ``root == "/"`` it
also asks the running kernel (through :class:`Live`, which tests replace):
the affinity mask and, when libnuma loads, NUMA distances and node CPUs to
cross-check sysfs. With any other root nothing comes from the live process,
so a snapshot of another machine (tests/fixtures/hwloc-sysfs) reads as that
machine.

What sysfs says and how it lies (all seen in real snapshots):

* Hex masks are the truth; ``*_list`` files may be stale in edited trees.
  Every set is intersected with the online CPUs.
* Offline CPUs keep ``cache/`` but lose ``topology/``; they are listed with
  ``online=False``, ``core=None`` and no caches. Node cpumaps hold online CPUs
  only; an offline CPU's node comes from its ``cpuN/nodeM`` or ``nodeM/cpuN``
  link (None when that node is absent).
* ``physical_package_id`` may be -1 (POWER LPARs): packages then come from the
  ``core_siblings``/``package_cpus`` masks alone, whatever they say.
* ``core_id`` is not unique (per die on Magny-Cours); cores are the distinct
  ``core_cpus``/``thread_siblings`` masks. On Bulldozer the two cores of a
  compute unit appear as thread siblings, so we count 32 where hwloc counts 64:
  sharing an L1i/L2/FPU is what a scheduler cares about.
* Files may end in NUL bytes or be empty; summary files (``node/has_cpu``) are
  not trusted, the ``nodeN/`` directories are.
* NUMA ids can be sparse; a ``distance`` row may be longer than the number of
  node directories (an offline node): columns are matched to ``node/possible``.
  Distances are kept only for nodes that exist.
* No ``node/`` directory (non-NUMA kernels): ``Machine.nodes`` is empty and
  every ``Cpu.node`` is None (hwloc invents one node; we do not).
* cgroup and cpuset mount points in ``proc/mounts`` are paths on the original
  machine and are re-rooted under ``root``. The cgroup path comes from
  ``proc/self/cgroup``, else ``proc/self/cpuset``. cgroup v2 uses
  ``cpuset.cpus.effective``; cgroup v1 prefers ``cpuset.effective_cpus`` (what
  the kernel enforces) over ``cpuset.cpus`` (what was asked for; hwloc reads
  this one); the legacy cpuset filesystem has ``cpus``/``mems``. The CPU
  quota is the tightest ``cpu.max`` (v2) or ``cpu.cfs_quota_us`` (v1) from the
  process's cgroup up to the mount root.
* The base page size of a snapshot comes from ``proc/hwloc-nofile-info``
  (written by hwloc-gather-topology); without it, 4096 is assumed.

Bad input: a root without ``sys/devices/system/cpu`` or a file that does not
parse raises :class:`ActorqTopologyError` naming the file and what was
expected. Missing pieces that leave a usable answer (an online CPU without
``topology/``, a CPU without caches while others have them, an unreadable
device) give a partial result and a line in ``Machine.warnings``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from ..errors import ActorqTopologyError
from .cpulist import parse_cpulist, parse_cpumask
from .model import Cache, Core, Cpu, CpuType, Device, Limits, Machine, NumaNode, Package

_CPU_DIR = "sys/devices/system/cpu"
_NODE_DIR = "sys/devices/system/node"
_CACHE_TYPES = {"Data": "data", "Instruction": "instruction", "Unified": "unified"}
_TYPE_ORDER = {"data": 0, "instruction": 1, "unified": 2}


def default_root() -> str:
    """``$ACTORQ_FSROOT`` or "/"."""
    return os.environ.get("ACTORQ_FSROOT") or "/"


# --------------------------------------------------------------------------- live
class Live:
    """What only the running kernel can say. Tests subclass this to replace it.

    Only used when discovering ``/``. Each method returns None when the answer
    is not available, never raises.
    """

    def affinity(self) -> frozenset[int] | None:
        try:
            return frozenset(os.sched_getaffinity(0))
        except OSError:
            return None

    def page_size(self) -> int | None:
        try:
            return os.sysconf("SC_PAGESIZE")
        except (OSError, ValueError):
            return None

    def numa(self) -> NumaApi | None:
        """libnuma through py-libnuma, or None if it does not load."""
        try:
            import numa  # py-libnuma: a ctypes layer over libnuma.so.1
        except Exception:  # missing library raises OSError/AttributeError at import
            return None
        try:
            if not numa.info.numa_available():
                return None
        except Exception:
            return None
        return _PyLibnuma(numa)


class NumaApi:
    """The three libnuma questions discovery asks."""

    name = "libnuma"

    def max_node(self) -> int:
        raise NotImplementedError

    def distance(self, a: int, b: int) -> int:
        raise NotImplementedError

    def node_cpus(self, node: int) -> frozenset[int]:
        raise NotImplementedError


class _PyLibnuma(NumaApi):
    def __init__(self, mod: object) -> None:
        self._info = mod.info  # type: ignore[attr-defined]

    def max_node(self) -> int:
        return int(self._info.get_max_node())

    def distance(self, a: int, b: int) -> int:
        return int(self._info.numa_distance(a, b))

    def node_cpus(self, node: int) -> frozenset[int]:
        return frozenset(self._info.node_to_cpus(node))


class NoLive(Live):
    """For snapshot roots: nothing comes from the running process."""

    def affinity(self) -> frozenset[int] | None:
        return None

    def page_size(self) -> int | None:
        return None

    def numa(self) -> NumaApi | None:
        return None


# --------------------------------------------------------------------------- files
class _Files:
    """Reads files under the root; every error names the file."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.warnings: list[str] = []
        self._prefix = root.rstrip("/") + "/"

    def path(self, rel: str) -> str:
        return self._prefix + rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        """File text without NULs and surrounding whitespace; None if absent."""
        try:
            fd = os.open(self.path(rel), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self.warnings.append(f"{self.path(rel)}: unreadable ({exc.strerror}); ignored")
            return None
        try:
            # procfs may return less than asked before the end: read to EOF.
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            data = b"".join(chunks)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise ActorqTopologyError(
                f"{self.path(rel)}: expected a file, found a directory"
            ) from None
        except OSError as exc:
            self.warnings.append(f"{self.path(rel)}: unreadable ({exc.strerror}); ignored")
            return None
        finally:
            os.close(fd)
        return data.replace(b"\x00", b"").decode("utf-8", "replace").strip()

    def parse(self, rel: str, parser: Callable[[str], object], what: str) -> object | None:
        text = self.read(rel)
        if text is None:
            return None
        try:
            return parser(text)
        except ValueError:
            raise ActorqTopologyError(
                f"{self.path(rel)}: expected {what}, found {text[:60]!r}"
            ) from None

    def integer(self, rel: str) -> int | None:
        return self.parse(rel, int, "an integer")  # type: ignore[return-value]

    def mask(self, rel: str) -> frozenset[int] | None:
        return self.parse(rel, parse_cpumask, "a hex CPU mask like 0000000f,ffff0000")  # type: ignore[return-value]

    def cpulist(self, rel: str) -> frozenset[int] | None:
        return self.parse(rel, parse_cpulist, "a CPU list like 0-3,8")  # type: ignore[return-value]

    def set_of(self, mask_rel: str, list_rel: str) -> frozenset[int] | None:
        got = self.mask(mask_rel)
        return got if got is not None else self.cpulist(list_rel)

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            self.warnings.append(f"{self.path(rel)}: unreadable ({exc.strerror}); ignored")
            return []

    def isdir(self, rel: str) -> bool:
        return os.path.isdir(self.path(rel))

    def link_target(self, rel: str) -> str | None:
        """A symlink's target resolved inside the root, as a root-relative path."""
        full = self.path(rel)
        if not os.path.lexists(full):
            return None
        real = os.path.realpath(full)
        base = os.path.realpath(self.root)
        if real != base and not real.startswith(base.rstrip("/") + "/"):
            return None
        return os.path.relpath(real, base)


def _ids(names: Iterable[str], prefix: str) -> list[int]:
    out = []
    n = len(prefix)
    for name in names:
        if name.startswith(prefix) and name[n:].isdigit():
            out.append(int(name[n:]))
    return sorted(out)


def _sibling_mask(
    f: _Files, t: str, name: str, old_name: str, online: frozenset[int], cpu: int
) -> frozenset[int]:
    """CPU ``cpu``'s online siblings from ``t/name`` (or the older ``t/old_name``
    where a kernel lacks it), always including ``cpu`` itself."""
    mask = f.set_of(f"{t}/{name}", f"{t}/{name}_list")
    if mask is None:
        mask = f.set_of(f"{t}/{old_name}", f"{t}/{old_name}_list")
    return (mask or frozenset()) & online | {cpu}


def _size(text: str) -> int:
    """ "48K" / "1024K" / "30M" / "12345" -> bytes."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)B?", text.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()]


@dataclass
class _CpuIds:
    """What one online CPU's topology directory says (None: not there)."""

    package_id: int | None = None
    core_id: int | None = None
    die_id: int | None = None
    cluster: frozenset[int] | None = None


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        p = self.parent.setdefault(x, x)
        while p != self.parent[p]:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        self.parent[x] = p
        return p

    def union_all(self, items: Iterable[int]) -> None:
        it = iter(items)
        first = next(it, None)
        if first is None:
            return
        r = self.find(first)
        for x in it:
            s = self.find(x)
            if s != r:
                self.parent[s] = r

    def groups(self) -> list[frozenset[int]]:
        acc: dict[int, set[int]] = {}
        for x in self.parent:
            acc.setdefault(self.find(x), set()).add(x)
        return sorted((frozenset(g) for g in acc.values()), key=min)


# --------------------------------------------------------------------------- discovery
def discover(root: str | os.PathLike[str] | None = None, *, live: Live | None = None) -> Machine:
    """Read the machine under ``root`` (default ``$ACTORQ_FSROOT`` or "/").

    ``live`` replaces the calls to the running kernel (affinity, libnuma);
    it is consulted only when ``root`` is "/".
    """
    root = default_root() if root is None else os.fspath(root)
    if not os.path.isdir(root):
        raise ActorqTopologyError(f"{root}: topology root does not exist or is not a directory")
    is_live = os.path.realpath(root) == "/"
    if live is None:
        live = Live() if is_live else NoLive()
    files = _Files(root)
    if not files.isdir(_CPU_DIR):
        raise ActorqTopologyError(
            f"{files.path(_CPU_DIR)}: not found; the root must hold a sysfs tree "
            "(sys/devices/system/cpu), e.g. / or an extracted hwloc-gather-topology snapshot"
        )
    return _Discovery(files, live, is_live).run()


class _Discovery:
    def __init__(self, files: _Files, live: Live, is_live: bool) -> None:
        self.f = files
        self.live = live
        self.is_live = is_live
        self.warn = files.warnings

    # ---- CPUs --------------------------------------------------------------
    def _online(self, ids: list[int]) -> frozenset[int]:
        online = self.f.cpulist(f"{_CPU_DIR}/online")
        if online is not None:
            return online & frozenset(ids)
        out = set()
        for i in ids:
            text = self.f.read(f"{_CPU_DIR}/cpu{i}/online")
            if text is None or text != "0":  # cpu0 often has no online file; empty == online
                out.add(i)
        return frozenset(out)

    def run(self) -> Machine:
        f = self.f
        ids = _ids(f.listdir(_CPU_DIR), "cpu")
        if not ids:
            raise ActorqTopologyError(f"{f.path(_CPU_DIR)}: no cpuN directories")
        online = self._online(ids)
        self.online = online
        if not online:
            raise ActorqTopologyError(f"{f.path(_CPU_DIR)}/online: no CPU is online")

        core_uf, pkg_uf = _UnionFind(), _UnionFind()
        core_seen: set[int] = set()
        pkg_seen: set[int] = set()
        cluster_seen: dict[int, frozenset[int]] = {}
        raw: dict[int, _CpuIds] = {}
        for i in sorted(online):
            t = f"{_CPU_DIR}/cpu{i}/topology"
            info = raw[i] = _CpuIds()
            if not f.isdir(t):
                self.warn.append(
                    f"{f.path(t)}: missing for online CPU {i}; treated as a core of its own, "
                    "in the package other CPUs' masks put it in (else a package of its own)"
                )
                core_uf.union_all([i])
                pkg_uf.union_all([i])
                continue
            # A CPU that an earlier sibling's mask already named is not re-read:
            # the masks are symmetric in every tree we know, and skipping
            # halves the reads on SMT4/8 machines.
            if i not in core_seen:
                core = _sibling_mask(f, t, "core_cpus", "thread_siblings", online, i)
                core_uf.union_all(core)
                core_seen.update(core)
            if i not in pkg_seen:
                pkg = _sibling_mask(f, t, "package_cpus", "core_siblings", online, i)
                pkg_uf.union_all(pkg)
                pkg_seen.update(pkg)
            info.package_id = f.integer(f"{t}/physical_package_id")
            info.core_id = f.integer(f"{t}/core_id")
            info.die_id = f.integer(f"{t}/die_id")
            cluster = cluster_seen.get(i)
            if cluster is None:
                mask = f.mask(f"{t}/cluster_cpus")
                if mask is not None:
                    cluster = mask & online | {i}
                    cluster_seen.update(dict.fromkeys(cluster, cluster))
            info.cluster = cluster

        # Cores must nest inside packages: a core spanning two packages merges them.
        core_sets = core_uf.groups()
        for cs in core_sets:
            pkg_uf.union_all(cs)
        pkg_sets = pkg_uf.groups()
        pkg_of = {c: n for n, ps in enumerate(pkg_sets) for c in ps}
        core_of = {c: n for n, cs in enumerate(core_sets) for c in cs}
        cores = tuple(
            Core(id=n, package=pkg_of[min(cs)], cpus=cs) for n, cs in enumerate(core_sets)
        )
        packages = []
        for n, ps in enumerate(pkg_sets):
            os_ids = {raw[c].package_id for c in ps}
            os_id = os_ids.pop() if len(os_ids) == 1 else None
            packages.append(
                Package(
                    id=n,
                    cpus=ps,
                    cores=tuple(k.id for k in cores if k.package == n),
                    os_index=os_id if isinstance(os_id, int) and os_id >= 0 else None,
                )
            )

        # Clusters: index of distinct cluster masks (only when some differ from core and package).
        cluster_sets = sorted({v for r in raw.values() if (v := r.cluster) is not None}, key=min)
        useful_clusters = [
            s
            for s in cluster_sets
            if s != core_sets[core_of[min(s)]] and s != pkg_sets[pkg_of[min(s)]]
        ]
        cluster_index = {s: n for n, s in enumerate(cluster_sets)} if useful_clusters else {}

        caches, cpu_caches = self._caches(online)
        nodes, cpu_node, numa_source = self._nodes(online)
        types, cpu_type = self._types(online, caches, cpu_caches, core_of)
        limits, allowed = self._limits(ids, online, nodes)

        offline_node = self._offline_nodes([i for i in ids if i not in online], nodes)
        cpus: dict[int, Cpu] = {}
        for i in ids:
            if i not in online:
                cpus[i] = Cpu(
                    id=i,
                    online=False,
                    allowed=False,
                    package=None,
                    core=None,
                    node=offline_node.get(i),
                    type=cpu_type.get(i, 0),
                )
                continue
            r = raw[i]
            cl = r.cluster
            die = r.die_id
            cpus[i] = Cpu(
                id=i,
                online=True,
                allowed=i in allowed,
                package=pkg_of[i],
                core=core_of[i],
                node=cpu_node.get(i),
                type=cpu_type.get(i, 0),
                die=die if isinstance(die, int) and die >= 0 else None,
                cluster=cluster_index.get(cl) if cl is not None else None,
                core_id=r.core_id,
                siblings=core_sets[core_of[i]],
                caches=cpu_caches.get(i, ()),
            )

        hugepages = self._hugepages("sys/kernel/mm/hugepages")
        base = (
            (self.live.page_size() if self.is_live else None) or self._snapshot_page_size() or 4096
        )
        for n, node in list(nodes.items()):
            nodes[n] = replace(node, page_sizes={base: -1, **node.page_sizes})
        devices = self._locate(self._devices(), nodes)
        return Machine(
            root=self.f.root,
            cpus=cpus,
            cores=cores,
            packages=tuple(packages),
            caches=caches,
            nodes=nodes,
            types=types,
            devices=devices,
            limits=limits,
            base_page_size=base,
            numa_source=numa_source,
            warnings=tuple(self.warn),
            hugepages=hugepages,
            memory_total=self._meminfo_total()
            or _sum_known(n.memory_total for n in nodes.values()),
        )

    def _meminfo_total(self) -> int | None:
        for line in (self.f.read("proc/meminfo") or "").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "MemTotal:" and parts[1].isdigit():
                return int(parts[1]) * 1024
        return None

    # ---- caches ------------------------------------------------------------
    def _caches(
        self, online: frozenset[int]
    ) -> tuple[tuple[Cache, ...], dict[int, tuple[int, ...]]]:
        f = self.f
        found: dict[tuple[int, str, frozenset[int]], dict[str, object]] = {}
        per_cpu: dict[int, list[tuple[int, str, frozenset[int]]]] = {}
        known: dict[str, dict[int, tuple[int, str, frozenset[int]]]] = {}
        missing = []
        for i in sorted(online):
            base = f"{_CPU_DIR}/cpu{i}/cache"
            names = [n for n in f.listdir(base) if n.startswith("index")]
            if not names:
                missing.append(i)
                continue
            keys = per_cpu.setdefault(i, [])
            for name in sorted(names, key=lambda n: int(n[5:]) if n[5:].isdigit() else 0):
                # As with topology masks: a CPU named in an earlier CPU's map for
                # the same index shares that instance; no need to read it again.
                seen = known.setdefault(name, {})
                if i in seen:
                    keys.append(seen[i])
                    continue
                d = f"{base}/{name}"
                shared = f.set_of(f"{d}/shared_cpu_map", f"{d}/shared_cpu_list")
                shared = (shared or frozenset()) & online | {i}
                level = f.integer(f"{d}/level")
                ctype = f.read(f"{d}/type")
                if level is None or ctype is None:
                    self.warn.append(f"{f.path(d)}: no level/type; cache ignored")
                    continue
                if ctype not in _CACHE_TYPES:
                    raise ActorqTopologyError(
                        f"{f.path(d)}/type: expected Data, Instruction or Unified, found {ctype!r}"
                    )
                key = (level, _CACHE_TYPES[ctype], shared)
                keys.append(key)
                if key in found:
                    continue
                for c in shared:
                    seen.setdefault(c, key)
                size = f.parse(f"{d}/size", _size, "a size like 32K")
                if size is None:
                    self.warn.append(f"{f.path(d)}/size: missing; cache ignored")
                    keys.pop()
                    continue
                ways = f.integer(f"{d}/ways_of_associativity")
                found[key] = {
                    "size": size,
                    "line": f.integer(f"{d}/coherency_line_size"),
                    "ways": ways if ways is None or ways >= 0 else None,
                    "sets": f.integer(f"{d}/number_of_sets"),
                }
        if missing and per_cpu:
            self.warn.append(
                f"{f.path(_CPU_DIR)}/cpuN/cache: missing for online CPUs "
                f"{sorted(missing)} while other CPUs have caches; those CPUs have no cache facts"
            )
        order = sorted(found, key=lambda k: (k[0], _TYPE_ORDER[k[1]], min(k[2])))
        index = {k: n for n, k in enumerate(order)}
        caches = tuple(
            Cache(id=index[k], level=k[0], type=k[1], cpus=k[2], **found[k])  # type: ignore[arg-type]
            for k in order
        )
        cpu_caches = {
            i: tuple(
                sorted(
                    (index[k] for k in keys if k in index),
                    key=lambda n: (caches[n].level, _TYPE_ORDER[caches[n].type]),
                )
            )
            for i, keys in per_cpu.items()
        }
        return caches, cpu_caches

    # ---- NUMA --------------------------------------------------------------
    def _nodes(self, online: frozenset[int]) -> tuple[dict[int, NumaNode], dict[int, int], str]:
        f = self.f
        ids = _ids(f.listdir(_NODE_DIR), "node")
        if not ids:
            src = "no NUMA nodes in sysfs (non-NUMA kernel)"
            return {}, {}, src
        possible = f.cpulist(f"{_NODE_DIR}/possible")
        online_nodes = f.cpulist(f"{_NODE_DIR}/online")
        nodes: dict[int, NumaNode] = {}
        cpu_node: dict[int, int] = {}
        for n in ids:
            d = f"{_NODE_DIR}/node{n}"
            cpus = (f.set_of(f"{d}/cpumap", f"{d}/cpulist") or frozenset()) & online
            for c in sorted(cpus):
                if c in cpu_node:
                    self.warn.append(
                        f"{f.path(d)}/cpumap: CPU {c} already in node {cpu_node[c]}; kept there"
                    )
                else:
                    cpu_node[c] = n
            total, free = self._node_meminfo(f"{d}/meminfo")
            nodes[n] = NumaNode(
                id=n,
                cpus=frozenset(c for c in cpus if cpu_node.get(c) == n),
                memory_total=total,
                memory_free=free,
                distances=self._distances(d, n, ids, possible, online_nodes),
                page_sizes=self._hugepages(f"{d}/hugepages"),
            )
        source = (
            self._cross_check(nodes, online)
            if self.is_live
            else f"sysfs only (snapshot root {f.root})"
        )
        return nodes, cpu_node, source

    def _offline_nodes(self, offline: list[int], nodes: dict[int, NumaNode]) -> dict[int, int]:
        """Where offline CPUs live: node cpumaps list only online CPUs, but the
        kernel keeps ``cpuN/nodeM`` and ``nodeM/cpuN`` links across offlining."""
        out: dict[int, int] = {}
        if not offline or not nodes:
            return out
        listed: dict[int, set[str]] | None = None
        for i in offline:
            homes = [n for n in _ids(self.f.listdir(f"{_CPU_DIR}/cpu{i}"), "node") if n in nodes]
            if not homes:
                if listed is None:
                    listed = {n: set(self.f.listdir(f"{_NODE_DIR}/node{n}")) for n in nodes}
                homes = [n for n, names in listed.items() if f"cpu{i}" in names]
            if len(homes) == 1:
                out[i] = homes[0]
        return out

    def _node_meminfo(self, rel: str) -> tuple[int | None, int | None]:
        text = self.f.read(rel)
        if text is None:
            return None, None
        total = free = None
        for line in text.splitlines():
            parts = line.split()
            # "Node 0 MemTotal:       16775084 kB"
            if len(parts) >= 4 and parts[2] in ("MemTotal:", "MemFree:"):
                try:
                    value = int(parts[3]) * (1024 if parts[-1] == "kB" else 1)
                except ValueError:
                    raise ActorqTopologyError(
                        f"{self.f.path(rel)}: expected 'Node N MemTotal: <n> kB', found {line!r}"
                    ) from None
                if parts[2] == "MemTotal:":
                    total = value
                else:
                    free = value
        return total, free

    def _distances(
        self,
        d: str,
        n: int,
        ids: list[int],
        possible: frozenset[int] | None,
        online_nodes: frozenset[int] | None,
    ) -> dict[int, int]:
        row = self.f.parse(
            f"{d}/distance", lambda s: [int(x) for x in s.split()], "space-separated integers"
        )
        if row is None:
            return {}
        assert isinstance(row, list)
        for cols in (ids, sorted(online_nodes or ()), sorted(possible or ())):
            if len(cols) == len(row):
                break
        else:
            self.warn.append(
                f"{self.f.path(d)}/distance: {len(row)} values for {len(ids)} nodes; "
                "columns cannot be matched to node ids, distances dropped"
            )
            return {}
        return {c: v for c, v in zip(cols, row, strict=True) if c in ids}

    def _cross_check(self, nodes: dict[int, NumaNode], online: frozenset[int]) -> str:
        api = self.live.numa()
        if api is None:
            return "libnuma not available: sysfs only"
        try:
            top = api.max_node()
        except Exception as exc:  # a broken libnuma is a note, not a failure
            return f"libnuma failed ({exc}): sysfs only"
        bad = []
        for n, node in nodes.items():
            if n > top:  # never hand libnuma a node it does not know
                bad.append(f"node {n} > libnuma max node {top}")
                continue
            try:
                got = api.node_cpus(n) & online
                theirs = {m: api.distance(n, m) for m in node.distances if m <= top}
            except Exception as exc:
                return f"libnuma failed on node {n} ({exc}): sysfs only"
            if got != node.cpus:
                bad.append(f"node {n} CPUs: libnuma {sorted(got)} vs sysfs {sorted(node.cpus)}")
            for m, ld in theirs.items():
                if ld != node.distances[m]:
                    bad.append(f"distance {n}->{m}: libnuma {ld} vs sysfs {node.distances[m]}")
        if bad:
            self.warn.extend(f"libnuma disagrees with sysfs: {b} (sysfs kept)" for b in bad)
            return f"{api.name}: cross-checked, {len(bad)} disagreement(s), sysfs kept"
        return f"{api.name}: cross-checked, agrees with sysfs"

    def _hugepages(self, rel: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for name in self.f.listdir(rel):
            m = re.fullmatch(r"hugepages-(\d+)kB", name)
            if not m:
                continue
            nr = self.f.integer(f"{rel}/{name}/nr_hugepages")
            out[int(m.group(1)) * 1024] = nr if nr is not None else 0
        return dict(sorted(out.items()))

    def _snapshot_page_size(self) -> int | None:
        # hwloc-gather-topology records the page size of the machine it ran on.
        text = self.f.read("proc/hwloc-nofile-info")
        if text:
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "PageSize" and value.strip().isdigit():
                    return int(value)
        return None

    # ---- processor types -----------------------------------------------------
    def _cpuinfo(self) -> dict[int, dict[str, str]]:
        """processor number -> its fields (lower-cased keys).

        Old ARM kernels print shared fields (``Features``, ``CPU part``) in a
        block of their own and the model as ``Processor : ARMv7 ...``; those
        are merged into every CPU.
        """
        text = self.f.read("proc/cpuinfo")
        out: dict[int, dict[str, str]] = {}
        common: dict[str, str] = {}
        if not text:
            return out
        for block in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                key, sep, value = line.partition(":")
                if not sep:
                    continue
                key = key.strip()
                name = "model name" if key == "Processor" else key.lower()
                fields.setdefault(name, value.strip())
            proc = fields.get("processor", "")
            if proc.isdigit():
                out[int(proc)] = fields
            else:
                common.update(fields)
        if common:
            for fields in out.values():
                for k, v in common.items():
                    fields.setdefault(k, v)
        return out

    def _types(
        self,
        online: frozenset[int],
        caches: tuple[Cache, ...],
        cpu_caches: dict[int, tuple[int, ...]],
        core_of: dict[int, int],
    ) -> tuple[tuple[CpuType, ...], dict[int, int]]:
        info = self._cpuinfo()
        first = next(iter(info.values()), {})

        def num(v: str | None) -> int | None:
            if v is None:
                return None
            try:
                return int(v, 0)
            except ValueError:
                return None

        keys: dict[int, tuple] = {}
        proto: dict[tuple, dict[str, object]] = {}
        for i in sorted(online):
            fi = info.get(i, {})
            # Cache geometry tells hybrid Intel P from E cores (48K vs 32K L1d, L2 per core vs
            # per cluster) without trusting per-core max frequency, which also differs on
            # "favoured core" parts that are not hybrid.
            geometry = tuple(
                (
                    caches[c].level,
                    caches[c].type,
                    caches[c].size,
                    # sharing counted in cores, so an offline SMT sibling does not
                    # make its core look like another kind of processor
                    len({core_of.get(x) for x in caches[c].cpus}),
                )
                for c in cpu_caches.get(i, ())
                if caches[c].level <= 2
            )
            vendor = fi.get("vendor_id") or first.get("vendor_id")
            model_name = fi.get("model name") or fi.get("cpu") or first.get("model name")
            if "cpu implementer" in fi:  # ARM: no names in cpuinfo, only MIDR fields
                impl, part = fi["cpu implementer"].lower(), fi.get("cpu part", "?").lower()
                vendor = _ARM_IMPLEMENTERS.get(impl, f"implementer {impl}")
                model_name = model_name or _ARM_PARTS.get((impl, part), f"{vendor} part {part}")
            key = (
                vendor,
                model_name,
                fi.get("cpu family"),
                fi.get("model"),
                fi.get("stepping"),
                fi.get("cpu part"),
                fi.get("cpu variant"),
                geometry,
            )
            keys[i] = key
            if key not in proto:
                flags = fi.get("flags") or fi.get("features") or ""
                proto[key] = {
                    "vendor": vendor,
                    "model_name": model_name,
                    "family": num(fi.get("cpu family") or fi.get("cpu architecture")),
                    "model": num(fi.get("model") or fi.get("cpu part")),
                    "stepping": num(fi.get("stepping") or fi.get("cpu revision")),
                    "flags": frozenset(flags.split()),
                    "capacity": self._capacity(i),
                }
        order = sorted(proto, key=lambda k: min(i for i, kk in keys.items() if kk == k))
        kinds: dict[tuple, str | None] = {k: None for k in order}
        if len(order) > 1:
            caps = [proto[k]["capacity"] for k in order]
            if all(c is not None for c in caps) and len(set(caps)) > 1:
                top = max(caps)  # type: ignore[type-var]
                for k in order:
                    kinds[k] = "performance" if proto[k]["capacity"] == top else "efficiency"
        types = tuple(
            CpuType(id=n, kind=kinds[k], **proto[k])  # type: ignore[arg-type]
            for n, k in enumerate(order)
        )
        index = {k: n for n, k in enumerate(order)}
        return types, {i: index[k] for i, k in keys.items()}

    def _capacity(self, cpu: int) -> int | None:
        d = f"{_CPU_DIR}/cpu{cpu}"
        cap = self.f.integer(f"{d}/cpu_capacity")
        if cap is not None:
            return cap
        khz = self.f.integer(f"{d}/cpufreq/cpuinfo_max_freq")
        return khz // 1000 if khz is not None else None  # MHz

    # ---- limits --------------------------------------------------------------
    def _mounts(self) -> list[tuple[str, str, set[str]]]:
        text = self.f.read("proc/mounts") or self.f.read("proc/self/mounts") or ""
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 4:
                out.append((parts[1], parts[2], set(parts[3].split(","))))
        return out

    def _limits(
        self, ids: list[int], online: frozenset[int], nodes: dict[int, NumaNode]
    ) -> tuple[Limits, frozenset[int]]:
        cpuset, mems, source, quota = self._cgroup_cpuset()
        affinity = self.live.affinity() if self.is_live else None
        allowed = online
        if cpuset is not None:
            allowed = allowed & cpuset
        if affinity is not None:
            allowed = allowed & affinity
        if not allowed:
            self.warn.append(
                f"cpuset {sorted(cpuset or ())} and affinity leave no online CPU; "
                "the allowed view is empty"
            )
        if mems is not None:
            for n, node in list(nodes.items()):
                if n not in mems:
                    nodes[n] = replace(node, allowed=False)
        limits = Limits(
            cpuset=cpuset,
            cpuset_source=source,
            mems=mems,
            affinity=affinity,
            cpu_quota=quota,
            isolated=self._kernel_set("isolated", online),
            nohz_full=self._kernel_set("nohz_full", online),
        )
        return limits, allowed

    def _kernel_set(self, name: str, online: frozenset[int]) -> frozenset[int]:
        """``cpu/isolated`` or ``cpu/nohz_full``; "(null)" (no nohz_full) reads as empty."""
        rel = f"{_CPU_DIR}/{name}"
        text = self.f.read(rel)
        if not text or text == "(null)":
            return frozenset()
        return (self.f.cpulist(rel) or frozenset()) & online

    def _cgroup_paths(self) -> tuple[str | None, dict[str, str]]:
        """(cgroup v2 path, {v1 controller: path}) from proc/self/cgroup, else proc/self/cpuset."""
        v2: str | None = None
        v1: dict[str, str] = {}
        text = self.f.read("proc/self/cgroup")
        if text:
            for line in text.splitlines():
                parts = line.split(":", 2)
                if len(parts) != 3:
                    continue
                hid, ctrls, path = parts
                if hid == "0" and ctrls == "":
                    v2 = path
                for c in ctrls.split(","):
                    if c:
                        v1[c] = path
        cpuset_path = self.f.read("proc/self/cpuset")
        if cpuset_path:
            v1.setdefault("cpuset", cpuset_path)
            if v2 is None:
                v2 = cpuset_path
        return v2, v1

    def _cgroup_cpuset(
        self,
    ) -> tuple[frozenset[int] | None, frozenset[int] | None, str | None, float | None]:
        mounts = self._mounts()
        v2_path, v1_paths = self._cgroup_paths()
        quota = self._quota(mounts, v2_path, v1_paths)
        # cgroup v2: walk from the leaf up to the mount root until a cpuset file exists.
        for mnt, fstype, _ in mounts:
            if fstype != "cgroup2" or v2_path is None:
                continue
            for d in _leaf_to_root(mnt, v2_path):
                cpus = self.f.cpulist(f"{d}/cpuset.cpus.effective")
                if cpus is not None:
                    mems = self.f.cpulist(f"{d}/cpuset.mems.effective")
                    return cpus, mems, "cgroup2", quota
        # cgroup v1 cpuset controller.
        path = v1_paths.get("cpuset")
        for mnt, fstype, opts in mounts:
            if path is None:
                break
            if fstype == "cgroup" and "cpuset" in opts:
                d = _leaf_to_root(mnt, path)[0]
                cpus = self.f.cpulist(f"{d}/cpuset.effective_cpus")
                if cpus is None:
                    cpus = self.f.cpulist(f"{d}/cpuset.cpus")
                mems = self.f.cpulist(f"{d}/cpuset.effective_mems")
                if mems is None:
                    mems = self.f.cpulist(f"{d}/cpuset.mems")
                if cpus is not None:
                    return cpus, mems, "cgroup1", quota
            if fstype == "cpuset":
                d = _leaf_to_root(mnt, path)[0]
                cpus = self.f.cpulist(f"{d}/cpus")
                if cpus is not None:
                    return cpus, self.f.cpulist(f"{d}/mems"), "cpusetfs", quota
        return None, None, None, quota

    def _quota(
        self, mounts: list[tuple[str, str, set[str]]], v2_path: str | None, v1: dict[str, str]
    ) -> float | None:
        """Tightest CPU quota from the leaf cgroup up, in CPUs' worth of time per period.

        cgroup v2 ``cpu.max`` ("<quota|max> <period>"); else cgroup v1
        ``cpu.cfs_quota_us`` (-1 = none) over ``cpu.cfs_period_us``.
        """
        for mnt, fstype, opts in mounts:
            if fstype == "cgroup2" and v2_path is not None:
                found = self._walk_quota(mnt, v2_path, self._cpu_max)
            elif fstype == "cgroup" and "cpu" in opts and "cpu" in v1:
                found = self._walk_quota(mnt, v1["cpu"], self._cfs_quota)
            else:
                continue
            if found is not None:
                return found
        return None

    def _walk_quota(self, mnt: str, path: str, read: Callable[[str], float | None]) -> float | None:
        found = [v for d in _leaf_to_root(mnt, path) if (v := read(d)) is not None]
        return min(found) if found else None

    def _cpu_max(self, d: str) -> float | None:
        text = self.f.read(f"{d}/cpu.max")
        if not text or text.startswith("max"):
            return None
        q, _, period = text.partition(" ")
        try:
            return int(q) / int(period or "100000")
        except (ValueError, ZeroDivisionError):
            raise ActorqTopologyError(
                f"{self.f.path(d)}/cpu.max: expected '<quota|max> <period>', found {text!r}"
            ) from None

    def _cfs_quota(self, d: str) -> float | None:
        quota = self.f.integer(f"{d}/cpu.cfs_quota_us")
        if quota is None or quota < 0:
            return None
        period = self.f.integer(f"{d}/cpu.cfs_period_us")
        if not period:
            raise ActorqTopologyError(
                f"{self.f.path(d)}/cpu.cfs_period_us: expected a positive period next to "
                f"cpu.cfs_quota_us {quota}"
            )
        return quota / period

    # ---- devices -------------------------------------------------------------
    def _devices(self) -> tuple[Device, ...]:
        f = self.f
        out: list[Device] = []
        irq_dir_ok = f.isdir("proc/irq")
        for name in sorted(f.listdir("sys/class/net")):
            dev, addr = self._device_dir(f"sys/class/net/{name}/device")
            if dev is None and addr is None:
                continue  # virtual interface (lo, veth, bridges): no locality
            irqs: dict[int, frozenset[int]] = {}
            if irq_dir_ok and dev is not None:
                for irq in _ids(("i" + n for n in f.listdir(f"{dev}/msi_irqs")), "i"):
                    mask = f.mask(f"proc/irq/{irq}/smp_affinity")
                    if mask is not None:
                        irqs[irq] = mask
            out.append(self._device(name, "net", dev, addr, irqs))
        seen = {d.pci_address for d in out if d.pci_address}
        for cls, kind in (("drm", "gpu"), ("ve", "accelerator"), ("accel", "accelerator")):
            for name in sorted(f.listdir(f"sys/class/{cls}")):
                if cls == "drm" and not re.fullmatch(r"card\d+", name):
                    continue
                dev, addr = self._device_dir(f"sys/class/{cls}/{name}/device")
                if dev is None:
                    target = f.link_target(f"sys/class/{cls}/{name}")
                    # sys/class/ve/ve0 -> devices/pci.../0000:1b:00.0/ve/ve0: the PCI dir is 2 up.
                    if target is None:
                        continue
                    dev = os.path.dirname(os.path.dirname(target))
                    addr = os.path.basename(dev)
                d = self._device(name, kind, dev, addr, {})
                if d.pci_address is None or d.pci_address not in seen:
                    out.append(d)
                    if d.pci_address:
                        seen.add(d.pci_address)
        # GPUs and accelerators without a driver class (no drm card yet, a
        # snapshot): by PCI class code. 0x03 display, 0x12 processing
        # accelerator, 0x0b40 co-processor.
        for addr in sorted(f.listdir("sys/bus/pci/devices")):
            if addr in seen:
                continue
            rel = f"sys/bus/pci/devices/{addr}"
            code = f.read(f"{rel}/class") or ""
            by_class = "gpu" if code.startswith("0x03") else None
            if code.startswith(("0x12", "0x0b40")):
                by_class = "accelerator"
            if by_class is None:
                continue
            if by_class == "gpu" and (f.read(f"{rel}/vendor") or "").lower() in _DISPLAY_ONLY:
                continue  # a BMC's or hypervisor's framebuffer, not a compute device
            dev = f.link_target(rel) or rel
            out.append(self._device(addr, by_class, dev, addr, {}))
        return tuple(out)

    def _locate(
        self, devices: tuple[Device, ...], nodes: dict[int, NumaNode]
    ) -> tuple[Device, ...]:
        """A device with no ``numa_node`` (-1 or absent) lives on the one node
        whose CPUs hold all of its ``local_cpus``, if exactly one does."""
        out = []
        for d in devices:
            if d.node is None and d.local_cpus:
                homes = [n for n, node in nodes.items() if node.cpus and d.local_cpus <= node.cpus]
                if len(homes) == 1:
                    d = replace(d, node=homes[0])
            out.append(d)
        return tuple(out)

    def _device_dir(self, rel: str) -> tuple[str | None, str | None]:
        """(root-relative device dir or None, PCI address or None) behind a ``device`` link."""
        try:
            link = os.readlink(self.f.path(rel))
        except OSError:
            return None, None
        addr = os.path.basename(link)
        target = self.f.link_target(rel)
        if target is not None and self.f.isdir(target):
            # virtio and similar sit under their PCI function: use the nearest PCI ancestor.
            up = target
            while up and up != "." and not _PCI.fullmatch(os.path.basename(up)):
                up = os.path.dirname(up)
            if up and up != ".":
                return up, os.path.basename(up)
            return target, addr
        # Snapshots sometimes copy class/net/X as a directory, so its relative
        # ``device`` link no longer resolves; find the PCI function by name.
        cand = f"sys/bus/pci/devices/{addr}"
        if self.f.isdir(cand):
            return self.f.link_target(cand) or cand, addr
        return None, addr

    def _device(
        self,
        name: str,
        kind: str,
        dev: str | None,
        addr: str | None,
        irqs: dict[int, frozenset[int]],
    ) -> Device:
        f = self.f
        pci = addr if addr and _PCI.fullmatch(addr) else None
        if dev is None:
            self.warn.append(
                f"{name}: device {addr} is not in the tree under {f.root}; NUMA node unknown"
            )
            return Device(name=name, kind=kind, pci_address=pci, node=None)
        node = f.integer(f"{dev}/numa_node")
        local = f.set_of(f"{dev}/local_cpus", f"{dev}/local_cpulist") or frozenset()
        local &= self.online
        return Device(
            name=name,
            kind=kind,
            pci_address=pci,
            node=node if node is not None and node >= 0 else None,
            local_cpus=local,
            irq_affinity=irqs,
        )


# MIDR implementer and part numbers for the ARM machines we have seen (names from
# the vendors' reference manuals); unknown ones are printed as numbers.
_ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}
_ARM_PARTS = {
    ("0x41", "0xc09"): "Cortex-A9",
    ("0x41", "0xc07"): "Cortex-A7",
    ("0x41", "0xc0f"): "Cortex-A15",
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x41", "0xd85"): "Cortex-X925",
    ("0x41", "0xd87"): "Cortex-A725",
    ("0x48", "0xd01"): "Kunpeng 920 (TaiShan v110)",
}


def _leaf_to_root(mnt: str, path: str) -> list[str]:
    """Directories of a cgroup from its leaf up to the mount point, as root-relative
    paths. ``path`` comes from a file (proc/self/cgroup): normalised, so ".." or
    a path without a leading "/" can neither loop nor leave the mount."""
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p and p != ".."]
    base = mnt.strip("/")
    out = []
    for n in range(len(parts), -1, -1):
        out.append("/".join([base, *parts[:n]]) if base else "/".join(parts[:n]))
    return out


def _sum_known(values: Iterable[int | None]) -> int | None:
    """The sum, or None if any value (or all of them) is unknown."""
    got = list(values)
    return sum(got) if got and None not in got else None  # type: ignore[arg-type]


# PCI vendors whose display functions are server BMC or emulated framebuffers:
# ASPEED, Matrox, Cirrus Logic, QEMU/Bochs, Red Hat (virtio-gpu), VMware.
_DISPLAY_ONLY = {"0x1a03", "0x102b", "0x1013", "0x1234", "0x1af4", "0x15ad"}

_PCI = re.compile(r"[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
