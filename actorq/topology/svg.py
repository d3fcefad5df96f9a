"""The universe as a picture: nested boxes, with things drawn on their CPUs.

``actorq place --svg FILE`` uses it to show at a glance what was compressed
into one cache or node and what was spread apart. The boxes follow the
universe's levels (machine > node/package > shared cache > core > CPU; a
level whose group holds the same CPUs as the one below is folded into one
box with both names). Whatever is drawn on a CPU comes as ``(label, key)``
pairs; every key gets one colour and a line in the legend. The module knows
nothing of actors: the caller names the things and their keys.

Hand-written SVG 1.1 text (no drawing library): every name is escaped, and a
label cut to fit its box keeps its full text in a ``<title>`` (a tooltip).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from .model import Machine
from .render import _cache_name, human_bytes
from .universe import Group, Universe

# One colour per key, in order of first appearance (Okabe-Ito, then Tableau):
# told apart also by most colour-blind readers. Keys beyond them cycle.
PALETTE = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
    "#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#9C755F", "#EDC948", "#76B7B2",
)  # fmt: skip

CPU_W = 92  # a CPU box: its name, then one line per thing on it
LINE = 13
MAX_LINES = 10  # things shown per CPU; the rest are counted ("+3 more")
PAD = 6
HEAD = 16  # a group box's name line
ROW_LIMIT = 1200  # a box wraps its children onto a new row past this width
LABEL_CHARS = 13


@dataclass
class _Box:
    """A laid-out box: its size, and what it draws relative to its corner."""

    w: int
    h: int
    parts: list[str] = field(default_factory=list)


def _text(x: float, y: float, s: str, size: int = 10, weight: str = "normal") -> str:
    return (
        f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" font-weight="{weight}">'
        f"{escape(s)}</text>"
    )


def _shift(parts: list[str], dx: int, dy: int) -> str:
    return f'<g transform="translate({dx},{dy})">' + "".join(parts) + "</g>"


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _cpu_box(
    cpu: int, things: Sequence[tuple[str, str | None]], colour: Mapping[str | None, str]
) -> _Box:
    shown = list(things[:MAX_LINES])
    more = len(things) - len(shown)
    h = HEAD + LINE * (len(shown) + (1 if more else 0)) + PAD
    parts = [
        f'<rect class="cpu" width="{CPU_W}" height="{h}" rx="3" fill="#ffffff" stroke="#555"/>',
        _text(PAD, 12, f"cpu {cpu}", 10, "bold"),
    ]
    for i, (label, key) in enumerate(shown):
        y = HEAD + LINE * i
        parts.append(
            f'<g class="item"><title>{escape(label)}</title>'
            f'<rect x="3" y="{y}" width="{CPU_W - 6}" height="{LINE - 1}" rx="2" '
            f'fill="{colour[key]}"/>{_text(PAD, y + 10, _short(label), 9)}</g>'
        )
    if more:
        rest = ", ".join(label for label, _ in things[MAX_LINES:])
        y = HEAD + LINE * len(shown)
        parts.append(
            f"<g><title>{escape(rest)}</title>{_text(PAD, y + 10, f'+{more} more', 9)}</g>"
        )
    return _Box(CPU_W, h, parts)


def _flow(children: list[_Box]) -> tuple[int, int, list[str]]:
    """Children left to right, wrapping at ROW_LIMIT: (width, height, parts)."""
    x = y = row_h = width = 0
    parts: list[str] = []
    for child in children:
        if x and x + child.w > ROW_LIMIT:
            x, y, row_h = 0, y + row_h + PAD, 0
        parts.append(_shift(child.parts, x, y))
        width = max(width, x + child.w)
        row_h = max(row_h, child.h)
        x += child.w + PAD
    return width, y + row_h, parts


class _Drawing:
    def __init__(
        self,
        machine: Machine,
        universe: Universe,
        items: Mapping[int, Sequence[tuple[str, str | None]]],
        colour: Mapping[str | None, str],
    ) -> None:
        self.m, self.u, self.items, self.colour = machine, universe, items, colour
        self.children: dict[tuple[int, int], list[Group]] = {}
        for depth in range(1, len(universe.levels)):
            for g in universe.levels[depth - 1].groups:
                if g.parent is not None:
                    self.children.setdefault((depth, g.parent), []).append(g)

    def name(self, depth: int, g: Group) -> str:
        kind = self.u.levels[depth].kind
        first = self.m.cpus[min(g.cpus)]
        if kind == "node":
            base = f"NUMA node {g.node}"
        elif kind == "package":
            base = f"package {first.package}"
        elif kind == "core":
            base = f"core {first.core}"
        elif kind in ("l2", "l3"):
            base = f"{kind.upper()} #{g.index}"
        else:
            base = f"{kind} {g.index}" if kind != "machine" else "machine"
        caches = [
            f"{_cache_name(k)} {human_bytes(k.size)}" for k in g.caches if k.type != "instruction"
        ]
        parent = self.u.levels[depth + 1].groups[g.parent] if g.parent is not None else None
        if kind != "node" and g.node is not None and (parent is None or parent.node is None):
            base += f", NUMA node {g.node}"  # the coarsest box inside one node says which
        return base + (f" ({', '.join(caches)})" if caches else "")

    def group(self, depth: int, g: Group) -> _Box:
        names = [self.name(depth, g)]
        kids = self.children.get((depth, g.index), [])
        while depth > 0 and len(kids) == 1 and kids[0].cpus == g.cpus:  # fold same-CPU levels
            depth, g = depth - 1, kids[0]
            names.append(self.name(depth, g))
            kids = self.children.get((depth, g.index), [])
        if depth == 0:
            inner = [self.cpu(c) for c in sorted(g.cpus)]
        else:
            inner = [self.group(depth - 1, k) for k in sorted(kids, key=lambda k: min(k.cpus))]
        label = " · ".join(names)
        w, h, parts = _flow(inner)
        w = max(w, 7 * len(label)) + 2 * PAD
        h += HEAD + 2 * PAD
        shade = 250 - 8 * min(depth, 6)
        return _Box(
            w,
            h,
            [
                f'<rect class="group" width="{w}" height="{h}" rx="5" '
                f'fill="rgb({shade},{shade},{shade})" stroke="#999"/>',
                _text(PAD, 13, label, 11, "bold"),
                _shift(parts, PAD, HEAD + PAD),
            ],
        )

    def cpu(self, cpu: int) -> _Box:
        return _cpu_box(cpu, self.items.get(cpu, ()), self.colour)


def to_svg(
    machine: Machine,
    universe: Universe,
    items: Mapping[int, Sequence[tuple[str, str | None]]] | None = None,
    legend: Mapping[str | None, str] | None = None,
    title: str = "",
) -> str:
    """An SVG document of ``universe`` with ``items`` (cpu -> [(label, key)]) on their CPUs.

    ``legend`` gives a line of text per key (keys without one are named as
    they are; None is "no group"). Only the universe's CPUs are drawn.
    """
    items = items or {}
    keys: list[str | None] = []
    for cpu in sorted(items):
        for _label, key in items[cpu]:
            if key not in keys:
                keys.append(key)
    for key in legend or {}:
        if key not in keys:
            keys.append(key)
    colour: dict[str | None, str] = {}
    for key in keys:
        colour[key] = "#cccccc" if key is None else PALETTE[len(colour) % len(PALETTE)]
    drawing = _Drawing(machine, universe, items, colour)
    top = len(universe.levels) - 1
    boxes = [drawing.group(top, g) for g in universe.levels[top].groups]
    width, height, parts = _flow(boxes)

    head: list[str] = []
    y, head_w = 4, 8 * len(title)
    if title:
        y += 16
        head.append(_text(0, y, title, 13, "bold"))
    for key in keys:
        y += 16
        text = (legend or {}).get(key) or ("no group" if key is None else key)
        head.append(
            f'<rect x="0" y="{y - 10}" width="12" height="12" fill="{colour[key]}" stroke="#555"/>'
        )
        head.append(_text(18, y, text, 11))
        head_w = max(head_w, 18 + 7 * len(text))
    y += 10
    width = max(width, head_w) + 2 * PAD
    height = y + height + 2 * PAD
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">\n'
        f"<title>{escape(title or 'actorq placement')}</title>\n"
        f'<rect width="100%" height="100%" fill="#ffffff"/>\n'
        + _shift(head, PAD, 0)
        + "\n"
        + _shift(parts, PAD, y)
        + "\n</svg>\n"
    )
