"""What the machine is: plain, immutable records built by discovery.

These records know nothing of actors or scheduling; they describe hardware as
the kernel reports it. Every CPU set is a ``frozenset[int]`` of OS CPU
numbers, every size is in bytes. Two views coexist: ``Machine.cpus`` holds
every CPU the kernel knows of (online or not), and each ``Cpu`` says whether
it is ``online`` and whether this process is ``allowed`` to run on it (cpuset,
affinity). ``Machine.allowed_cpus`` is the usable view.

Other modules (universe, placement, render) read these; only discovery
(``sysfs.py``) builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CpuType:
    """One kind of processor; hybrid machines (P/E cores) have several."""

    id: int
    vendor: str | None = None
    model_name: str | None = None
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    flags: frozenset[str] = frozenset()
    # "performance"/"efficiency" on hybrid Intel (sysfs cpu_core/cpu_atom),
    # or a capacity-derived label on big.LITTLE ARM; None when uniform.
    kind: str | None = None
    # Relative speed where the kernel says (cpu_capacity, max frequency), else None.
    capacity: int | None = None


@dataclass(frozen=True)
class Cache:
    """One cache *instance*: a physical cache and the CPUs that share it."""

    id: int
    level: int
    type: str  # "data" | "instruction" | "unified"
    size: int  # bytes
    line: int | None
    ways: int | None
    sets: int | None
    cpus: frozenset[int]


@dataclass(frozen=True)
class Cpu:
    """One hardware thread (hwloc's PU)."""

    id: int
    online: bool
    allowed: bool
    package: int | None  # physical package (socket) index in Machine.packages
    core: int | None  # index into Machine.cores; None for offline CPUs without topology
    node: int | None  # NUMA node id, None when the machine has no node/ directory
    type: int  # CpuType.id
    die: int | None = None
    cluster: int | None = None
    core_id: int | None = None  # raw sysfs core_id (not unique machine-wide)
    siblings: frozenset[int] = frozenset()  # SMT threads of the same core, self included
    caches: tuple[int, ...] = ()  # Cache.id of every cache this CPU uses, L1 first


@dataclass(frozen=True)
class Core:
    """A physical core: the CPUs that are its SMT threads."""

    id: int
    package: int | None
    cpus: frozenset[int]


@dataclass(frozen=True)
class Package:
    """A socket (or, when the kernel gives no socket ids, a synthesized one)."""

    id: int
    cpus: frozenset[int]
    cores: tuple[int, ...]
    os_index: int | None = None  # sysfs physical_package_id; None when -1 or inconsistent


@dataclass(frozen=True)
class NumaNode:
    """A memory node. CPU-less nodes (GPU memory, MCDRAM, CXL) have empty ``cpus``."""

    id: int
    cpus: frozenset[int]
    memory_total: int | None  # bytes
    memory_free: int | None  # bytes
    distances: dict[int, int]  # node id -> ACPI SLIT distance (10 = local)
    page_sizes: dict[int, int]  # page size in bytes -> pool count (base page: -1 = n/a)
    allowed: bool = True  # in the cpuset's mems


@dataclass(frozen=True)
class Device:
    """An I/O device whose locality matters: a NIC or a GPU/accelerator."""

    name: str
    kind: str  # "net" | "gpu" | "accelerator"
    pci_address: str | None
    node: int | None
    local_cpus: frozenset[int] = frozenset()
    # NIC queue IRQ number -> CPUs allowed to service it (from /proc/irq).
    irq_affinity: dict[int, frozenset[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """What this process may use: cpuset, memory nodes, affinity, CPU quota."""

    cpuset: frozenset[int] | None = None
    cpuset_source: str | None = None  # "cgroup2" | "cgroup1" | "cpusetfs" | None
    mems: frozenset[int] | None = None
    affinity: frozenset[int] | None = None  # live machine only
    cpu_quota: float | None = None  # CPUs' worth of time per period (cgroup cpu.max / cfs quota)
    # Kernel command line isolation (isolcpus=, nohz_full=): CPUs the scheduler
    # does not balance onto / where the tick stops. Pinned workers suit them.
    isolated: frozenset[int] = frozenset()
    nohz_full: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Machine:
    """Everything discovery found, for one root (``/`` or a snapshot tree)."""

    root: str
    cpus: dict[int, Cpu]
    cores: tuple[Core, ...]
    packages: tuple[Package, ...]
    caches: tuple[Cache, ...]
    nodes: dict[int, NumaNode]
    types: tuple[CpuType, ...]
    devices: tuple[Device, ...] = ()
    limits: Limits = Limits()
    base_page_size: int = 4096
    # "libnuma 2.0.x: cross-checked", "libnuma not available: sysfs only", "not used (root=...)"
    numa_source: str = "sysfs"
    warnings: tuple[str, ...] = ()
    # System-wide huge page pools: page size in bytes -> nr_hugepages.
    hugepages: dict[int, int] = field(default_factory=dict)
    memory_total: int | None = None  # bytes, /proc/meminfo MemTotal (all nodes)

    @property
    def online_cpus(self) -> frozenset[int]:
        return frozenset(c.id for c in self.cpus.values() if c.online)

    @property
    def allowed_cpus(self) -> frozenset[int]:
        """Online CPUs this process may run on: the usable view."""
        return frozenset(c.id for c in self.cpus.values() if c.online and c.allowed)
