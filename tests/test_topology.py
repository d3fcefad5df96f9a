"""Discovery against the 14 real machines in tests/fixtures/hwloc-sysfs, and this one."""

from __future__ import annotations

import pytest

from actorq.topology import build_universe, discover
from conftest import EXPECTED, MACHINES


@pytest.mark.parametrize("name", MACHINES)
def test_counts_match_expected(hwloc_trees, name):
    e = EXPECTED[name]
    m = discover(str(hwloc_trees[name]))
    online = [c for c in m.cpus.values() if c.online]
    assert len(m.packages) == e["packages"]
    assert len(m.nodes) == e["numa_nodes"]
    assert len(m.cores) == e["cores"]
    assert len(online) == e["pus"]


def test_live_machine_discovers():
    m = discover("/")
    assert m.allowed_cpus
    u = build_universe(m)
    assert u.cpus == m.allowed_cpus
