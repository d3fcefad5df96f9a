"""Join the benchmark matrix's results into one Markdown table and plots.

    python -m bench report [--results bench/results] [--markdown PATH] [--png PATH]

Reads every ``*.json`` under ``--results`` (the cells ``python -m bench
matrix`` writes; a bare ``--json`` list from any benchmark works too, with
its factors unknown), prints a Markdown table and writes it to
``REPORT.md`` beside a grouped bar chart ``matrix.png`` (matplotlib, the
``bench`` extra; without it the table is still written and the plot is
skipped with a message).

Rows are grouped by benchmark, factors and case (a benchmark may measure
several cases per cell, such as the kv benchmark's ``SET -P 16``). In each
group the contenders whose names start with ``actorq`` come first; every
peer gets ``actorq ÷ peer`` against the fastest of them (named in the
``vs`` column): above 1 actorq moves more messages per second, below 1 the
peer does. Cells that failed or were skipped are listed
under the table with the reason, so a missing number is never silent.

Two curves join the bars, each drawn from whatever results are there and
otherwise skipped with a line saying what would produce them:

- ``overload.png``, the overload curve: goodput and p99 latency against the
  offered load, per server, from ``python -m bench overload --json-out
  bench/results/overload.json`` (its ``kv`` rows). The Markdown gets the
  same steps as a table.
- ``scaling.png``, the scaling curve: throughput against workers, one line
  per benchmark/case/contender measured at two or more worker counts (the
  matrix's ``w2`` and ``wall`` cells, or any results whose rows carry
  ``workers``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def is_overload(data: object) -> bool:
    """A ``python -m bench overload --json`` document (its open-loop ``kv`` steps)."""
    return isinstance(data, dict) and isinstance(data.get("kv"), list) and "targets" in data


def load_overload(results_dir: Path) -> list[dict[str, Any]]:
    """The open-loop steps of every overload document, each with its ``file``."""
    steps = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # load() names it
        if is_overload(data):
            steps += [{**r, "file": path.name} for r in data["kv"]
                      if isinstance(r, dict) and r.get("offered_per_s") is not None]
    return steps


def load(results_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Flattened rows (one per contender and case) and (cell, note) for cells without rows."""
    rows: list[dict[str, Any]] = []
    notes: list[tuple[str, str]] = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            notes.append((path.name, f"unreadable: {exc}"))
            continue
        if isinstance(data, list):
            data = {"benchmark": path.stem, "factors": {}, "results": data}
        if not isinstance(data, dict):
            notes.append((path.name, "not a results file"))
            continue
        if is_overload(data):
            continue  # drawn as the overload curve (load_overload)
        if data.get("skipped"):
            notes.append((path.stem, "skipped: " + str(data["skipped"])))
            continue
        if data.get("error"):
            notes.append((path.stem, "error: " + str(data["error"])))
        factors = data.get("factors") or {}
        applied = data.get("applied")
        for r in data.get("results") or []:
            if not isinstance(r, dict) or "contender" not in r:
                continue
            rows.append({
                "benchmark": data.get("benchmark", path.stem),
                "payload": r.get("payload", factors.get("payload")),
                "workers": r.get("workers", factors.get("workers"))
                if applied is None or "workers" in applied or "workers" in r else None,
                "placement": factors.get("placement")
                if applied is None or "placement" in applied else None,
                "case": r.get("case") or r.get("workload") or r.get("test") or "",
                "contender": r["contender"],
                "msgs_per_s": r.get("msgs_per_s"),
                "rtt_p50_us": r.get("rtt_p50_us"),
                "rtt_p99_us": r.get("rtt_p99_us"),
                "spread": r.get("spread"),
                "machine": data.get("machine", {}),
                "file": path.name,
            })
    return rows, notes


