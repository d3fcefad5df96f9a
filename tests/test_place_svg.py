"""``actorq place --svg``: a picture of the plan that an SVG reader accepts, naming
every CPU of the universe and every actor, one colour per group."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _runtime_helpers import env

from actorq.topology import build_universe, discover

SVG = "{http://www.w3.org/2000/svg}"
SPEC = ("web=16", "kv=8,shared,4MiB", "db=4,shared")
MACHINES = ("64amd64-4s2n4ca2co.tar.bz2", "20em64t-hybrid-1p6c2t+2ca4co1t.tar.bz2")


def _place(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actorq", "place", *args],
                          capture_output=True, text=True, env=env(), timeout=120)


def _items(root: ET.Element) -> list[tuple[str, str]]:
    """(actor name, fill) of every actor drawn."""
    out = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "item":
            title, rect = g.find(f"{SVG}title"), g.find(f"{SVG}rect")
            assert title is not None
            assert rect is not None
            out.append((title.text or "", rect.get("fill") or ""))
    return out


@pytest.mark.parametrize("machine", MACHINES)
def test_the_picture_names_every_cpu_and_actor(machine, hwloc_trees, tmp_path: Path) -> None:
    root = hwloc_trees[machine]
    picture = tmp_path / "place.svg"
    proc = _place("--all", "--root", str(root), "--svg", str(picture), *SPEC)
    assert proc.returncode == 0, proc.stderr
    assert "web-0" in proc.stdout  # the text table is still printed

    svg = ET.parse(picture).getroot()  # a well-formed document
    assert svg.tag == f"{SVG}svg"
    texts = {t.text for t in svg.iter(f"{SVG}text")}
    cpus = build_universe(discover(str(root)), "all").cpus
    assert {f"cpu {c}" for c in cpus} <= texts
    assert not {t for t in texts if t and t.startswith("cpu ")} - {f"cpu {c}" for c in cpus}

    plan = json.loads(_place("--all", "--root", str(root), "--json", *SPEC).stdout)
    drawn = _items(svg)
    assert sorted(name for name, _ in drawn) == sorted(a["name"] for a in plan["actors"])
    fill = {}
    for name, colour in drawn:
        fill.setdefault(name.rsplit("-", 1)[0], set()).add(colour)
    assert all(len(colours) == 1 for colours in fill.values()), fill  # one colour per group
    assert len({c for colours in fill.values() for c in colours}) == 3
    legend = " ".join(t for t in texts if t)
    assert "kv (group, 8 actors)" in legend
    assert "web (private, 16 actors)" in legend


def test_svg_to_stdout_is_only_the_picture(hwloc_trees) -> None:
    root = hwloc_trees[MACHINES[0]]
    proc = _place("--all", "--root", str(root), "--svg", "-", "a=2", "b<&>=1")
    assert proc.returncode == 0, proc.stderr
    svg = ET.fromstring(proc.stdout.encode())
    assert sorted(name for name, _ in _items(svg)) == ["a-0", "a-1", "b<&>"]


def test_an_unwritable_svg_file_is_one_line(tmp_path: Path) -> None:
    proc = _place("--svg", str(tmp_path / "no" / "such" / "dir.svg"), "a=2")
    assert proc.returncode == 1
    assert proc.stderr.startswith("actorq place: --svg ")
    assert "Traceback" not in proc.stderr
