"""Discovery of this machine (root "/"), the libnuma cross-check behind its
replaceable interface, rendering, and the ``actorq topology`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import MACHINES
from hypothesis import given
from hypothesis import strategies as st

from actorq.topology import build_universe, discover
from actorq.topology.cpulist import format_cpulist, format_cpumask, parse_cpulist, parse_cpumask
from actorq.topology.render import SCHEMA, to_json, to_text
from actorq.topology.sysfs import Live, NumaApi


def _sys_online() -> frozenset[int]:
    with open("/sys/devices/system/cpu/online") as f:
        return parse_cpulist(f.read())


def test_live_machine_matches_the_kernel():
    m = discover("/")
    assert m.online_cpus == _sys_online()
    assert m.allowed_cpus == m.online_cpus & frozenset(os.sched_getaffinity(0))
    assert m.limits.affinity == frozenset(os.sched_getaffinity(0))
    assert m.base_page_size == os.sysconf("SC_PAGESIZE")
    assert len(m.cores) >= 1
    assert len(m.packages) >= 1
    for c in m.allowed_cpus:
        assert m.cpus[c].core is not None
    u = build_universe(m)
    assert u.cpus == m.allowed_cpus


def test_live_numa_source_names_libnuma_or_its_absence():
    m = discover("/")
    try:
        import numa

        have = bool(numa.info.numa_available())
    except Exception:
        have = False
    if not m.nodes:
        assert m.numa_source.startswith("no NUMA nodes")
    elif have:
        assert m.numa_source == "libnuma: cross-checked, agrees with sysfs"
    else:
        assert m.numa_source == "libnuma not available: sysfs only"


class _NoNuma(Live):
    def numa(self):
        return None


class _FakeNuma(NumaApi):
    """libnuma that knows nodes up to ``top`` and shifts every distance."""

    name = "fake-libnuma"

    def __init__(self, top: int, shift: int = 0) -> None:
        self.top, self.shift, self.asked = top, shift, []

    def max_node(self) -> int:
        return self.top

    def distance(self, a: int, b: int) -> int:
        assert max(a, b) <= self.top, "asked libnuma about a node it does not have"
        self.asked.append((a, b))
        return (10 if a == b else 20) + self.shift

    def node_cpus(self, node: int) -> frozenset[int]:
        assert node <= self.top, "asked libnuma about a node it does not have"
        self.asked.append(node)
        with open(f"/sys/devices/system/node/node{node}/cpumap") as f:
            return parse_cpumask(f.read())


class _WithNuma(Live):
    def __init__(self, api: NumaApi) -> None:
        self.api = api

    def numa(self):
        return self.api


needs_nodes = pytest.mark.skipif(
    not os.path.isdir("/sys/devices/system/node/node0"), reason="this kernel has no NUMA nodes"
)


@needs_nodes
def test_without_libnuma_the_report_says_so():
    m = discover("/", live=_NoNuma())
    assert m.numa_source == "libnuma not available: sysfs only"
    assert m.nodes


@needs_nodes
def test_libnuma_disagreement_is_reported_and_sysfs_kept():
    real = discover("/")
    api = _FakeNuma(top=max(real.nodes), shift=5)
    m = discover("/", live=_WithNuma(api))
    assert "disagreement" in m.numa_source
    assert any("libnuma disagrees with sysfs: distance" in w for w in m.warnings)
    assert m.nodes[0].distances == real.nodes[0].distances
    assert api.asked


@needs_nodes
def test_libnuma_is_never_asked_about_a_node_it_lacks():
    api = _FakeNuma(top=-1)
    m = discover("/", live=_WithNuma(api))
    assert api.asked == []
    assert any("libnuma max node -1" in w for w in m.warnings)


class _Explodes(Live):
    def affinity(self):
        raise AssertionError("live call on a snapshot root")

    page_size = numa = affinity


def test_snapshot_root_makes_no_live_calls(hwloc_trees):
    name = "32amd64-4s2n4c-cgroup2.tar.bz2"
    m = discover(str(hwloc_trees[name]), live=_Explodes())
    assert m.limits.affinity is None
    assert len(m.allowed_cpus) == 6


# ---------------------------------------------------------------- rendering
@pytest.mark.parametrize("name", MACHINES)
def test_render_every_machine(hwloc_trees, name):
    m = discover(str(hwloc_trees[name]))
    for view in ("allowed", "all"):
        u = build_universe(m, view)
        doc = to_json(m, u, view)
        assert json.loads(json.dumps(doc)) == doc
        _check_schema(doc)
        text = to_text(m, u, view)
        assert f"{len(m.online_cpus)} CPUs online" in text
        assert "Scheduling universe" in text


def _check_schema(doc: dict) -> None:
    assert doc["schema"] == SCHEMA == 1
    for key in ("cpus", "caches", "numa_nodes", "devices", "universe", "packages", "cores"):
        assert key in doc
    for c in doc["cpus"]:
        assert {"id", "online", "allowed", "package", "core", "node", "type"} <= set(c)
        assert all(isinstance(x, int) for x in c["siblings"])
    for k in doc["caches"]:
        assert {"level", "type", "size", "line", "ways", "cpus"} <= set(k)
        assert all(isinstance(x, int) for x in k["cpus"])
    for n in doc["numa_nodes"]:
        assert {"id", "cpus", "memory_total", "distances", "page_sizes"} <= set(n)
        assert all(isinstance(x, int) for x in n["cpus"])
        assert all(int(k) >= 0 for k in n["distances"])
    covered = {
        c["id"] for c in doc["cpus"] if c["online"] and (c["allowed"] or doc["view"] == "all")
    }
    for level in doc["universe"]["levels"]:
        cpus = [x for g in level["groups"] for x in g["cpus"]]
        assert sorted(cpus) == sorted(covered)
        assert all(isinstance(x, int) for x in cpus)


def test_live_text_report_reads_at_a_glance():
    m = discover("/")
    text = to_text(m, build_universe(m))
    assert text.startswith(f"Machine (/): {len(m.online_cpus)} CPUs online")
    assert "Processor type 0:" in text
    assert "Package 0" in text
    assert "Scheduling universe" in text


# ---------------------------------------------------------------- the command
def _actorq(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "actorq", "topology", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_json_on_a_fixture(hwloc_trees):
    root = str(hwloc_trees["nvidiagpunumanodes.tar.bz2"])
    out = _actorq("--root", root, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    _check_schema(doc)
    assert doc["root"] == root
    assert sorted(int(n["id"]) for n in doc["numa_nodes"]) == [0, 8, 250, 251, 252, 253, 254, 255]
    assert [c["id"] for c in doc["cpus"] if c["allowed"]] == list(range(16))
    everything = json.loads(_actorq("--root", root, "--json", "--all").stdout)
    assert len(everything["universe"]["levels"][0]["groups"]) == 8


def test_cli_on_the_live_machine():
    out = _actorq("--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    _check_schema(doc)
    assert {c["id"] for c in doc["cpus"] if c["allowed"]} == set(os.sched_getaffinity(0)) & set(
        _sys_online()
    )
    text = _actorq()
    assert text.returncode == 0
    assert "Scheduling universe" in text.stdout


def test_cli_bad_root_is_one_clear_line(tmp_path):
    out = _actorq("--root", str(tmp_path / "missing"))
    assert out.returncode == 1
    assert out.stderr.startswith("actorq topology: ")
    assert "Traceback" not in out.stderr


def test_cli_honours_actorq_fsroot(hwloc_trees):
    env = dict(os.environ, ACTORQ_FSROOT=str(hwloc_trees["2arm-2c.tar.bz2"]))
    out = _actorq("--json", env=env)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["cpus"]) == 2


# ---------------------------------------------------------------- cpu lists
cpu_sets = st.frozensets(st.integers(min_value=0, max_value=4095), max_size=200)


@given(cpu_sets)
def test_cpulist_round_trip(cpus):
    assert parse_cpulist(format_cpulist(cpus)) == cpus


@given(cpu_sets)
def test_cpumask_round_trip(cpus):
    text = format_cpumask(cpus)
    assert all(len(word) == 8 for word in text.split(","))
    assert parse_cpumask(text) == cpus


def test_kernel_spellings():
    assert parse_cpulist("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpumask("00000000,00000f01") == {0, 8, 9, 10, 11}
    assert parse_cpumask("ff,00000000") == set(range(32, 40))
    assert format_cpulist([3, 1, 2, 7]) == "1-3,7"
    with pytest.raises(ValueError):
        parse_cpulist("3-1")


def test_live_nic_locality_and_irq_affinity():
    """Each PCI NIC's node is its PCI function's numa_node, and its MSI IRQs
    carry the CPUs /proc/irq says may service them."""
    m = discover("/")
    nics = [d for d in m.devices if d.kind == "net" and d.pci_address]
    if not nics:
        pytest.skip("no PCI network interface on this machine")
    for d in nics:
        pci = f"/sys/bus/pci/devices/{d.pci_address}"
        with open(f"{pci}/numa_node") as f:
            node = int(f.read())
        if node >= 0:
            assert d.node == node
        else:  # no numa_node: the one node holding all of local_cpus, if any
            homes = [n for n, v in m.nodes.items() if d.local_cpus and d.local_cpus <= v.cpus]
            assert d.node == (homes[0] if len(homes) == 1 else None)
        try:
            irqs = sorted(int(n) for n in os.listdir(f"{pci}/msi_irqs"))
        except FileNotFoundError:
            irqs = []
        readable = [i for i in irqs if os.access(f"/proc/irq/{i}/smp_affinity", os.R_OK)]
        assert sorted(d.irq_affinity) == readable
        for irq, cpus in d.irq_affinity.items():
            with open(f"/proc/irq/{irq}/smp_affinity") as f:
                assert cpus == parse_cpumask(f.read())


class _BrokenNuma(_FakeNuma):
    def node_cpus(self, node: int) -> frozenset[int]:
        raise OSError("libnuma exploded")


@needs_nodes
def test_a_failing_libnuma_falls_back_to_sysfs():
    m = discover("/", live=_WithNuma(_BrokenNuma(top=64)))
    assert m.numa_source.startswith("libnuma failed on node")
    assert m.numa_source.endswith("sysfs only")
    assert m.nodes


def test_discover_takes_a_path(hwloc_trees):
    m = discover(hwloc_trees["2arm-2c.tar.bz2"])
    assert len(m.online_cpus) == 2


# The schema-1 field names, as documented in actorq/topology/render.py. Adding
# a field is allowed within a version: add it to the docstring and here.
SCHEMA_1 = {
    "": {
        "schema", "root", "view", "numa_source", "warnings", "base_page_size", "memory_total",
        "hugepages", "types", "packages", "cores", "cpus", "caches", "numa_nodes", "devices",
        "limits", "universe",
    },
    "types": {
        "id", "vendor", "model_name", "family", "model", "stepping", "kind", "capacity", "flags",
        "cpus",
    },
    "packages": {"id", "os_index", "cpus", "cores"},
    "cores": {"id", "package", "cpus"},
    "cpus": {
        "id", "online", "allowed", "package", "core", "node", "type", "die", "cluster",
        "core_id", "siblings", "caches",
    },
    "caches": {"id", "level", "type", "size", "line", "ways", "sets", "cpus"},
    "numa_nodes": {
        "id", "cpus", "allowed", "memory_total", "memory_free", "distances", "page_sizes",
    },
    "devices": {"name", "kind", "pci_address", "node", "local_cpus", "irq_affinity"},
    "limits": {
        "cpuset", "cpuset_source", "mems", "affinity", "cpu_quota", "isolated", "nohz_full",
    },
    "levels": {"depth", "kind", "groups"},
    "groups": {"index", "cpus", "caches", "node", "parent"},
}  # fmt: skip


def test_json_fields_are_exactly_the_documented_ones(hwloc_trees):
    m = discover(hwloc_trees["32intel64-2p8co2t+8ve.tar.bz2"])  # has devices and a cpuset
    doc = to_json(m, build_universe(m))
    assert set(doc) == SCHEMA_1[""]
    for key in ("types", "packages", "cores", "cpus", "caches", "numa_nodes", "devices"):
        assert doc[key], key
        for item in doc[key]:
            assert set(item) == SCHEMA_1[key], key
    assert set(doc["limits"]) == SCHEMA_1["limits"]
    assert set(doc["universe"]) == {"levels"}
    for level in doc["universe"]["levels"]:
        assert set(level) == SCHEMA_1["levels"]
        for g in level["groups"]:
            assert set(g) == SCHEMA_1["groups"]
    import actorq.topology.render as render

    for key in SCHEMA_1[""]:
        assert f'"{key}"' in render.__doc__, f"{key} missing from the schema docstring"