def group_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["benchmark"], r["payload"] or 0, str(r["workers"] or ""), r["placement"] or "",
            r["case"])


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each peer row gains ``ratio`` = actorq's rate ÷ its rate, against the fastest
    actorq contender of its group (named in ``reference``); actorq rows get None."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[group_key(r)].append(r)
    out = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        members = groups[key]
        ours = [m for m in members if str(m["contender"]).startswith("actorq")]
        rated = [m for m in ours if m["msgs_per_s"]]
        ref = max(rated, key=lambda m: m["msgs_per_s"]) if rated else None
        members.sort(key=lambda m: (m not in ours, m is not ref, str(m["contender"])))
        for m in members:
            rate, base = m["msgs_per_s"], (ref or {}).get("msgs_per_s")
            m["ratio"] = base / rate if m not in ours and rate and base else None
            m["reference"] = ref["contender"] if ref is not None and m not in ours else None
            out.append(m)
    return out


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(rows: list[dict[str, Any]], notes: list[tuple[str, str]]) -> str:
    lines = [
        "| benchmark | payload | workers | placement | case | contender | msgs/s | actorq ÷ peer "
        "| vs | p50 µs | p99 µs | spread |",
        "|---|---:|---:|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {_fmt(r['payload'], 'd')} | {r['workers'] or '–'} "
            f"| {r['placement'] or '–'} | {r['case'] or '–'} | {r['contender']} "
            f"| {_fmt(r['msgs_per_s'], ',.0f')} | {_fmt(r['ratio'], '.2f')} "
            f"| {r['reference'] or '–'} "
            f"| {_fmt(r['rtt_p50_us'], '.1f')} | {_fmt(r['rtt_p99_us'], '.1f')} "
            f"| {_fmt(r['spread'], '.2f')} |"
        )
    machines = {json.dumps(r["machine"], sort_keys=True) for r in rows if r["machine"]}
    if machines:
        lines.append("")
        for m in sorted(machines):
            d = json.loads(m)
            lines.append(f"Machine: {d.get('cpu_model')}, {d.get('cpus')} CPUs, "
                         f"Python {d.get('python')}, kernel {d.get('kernel')}.")
    if notes:
        lines.append("")
        lines.append("Cells without numbers:")
        lines += [f"- `{cell}`: {why}" for cell, why in notes]
    return "\n".join(lines) + "\n"


