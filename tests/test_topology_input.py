"""Bad and odd input: a clear ActorqTopologyError naming the file, or a
documented partial result with a warning; never a traceback from deep inside,
never a silent wrong count.

Each test copies a real machine (16amd64-8n2c-cpusets: 8 packages, 15 online
CPUs, a legacy cpuset fs, caches, 8 NUMA nodes) and breaks one thing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorq.errors import ActorqTopologyError
from actorq.topology import build_universe, discover
from actorq.topology.render import to_json, to_text

BASE = "16amd64-8n2c-cpusets.tar.bz2"
CPU = "sys/devices/system/cpu"
NODE = "sys/devices/system/node"


@pytest.fixture
def tree(hwloc_trees, tmp_path) -> Path:
    dest = tmp_path / "root"
    shutil.copytree(hwloc_trees[BASE], dest, symlinks=True)
    return dest


def _write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_unbroken_copy_reads_like_the_original(tree):
    m = discover(str(tree))
    assert len(m.online_cpus) == 15
    assert len(m.allowed_cpus) == 10
    assert not m.warnings


def test_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ActorqTopologyError, match=str(missing)):
        discover(str(missing))


def test_root_without_sysfs(tmp_path):
    (tmp_path / "proc").mkdir()
    with pytest.raises(ActorqTopologyError, match=r"sys/devices/system/cpu: not found"):
        discover(str(tmp_path))


def test_no_cpu_directories(tmp_path):
    (tmp_path / CPU).mkdir(parents=True)
    with pytest.raises(ActorqTopologyError, match="no cpuN directories"):
        discover(str(tmp_path))


@pytest.mark.parametrize(
    ("rel", "garbage", "what"),
    [
        (f"{CPU}/cpu0/topology/thread_siblings", "not-hex", "hex CPU mask"),
        (f"{CPU}/cpu0/topology/physical_package_id", "zero", "an integer"),
        (f"{CPU}/online", "0-3,x", "CPU list"),
        (f"{CPU}/cpu1/cache/index2/size", "lots", "a size"),
        (f"{CPU}/cpu1/cache/index0/type", "Weird", "Data, Instruction or Unified"),
        (f"{NODE}/node1/distance", "20 ten 20", "space-separated integers"),
        (f"{NODE}/node1/meminfo", "Node 1 MemTotal: many kB", "MemTotal"),
        ("dev/cpuset/dummy/cpus", "0-6;12", "CPU list"),
    ],
)
def test_garbage_file_names_the_file(tree, rel, garbage, what):
    path = _write(tree, rel, garbage + "\n")
    with pytest.raises(ActorqTopologyError) as info:
        discover(str(tree))
    assert str(path) in str(info.value)
    assert what in str(info.value)


def test_directory_where_a_file_should_be(tree):
    target = tree / f"{CPU}/cpu2/topology/core_id"
    target.unlink()
    target.mkdir()
    with pytest.raises(ActorqTopologyError, match="expected a file, found a directory"):
        discover(str(tree))


def test_online_cpu_without_topology_is_a_warned_partial_result(tree):
    shutil.rmtree(tree / f"{CPU}/cpu3/topology")
    m = discover(str(tree))
    assert any("cpu3/topology: missing for online CPU 3" in w for w in m.warnings)
    cpu = m.cpus[3]
    assert cpu.online
    assert m.cores[cpu.core].cpus == {3}
    # CPU 2's package mask still names CPU 3, so CPU 3 stays in that package.
    assert m.packages[cpu.package].cpus == {2, 3}
    assert len(m.packages) == 8
    build_universe(m)  # still a valid universe


def test_missing_cache_dir_for_one_cpu_is_warned(tree):
    shutil.rmtree(tree / f"{CPU}/cpu5/cache")
    m = discover(str(tree))
    assert any("missing for online CPUs [5]" in w for w in m.warnings)
    assert m.cpus[5].caches == ()
    assert sum(1 for k in m.caches if k.level == 2) == 14


def test_no_cache_dirs_at_all_is_normal(tree):
    for i in range(16):
        shutil.rmtree(tree / f"{CPU}/cpu{i}/cache", ignore_errors=True)
    m = discover(str(tree))
    assert m.caches == ()
    assert not m.warnings


def test_cache_without_level_is_skipped_with_warning(tree):
    (tree / f"{CPU}/cpu0/cache/index0/level").unlink()
    m = discover(str(tree))
    assert any("index0: no level/type" in w for w in m.warnings)


def test_nul_bytes_and_whitespace_are_ignored(tree):
    _write(tree, f"{CPU}/online", "0-3,5-15\x00\n")
    _write(tree, f"{NODE}/node1/distance", "20 10 20 20 20 20 20 20\x00")
    m = discover(str(tree))
    assert len(m.online_cpus) == 15
    assert m.nodes[1].distances[1] == 10


def test_stale_list_file_loses_to_mask(tree):
    # Masks win: a *_list that disagrees is ignored.
    _write(tree, f"{CPU}/cpu0/topology/core_siblings_list", "0-7\n")
    m = discover(str(tree))
    assert m.packages[m.cpus[0].package].cpus == {0, 1}


def test_distance_row_of_unmatchable_length_is_dropped_with_warning(tree):
    _write(tree, f"{NODE}/node2/distance", "10 20 30\n")
    m = discover(str(tree))
    assert m.nodes[2].distances == {}
    assert any("node2/distance: 3 values for 8 nodes" in w for w in m.warnings)


def test_cpu_in_two_nodes_is_kept_in_the_first_with_warning(tree):
    _write(tree, f"{NODE}/node2/cpumap", "00000007\n")  # claims CPUs 0-2; 0-1 are node 0's
    m = discover(str(tree))
    assert m.cpus[0].node == 0
    assert any("CPU 0 already in node 0" in w for w in m.warnings)


def test_empty_cpuset_leaves_no_usable_cpu(tree):
    _write(tree, "dev/cpuset/dummy/cpus", "\n")
    m = discover(str(tree))
    assert m.allowed_cpus == frozenset()
    assert any("leave no online CPU" in w for w in m.warnings)
    with pytest.raises(ActorqTopologyError, match="no usable CPU"):
        build_universe(m)
    assert build_universe(m, "all").cpus == m.online_cpus


def test_cgroup2_walks_up_to_the_nearest_cpuset(tmp_path, hwloc_trees):
    dest = tmp_path / "root"
    shutil.copytree(hwloc_trees["32amd64-4s2n4c-cgroup2.tar.bz2"], dest, symlinks=True)
    leaf = dest / "cgroup/unified/uid_2008/job_15389/step_0"
    job = leaf.parent
    for name in ("cpuset.cpus.effective", "cpuset.mems.effective"):
        (job / name).write_text((leaf / name).read_text())
        (leaf / name).unlink()
    (leaf / "cpu.max").write_text("150000 100000\n")
    (job / "cpu.max").write_text("max 100000\n")
    m = discover(str(dest))
    assert m.limits.cpuset_source == "cgroup2"
    assert m.allowed_cpus == frozenset(range(6))
    assert m.limits.cpu_quota == pytest.approx(1.5)


def test_bad_cpu_max_names_the_file(tmp_path, hwloc_trees):
    dest = tmp_path / "root"
    shutil.copytree(hwloc_trees["32amd64-4s2n4c-cgroup2.tar.bz2"], dest, symlinks=True)
    path = _write(dest, "cgroup/unified/uid_2008/job_15389/step_0/cpu.max", "lots 100000")
    with pytest.raises(ActorqTopologyError, match=str(path)):
        discover(str(dest))


def test_actorq_fsroot_sets_the_default_root(tree, monkeypatch):
    monkeypatch.setenv("ACTORQ_FSROOT", str(tree))
    m = discover()
    assert m.root == str(tree)
    assert len(m.online_cpus) == 15


def test_cgroup1_cfs_quota(tmp_path, hwloc_trees):
    """offline-cpu0-node0 runs in cpuacct,cpu:/user.slice (cgroup v1), mounted
    at /sys/fs/cgroup/cpu,cpuacct; give it a quota there and at the root."""
    dest = tmp_path / "root"
    shutil.copytree(hwloc_trees["offline-cpu0-node0.tar.bz2"], dest, symlinks=True)
    base = "sys/fs/cgroup/cpu,cpuacct"
    _write(dest, f"{base}/cpu.cfs_quota_us", "300000\n")
    _write(dest, f"{base}/cpu.cfs_period_us", "100000\n")
    _write(dest, f"{base}/user.slice/cpu.cfs_quota_us", "250000\n")
    _write(dest, f"{base}/user.slice/cpu.cfs_period_us", "100000\n")
    m = discover(str(dest))
    assert m.limits.cpu_quota == pytest.approx(2.5)
    assert m.limits.cpuset_source == "cgroup1"


def test_offline_smt_sibling_does_not_make_a_new_processor_type(tmp_path, hwloc_trees):
    """Raptor Lake with CPU 1 (P-core 0's second thread) taken offline: core 0
    now has one thread and L1/L2 shared by one CPU, but it is still a P-core."""
    dest = tmp_path / "root"
    shutil.copytree(hwloc_trees["20em64t-hybrid-1p6c2t+2ca4co1t.tar.bz2"], dest, symlinks=True)
    _write(dest, f"{CPU}/online", "0,2-19\n")
    m = discover(str(dest))
    assert not m.cpus[1].online
    assert len(m.types) == 2
    assert m.cpus[0].type == m.cpus[2].type
    assert m.types[m.cpus[0].type].kind == "performance"
    assert m.cores[m.cpus[0].core].cpus == {0}


def test_pci_gpus_by_class_without_bmc_framebuffers(tree):
    """A 3D controller is a GPU on its numa_node; an ASPEED BMC VGA is not."""
    pci = "sys/bus/pci/devices"
    _write(tree, f"{pci}/0000:03:00.0/class", "0x030000\n")
    _write(tree, f"{pci}/0000:03:00.0/vendor", "0x1a03\n")
    _write(tree, f"{pci}/0000:41:00.0/class", "0x030200\n")
    _write(tree, f"{pci}/0000:41:00.0/vendor", "0x10de\n")
    _write(tree, f"{pci}/0000:41:00.0/numa_node", "3\n")
    _write(tree, f"{pci}/0000:42:00.0/class", "0x120000\n")
    _write(tree, f"{pci}/0000:42:00.0/numa_node", "-1\n")
    _write(tree, f"{pci}/0000:42:00.0/local_cpus", "00000c00\n")  # CPUs 10-11: node 5
    m = discover(str(tree))
    found = {d.pci_address: (d.kind, d.node) for d in m.devices}
    assert found == {"0000:41:00.0": ("gpu", 3), "0000:42:00.0": ("accelerator", 5)}


# ---------------------------------------------------------------- any garbage
_NASTY = [
    b"",
    b"\x00",
    b"-1",
    b"0-4294967295",
    b"ffffffff," * 3000,
    b"1-0",
    b"0-3,,5",
    b"Node 0 MemTotal: lots kB",
    b"\xff\xfe\x00garbage",
    b"99999999999999999999999999",
]


@pytest.fixture(params=[BASE, "32amd64-4s2n4c-cgroup2.tar.bz2"])
def tree_files(request, hwloc_trees, tmp_path) -> tuple[Path, list[Path]]:
    """A copy of a legacy-cpuset machine or of a cgroup2 one, and its files."""
    tree = tmp_path / "fuzz"
    shutil.copytree(hwloc_trees[request.param], tree, symlinks=True)
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    return tree, files


@pytest.mark.timeout(300)
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_corrupted_file_gives_a_named_error_or_a_machine(tree_files, data):
    """Whatever one file holds: an ActorqTopologyError naming a file under the
    root, or a Machine that renders; never another exception."""
    tree, files = tree_files
    path = data.draw(st.sampled_from(files))
    garbage = data.draw(st.one_of(st.sampled_from(_NASTY), st.binary(max_size=40)))
    original = path.read_bytes()
    path.write_bytes(garbage)
    try:
        try:
            m = discover(str(tree))
        except ActorqTopologyError as exc:
            message = str(exc)
            m = None
        if m is None:
            assert str(tree) in message
            return
        for view in ("allowed", "all"):
            cpus = m.allowed_cpus if view == "allowed" else m.online_cpus
            if cpus:
                u = build_universe(m, view)
                to_text(m, u, view)
                json.dumps(to_json(m, u, view))
    finally:
        path.write_bytes(original)


def test_isolated_and_nohz_full(tree):
    _write(tree, f"{CPU}/isolated", "2-3,4\n")  # 4 is offline: dropped
    _write(tree, f"{CPU}/nohz_full", "(null)\n")
    m = discover(str(tree))
    assert m.limits.isolated == {2, 3}
    assert m.limits.nohz_full == frozenset()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cgroup_path", ["-1", "../../..", "uid_2008/job_15389/step_0", "//"])
def test_odd_cgroup_paths_neither_loop_nor_escape(tmp_path, hwloc_trees, cgroup_path):
    """proc/self/cpuset is a path on the original machine; garbage there once
    made the walk up to the mount root loop forever."""
    dest = tmp_path / "root"
    shutil.copytree(hwloc_trees["32amd64-4s2n4c-cgroup2.tar.bz2"], dest, symlinks=True)
    _write(dest, "proc/self/cpuset", cgroup_path + "\n")
    m = discover(str(dest))
    if cgroup_path.startswith("uid"):  # no leading "/": still the same cgroup
        assert m.allowed_cpus == frozenset(range(6))
    else:  # nothing at the mount root: no cpuset
        assert m.limits.cpuset is None
