"""``actorq place``: spec parsing, and the command on a real machine tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actorq.cli.place import load_spec, parse_compact, parse_size
from actorq.errors import ConfigError

MACHINE = "32intel64-2p8co2t+8ve.tar.bz2"  # 2 packages x 8 cores x 2 threads, 1 node each


def test_sizes() -> None:
    assert parse_size("4MiB") == 4 << 20
    assert parse_size("512 KiB") == 512 << 10
    assert parse_size("1.5G") == 3 << 29
    assert parse_size(4096) == 4096
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("lots")


def test_compact_form() -> None:
    actors = dict(parse_compact("web=3 kv=2,shared,4MiB;solo,cpu=3 hot=2,group=kv,writes=private"))
    assert list(actors) == ["web-0", "web-1", "web-2", "kv-0", "kv-1", "solo", "hot-0", "hot-1"]
    assert not actors["web-0"].shared
    assert actors["kv-1"].group == "kv"
    assert actors["kv-1"].footprint == 4 << 20
    assert actors["solo"].cpu == 3
    assert actors["hot-0"].shared
    assert actors["hot-0"].writes == "private"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("web=x", "count 'x' is not a number"),
        ("web=2,loud", "option 'loud'"),
        ("web=2,color=red", "unknown key 'color'"),
        ("web web", "appears twice"),
        ("web=2,state=shared,writes=both", "writes"),
        ("", "spec is empty"),
    ],
)
def test_compact_form_errors_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_compact(spec)


def test_toml_and_json_files(tmp_path: Path) -> None:
    toml = tmp_path / "spec.toml"
    toml.write_text(
        '[actors.web]\ncount = 2\n\n[actors.kv]\ncount = 2\nstate = "shared"\nfootprint = "1 MiB"\n'
    )
    js = tmp_path / "spec.json"
    kv = {"count": 2, "group": "kv", "state": "shared", "footprint": 1 << 20}
    js.write_text(json.dumps({"actors": {"web": {"count": 2}, "kv": kv}}))
    a, b = dict(load_spec([str(toml)])), dict(load_spec([str(js)]))
    assert a == b
    assert a["kv-0"].group == "kv"
    bad = tmp_path / "bad.toml"
    bad.write_text("[actors.web]\ncuont = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'cuont'"):
        load_spec([str(bad)])
    with pytest.raises(ConfigError, match="not found"):
        load_spec([str(tmp_path / "missing.toml")])
    worse = tmp_path / "worse.toml"
    worse.write_text("[web]\ncount = 2\n")
    with pytest.raises(ConfigError, match=r"\[actors.NAME\]"):
        load_spec([str(worse)])


def actorq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorq", "place", *args], capture_output=True, text=True, timeout=60
    )


def test_place_json_on_a_real_machine(hwloc_trees: dict[str, Path]) -> None:
    root = str(hwloc_trees[MACHINE])
    proc = actorq("--root", root, "--json", "web=4", "kv=4,shared,4MiB")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["actors"]
    names = [f"web-{i}" for i in range(4)] + [f"kv-{i}" for i in range(4)]
    assert [r["name"] for r in rows] == names
    for r in rows:
        assert set(r) == {"name", "group", "cpu", "core", "package", "node", "reason"}
    kv = [r for r in rows if r["group"] == "kv"]
    assert len({r["node"] for r in kv}) == 1
    assert len({r["core"] for r in kv}) == 4
    assert "fits the 11 MiB L3" in kv[0]["reason"]
    assert len({r["cpu"] for r in rows}) == 8


def test_place_text_and_worker_cpus(hwloc_trees: dict[str, Path]) -> None:
    root = str(hwloc_trees[MACHINE])
    proc = actorq("--root", root, "--cpus", "0-1,16-17", "web=6")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("6 actors on 4 cpus")
    assert "an idle SMT sibling" in proc.stdout


def test_place_reports_a_bad_pin(hwloc_trees: dict[str, Path]) -> None:
    root = str(hwloc_trees[MACHINE])
    proc = actorq("--root", root, "--cpus", "0-3", "web,cpu=9")
    assert proc.returncode == 1
    assert "pinned to cpu 9" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_same_plan_in_another_process(hwloc_trees: dict[str, Path]) -> None:
    import os

    root = str(hwloc_trees["128arm-2pa2n8cluster4co.tar.bz2"])
    spec = ["web=40", "kv=12,shared,8MiB", "cache=6,group=c,footprint=64KiB", "pin=2,node=3"]
    outs = []
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-m", "actorq", "place", "--root", root, "--json", *spec],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