def overload_markdown(steps: list[dict[str, Any]]) -> str:
    """The overload steps as a table: offered load, goodput, p99, errors."""
    lines = [
        "Overload (open loop; `python -m bench overload`):",
        "",
        "| contender | offered × capacity | offered/s | goodput/s | p50 ms | p99 ms | errors "
        "| unanswered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(steps, key=lambda r: (str(r["contender"]), r.get("offered_x") or 0)):
        p50, p99 = r.get("rtt_p50_us"), r.get("rtt_p99_us")
        lines.append(
            f"| {r['contender']} | {_fmt(r.get('offered_x'), 'g')} "
            f"| {_fmt(r.get('offered_per_s'), ',.0f')} | {_fmt(r.get('goodput_per_s'), ',.0f')} "
            f"| {_fmt(None if p50 is None else p50 / 1000, '.2f')} "
            f"| {_fmt(None if p99 is None else p99 / 1000, '.2f')} "
            f"| {_fmt(r.get('errors'), 'd')} | {_fmt(r.get('unsent'), 'd')} |"
        )
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, or None without the bench extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


_NO_MATPLOTLIB = "matplotlib is not installed (pip install -e '.[bench]'); no plot"


def plot_overload(steps: list[dict[str, Any]], png: Path) -> str | None:
    """Goodput and p99 against offered load, per contender; returns why not, if not drawn."""
    if not steps:
        return ("no overload curve: no overload results (python -m bench overload "
                "--json-out bench/results/overload.json)")
    plt = _pyplot()
    if plt is None:
        return _NO_MATPLOTLIB
    fig, (good, late) = plt.subplots(1, 2, figsize=(12, 4.2))
    top = 0.0
    for name in sorted({str(r["contender"]) for r in steps}):
        mine = sorted((r for r in steps if str(r["contender"]) == name),
                      key=lambda r: r["offered_per_s"])
        xs = [r["offered_per_s"] for r in mine]
        top = max(top, *xs)
        good.plot(xs, [r.get("goodput_per_s") or 0 for r in mine], marker="o", label=name)
        p99 = [(r["offered_per_s"], r["rtt_p99_us"] / 1000) for r in mine if r.get("rtt_p99_us")]
        late.plot([x for x, _ in p99], [y for _, y in p99], marker="o", label=name)
    good.plot([0, top], [0, top], color="0.7", linestyle="--", label="every request served")
    good.set_xlabel("offered load (requests/s)")
    good.set_ylabel("goodput (replies/s)")
    good.set_title("goodput against offered load")
    late.set_xlabel("offered load (requests/s)")
    late.set_ylabel("p99 latency (ms, log)")
    late.set_yscale("log")
    late.set_title("p99 against offered load (from when each request was due)")
    for ax in (good, late):
        ax.legend(fontsize=7)
    _save(plt, fig, png)
    return None


def _save(plt: Any, fig: Any, png: Path) -> None:
    """Lay out ``fig``, write it to ``png`` (making its folder) and free it."""
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def scaling_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """label -> [(workers, msgs/s)] for every benchmark/factors/case/contender measured
    at two or more worker counts (the best rate where a count repeats)."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        w, rate = r["workers"], r["msgs_per_s"]
        if not rate or not isinstance(w, int) or isinstance(w, bool):
            continue
        parts = (r["benchmark"], f"{r['payload']} B" if r["payload"] else "",
                 r["placement"] or "", r["case"], str(r["contender"]))
        label = " ".join(p for p in parts if p)
        series[label][w] = max(rate, series[label].get(w, 0.0))
    return {k: sorted(v.items()) for k, v in sorted(series.items()) if len(v) >= 2}


def plot_scaling(rows: list[dict[str, Any]], png: Path) -> str | None:
    """Throughput against workers, one line per series; returns why not, if not drawn."""
    series = scaling_series(rows)
    if not series:
        return ("no scaling curve: no results at two or more worker counts (the matrix's "
                "w2 and wall cells, or rows that carry 'workers')")
    plt = _pyplot()
    if plt is None:
        return _NO_MATPLOTLIB
    fig, ax = plt.subplots(figsize=(9, 5))
    for label, points in series.items():
        ax.plot([w for w, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_xlabel("workers")
    ax.set_ylabel("msgs/s (log)")
    ax.set_yscale("log")
    ax.set_xticks(sorted({w for points in series.values() for w, _ in points}))
    ax.set_title("throughput against workers")
    ax.legend(fontsize=7)
    _save(plt, fig, png)
    return None


def plot(rows: list[dict[str, Any]], png: Path) -> str | None:
    """A grouped bar chart per benchmark (log scale); returns why not, if it could not."""
    plt = _pyplot()
    if plt is None:
        return _NO_MATPLOTLIB
    benches = sorted({r["benchmark"] for r in rows if r["msgs_per_s"]})
    if not benches:
        return "no rates to plot"
    fig, axes = plt.subplots(len(benches), 1, figsize=(12, 3.6 * len(benches)), squeeze=False)
    for ax, bench in zip(axes[:, 0], benches, strict=True):
        sub = [r for r in rows if r["benchmark"] == bench and r["msgs_per_s"]]
        cells = sorted({group_key(r)[1:] for r in sub}, key=lambda k: tuple(str(x) for x in k))
        contenders = sorted({r["contender"] for r in sub},
                            key=lambda c: (not str(c).startswith("actorq"), c))
        width = 0.8 / len(contenders)
        for j, c in enumerate(contenders):
            xs, ys = [], []
            for i, cell in enumerate(cells):
                for r in sub:
                    if r["contender"] == c and group_key(r)[1:] == cell:
                        xs.append(i + j * width)
                        ys.append(r["msgs_per_s"])
            ax.bar(xs, ys, width, label=c)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cells))])
        ax.set_xticklabels(
            ["\n".join(str(x) for x in (f"{p} B", f"w{w}" if w else "", pl, case) if x)
             for p, w, pl, case in cells], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("msgs/s (log)")
        ax.set_title(f"{bench}: actorq beside its peers")
        ax.legend(fontsize=7, ncols=min(4, len(contenders)))
    _save(plt, fig, png)
    return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench report", description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--markdown", default=None, help="default: RESULTS_DIR/REPORT.md")
    ap.add_argument("--png", default=None, help="default: RESULTS_DIR/matrix.png")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(f"bench report: {results} does not exist; run `tox -m bench` or "
              "`python -m bench matrix ...` first", file=sys.stderr)
        return 2
    rows, notes = load(results)
    steps = load_overload(results)
    if not rows and not notes and not steps:
        print(f"bench report: no *.json results in {results}", file=sys.stderr)
        return 2
    text = markdown(with_ratios(rows), notes)
    if steps:
        text += "\n" + overload_markdown(steps)
    md = Path(args.markdown) if args.markdown else results / "REPORT.md"
    md.write_text(text)
    print(text)
    print(f"bench report: wrote {md}", file=sys.stderr)
    pictures = (
        (plot, rows, Path(args.png) if args.png else results / "matrix.png"),
        (plot_overload, steps, results / "overload.png"),
        (plot_scaling, rows, results / "scaling.png"),
    )
    for draw, data, png in pictures:
        why = draw(data, png)
        print(f"bench report: {why}" if why else f"bench report: wrote {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
