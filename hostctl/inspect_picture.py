"""The picture of an inspected graph: its ops from the input down, what runs on the DPU and what on the CPU.

    inspect.json's nodes and their inputs -> boxes (one per op; on a big graph one per DPU subgraph) -> a layered
    layout -> one matplotlib drawing, saved as SVG and as PNG

The layout is our own, Sugiyama's recipe cut to what a network's graph needs (no graphviz: it is not a Python
package, and a binary we cannot count on): longest-path layers, a hidden point on every layer a long edge crosses,
a few barycenter sweeps against crossings, then x positions pulled towards the neighbours and pushed apart just
enough. Every step is a pass over the layers that sorts each one: 2,000 boxes (and as many points of long edges)
are laid out in about half a second; drawing the letters is what takes the time.

On a big graph what matters is where the CPU islands sit, so every DPU subgraph (nndct's count: connected ops on
one device) is drawn as one box that lists its op kinds, and the CPU ops stay single; with very many CPU ops their
connected runs are collapsed too. Data that leaves a subgraph for the CPU and comes back into the same subgraph
is drawn as a dashed edge going up. The picture grows with the graph up to MAX_PIXELS a side; beyond that the
letters shrink (the SVG keeps its text as text, so it can still be zoomed and searched).

matplotlib is imported only when a picture is drawn, with its object API and the Agg canvas (no pyplot, no global
backend), as in report.py.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from container_payload.inspector.names import inserted_permute, op_kind

BIG_GRAPH = 60  # above this many nodes, each DPU subgraph is drawn as one box
MANY_CPU_OPS = 60  # above this many CPU ops (on a big graph), connected CPU ops are drawn as one box too
MAX_PIXELS = 4000  # the PNG's longer side at most
DPI = 100
FONT_PT = 8.0  # the boxes' letters when the graph fits MAX_PIXELS; title and legend scale with it
MIN_LETTER_PX = 3.0  # letters smaller than this (an em, in pixels) are left out of the PNG; the SVG keeps them

COLOURS = {  # kind -> (fill, edge)
    "dpu": ("#dbe8f6", "#4a78a8"),
    "cpu": ("#f79b57", "#b03a06"),
    "input": ("#c9e7c1", "#3e7d32"),
    "output": ("#e1d7ef", "#6b4f96"),
}
LEGEND = (("dpu", "runs on the DPU"), ("cpu", "runs on the CPU"), ("input", "input"), ("output", "output"))
EDGE_COLOUR, BACK_COLOUR = "#55595e", "#b03a06"

_CHAR = 0.61  # DejaVu Sans Mono's advance, in ems: box widths follow from the number of letters
_LINE = 1.25  # line height, in ems
_PAD = 0.5  # inside a box, around its text
_GAP_X, _GAP_DUMMY, _GAP_Y = 1.6, 0.7, 2.8  # between boxes, between the points of long edges, between layers
_SWEEPS = 4
_MAX_DUMMIES = 100_000  # long edges beyond this many layer crossings in all are drawn straight


@dataclass
class _Box:
    kind: str  # dpu, cpu, input, output; "" for a point a long edge passes through
    lines: list[str] = field(default_factory=list)
    order: float = 0.0  # where its first op comes in nndct's order
    width: float = 0.0
    height: float = 0.0
    layer: int = 0
    x: float = 0.0
    top: float = 0.0


def preload() -> None:
    """Import what drawing needs (matplotlib, its Agg canvas, its fonts): `hostctl inspect` runs this in a thread
    while the payload inspects, so that the picture costs only its drawing afterwards."""
    import matplotlib  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401
    from matplotlib.font_manager import fontManager

    fontManager.findfont("DejaVu Sans Mono")


def write_pictures(report: dict[str, Any], directory: Path, stem: str = "inspect_graph") -> list[str]:
    """Draw the graph of an inspect.json and write `<stem>.svg` and `<stem>.png` in directory; their names."""
    import matplotlib

    boxes, edges = _boxes(report)
    chains = _layout(boxes, edges)
    written = []
    # One drawing saved twice. Text stays text in the SVG, whose ids come from a fixed salt and which has no date.
    # Letters keep their exact widths (no hinting), which the boxes are measured by.
    with matplotlib.rc_context({"svg.hashsalt": "hostctl-inspect", "svg.fonttype": "none",
                                "font.family": "DejaVu Sans Mono", "text.hinting": "no_hinting"}):
        figure, font = _figure(report, boxes, chains)
        for ext in ("svg", "png"):
            if ext == "png" and font * DPI / 72 < MIN_LETTER_PX:
                for text in figure.axes[0].texts:  # too small to read: the PNG shows the colours alone
                    text.set_visible(False)
            name = f"{stem}.{ext}"
            partial = directory / f".{name}.partial"
            figure.savefig(partial, format=ext, metadata={"Date": None} if ext == "svg" else {}, facecolor="white")
            os.replace(partial, directory / name)
            written.append(name)
    return written


# --- boxes -------------------------------------------------------------------------------------------------------

def _boxes(report: dict[str, Any]) -> tuple[list[_Box], list[tuple[int, int]]]:
    """The boxes in nndct's order (inputs, ops or collapsed subgraphs, outputs) and the edges between them."""
    nodes = report["nodes"]
    index = {n["name"]: i for i, n in enumerate(nodes)}
    parents = [[index[p] for p in n.get("inputs") or () if p in index] for n in nodes]
    device = ["cpu" if n.get("device") == "cpu" else "dpu" for n in nodes]
    group = _components(parents, device)
    collapse = _collapsed(nodes)
    members: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        if n["op"] != "nndct_input" and collapse[device[i]]:
            members.setdefault(group[i], []).append(i)
    for g in [g for g, ms in members.items() if len(ms) == 1 and device[ms[0]] == "cpu"]:
        del members[g]  # a CPU op alone says more as itself: its module and nndct's reason
    number = {g: k for d in ("dpu", "cpu") for k, g in enumerate(sorted({group[i] for i in range(len(nodes))
                                                                          if device[i] == d}), 1)}
    boxes: list[_Box] = []
    box_of: list[int] = []
    group_box: dict[int, int] = {}
    for i, n in enumerate(nodes):
        g = group[i]
        if g in members and n["op"] != "nndct_input":
            if g not in group_box:
                group_box[g] = len(boxes)
                boxes.append(_group_box(device[i], number[g], [nodes[m]["op"] for m in members[g]], i))
            box_of.append(group_box[g])
        else:
            box_of.append(len(boxes))
            boxes.append(_op_box(n, device[i], i))
    edges = {(box_of[p], box_of[i]) for i in range(len(nodes)) for p in parents[i] if box_of[p] != box_of[i]}
    has_child = {p for ps in parents for p in ps}
    sinks = [i for i in range(len(nodes)) if i not in has_child and nodes[i]["op"] != "nndct_input"]
    for k, i in enumerate(sinks, 1):
        edges.add((box_of[i], len(boxes)))
        boxes.append(_Box("output", [f"output {k}" if len(sinks) > 1 else "output", _shape(nodes[i])], i + 0.5))
    # numbered in nndct's order, so that an edge to a smaller number is one going back up
    rank = sorted(range(len(boxes)), key=lambda b: boxes[b].order)
    renumber = {b: k for k, b in enumerate(rank)}
    boxes[:] = [boxes[b] for b in rank]
    for box in boxes:
        box.width = max(len(line) for line in box.lines) * _CHAR + 2 * _PAD
        box.height = len(box.lines) * _LINE + 2 * _PAD
    return boxes, sorted((renumber[a], renumber[b]) for a, b in edges)


def _collapsed(nodes: list[dict[str, Any]]) -> dict[str, bool]:
    """Per device, whether its connected ops are drawn as one box."""
    big = len(nodes) > BIG_GRAPH
    return {"dpu": big, "cpu": big and sum(n.get("device") == "cpu" for n in nodes) > MANY_CPU_OPS}


def _components(parents: list[list[int]], device: list[str]) -> list[int]:
    """Each node's connected run of nodes on its device (its first node's index): nndct's subgraphs."""
    root = list(range(len(parents)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for i, ps in enumerate(parents):
        for p in ps:
            if device[p] == device[i]:
                a, b = find(p), find(i)
                root[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(parents))]


def _op_box(node: dict[str, Any], device: str, i: int) -> _Box:
    if node["op"] == "nndct_input":
        return _Box("input", ["input", _shape(node)], i)
    lines = [op_kind(node["op"]), _short_path(node["name"])]
    if device == "cpu":
        if inserted_permute(node["name"]):
            lines[1] = "layout permute nndct adds"
        lines += _wrap(node.get("constraint") or "", 34, 2)
    return _Box(device, lines, i)


def _group_box(device: str, number: int, ops: list[str], i: int) -> _Box:
    kinds = sorted(Counter(op_kind(op) for op in ops).items(), key=lambda kc: (-kc[1], kc[0]))
    title = f"{device.upper()} subgraph {number}: {len(ops)} op{'s' if len(ops) != 1 else ''}"
    return _Box(device, [title, *_wrap(", ".join(f"{k} x{c}" for k, c in kinds), 44, 3)], i)


def _short_path(name: str) -> str:
    """`Net::Net/Sequential[enc]/ModuleList[1]/Conv2d[0]/ret.3` -> `enc.1.0`: the module that made the op, by the
    name `model.named_modules()` gives it (the top module's class for an op of its own forward)."""
    scopes = name.split("::", 1)[-1].split("/")
    path = ".".join(s[s.index("[") + 1:-1] for s in scopes[1:-1] if s.endswith("]") and "[" in s) or scopes[0]
    return path if len(path) <= 34 else "…" + path[-33:]


def _shape(node: dict[str, Any]) -> str:
    shapes = node.get("shape") or []
    return "x".join(str(d) for d in shapes[0]) if shapes and shapes[0] else ""


def _wrap(text: str, width: int, lines: int) -> list[str]:
    """text in at most `lines` lines of `width` letters, an ellipsis where it is cut."""
    wrapped = textwrap.wrap(" ".join(text.replace("nndct_", "").split()), width) or []
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:width - 1] + "…"
    return wrapped


# --- layout ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Chain:
    boxes: list[int]  # from the upper box down to the lower one, through the points of the layers between
    back: bool  # the data flows up: out of a box drawn below, back into a subgraph drawn above


def _layout(boxes: list[_Box], edges: list[tuple[int, int]]) -> list[_Chain]:
    """Place the boxes (layer, x, top), adding to `boxes` the points long edges pass through (kind ""); the
    edges as chains of boxes. Edges going back up are laid out as if they went down."""
    n = len(boxes)
    links = sorted({(min(a, b), max(a, b), a > b) for a, b in edges})
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for a, b in sorted({(a, b) for a, b, _ in links}):
        preds[b].append(a)
        succs[a].append(b)
    for v in range(n):  # every edge now goes to a larger number, so one pass gives the longest paths
        boxes[v].layer = max((boxes[u].layer + 1 for u in preds[v]), default=0)
    for v in reversed(range(n)):  # a source other than an input sits right above its first consumer
        if not preds[v] and succs[v] and boxes[v].kind != "input":
            boxes[v].layer = min(boxes[s].layer for s in succs[v]) - 1

    up: list[list[int]] = [[] for _ in range(n)]
    down: list[list[int]] = [[] for _ in range(n)]
    budget = _MAX_DUMMIES
    chains = []
    for a, b, back in links:
        path = [a]
        span = boxes[b].layer - boxes[a].layer - 1
        if 0 < span <= budget:
            budget -= span
            for layer in range(boxes[a].layer + 1, boxes[b].layer):
                path.append(len(boxes))
                boxes.append(_Box("", order=boxes[a].order + 0.25, layer=layer))
                up.append([])
                down.append([])
        path.append(b)
        chains.append(_Chain(path, back))
        for u, v in pairwise(path):
            down[u].append(v)
            up[v].append(u)

    rows: list[list[int]] = [[] for _ in range(max((b.layer for b in boxes), default=0) + 1)]
    for v in sorted(range(len(boxes)), key=lambda v: boxes[v].order):
        rows[boxes[v].layer].append(v)
    pos = [0.0] * len(boxes)
    for row in rows:
        for i, v in enumerate(row):
            pos[v] = i
    both = [u + d for u, d in zip(up, down, strict=True)]
    weight = [len(set(u)) + len(set(d)) + (0.5 if box.kind else 0.0) for u, d, box in zip(up, down, boxes, strict=True)]
    for _ in range(_SWEEPS):  # barycenter: each row sorted by the mean place of its neighbours in the last row
        for layers, nbrs, other in ((range(1, len(rows)), up, down), (range(len(rows) - 2, -1, -1), down, up)):
            for layer in layers:
                row = rows[layer]
                # a box with no neighbour on that side goes by those on the other: a box the main path passes
                # by stays beside it
                key = {v: sum(pos[u] for u in nbrs[v] or other[v]) / len(nbrs[v] or other[v])
                       if nbrs[v] or other[v] else pos[v] for v in row}
                row.sort(key=key.__getitem__)
                _heavy_in_the_middle(row, key, weight)
                for i, v in enumerate(row):
                    pos[v] = i

    for row in rows:
        _pack(boxes, row, [0.0] * len(row), weight)
    for nbrs in (up, down, up, down, both):  # x: each box towards the mean x of its neighbours, apart enough
        for row in (rows if nbrs is not down else rows[::-1]):
            _pack(boxes, row, [sum(boxes[u].x for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else boxes[v].x
                               for v in row], weight)
    top = 0.0
    for row in rows:
        height = max((boxes[v].height for v in row), default=0.0) or _LINE
        for v in row:
            boxes[v].top = top + (height - boxes[v].height) / 2
            if not boxes[v].kind:
                boxes[v].height = height  # a long edge runs straight through the whole layer
                boxes[v].top = top
        top += height + _GAP_Y
    return chains


def _heavy_in_the_middle(row: list[int], key: dict[int, float], weight: list[float]) -> None:
    """Boxes with the same barycenter (the children of one box, say) in organ-pipe order, the one with the most
    edges in the middle: the main path runs straight down and the boxes it passes by hang on either side."""
    out: list[int] = []
    i = 0
    while i < len(row):
        j = i + 1
        while j < len(row) and key[row[j]] == key[row[i]]:
            j += 1
        run = sorted(row[i:j], key=lambda v: -weight[v])  # stable: nndct's order among equals
        out += run[1::2][::-1] + run[0::2]
        i = j
    row[:] = out


def _pack(boxes: list[_Box], row: list[int], wanted: list[float], weight: list[float]) -> None:
    """x as close to `wanted` as the row's order and the gaps allow. The box with the most edges has its way (a
    box on the main path, rather than one the path passes by, or a long edge's point), and the boxes on either
    side of it are pushed away from it only as far as the gaps need."""
    if not row:
        return
    gaps = [(boxes[u].width + boxes[v].width) / 2 + (_GAP_X if boxes[u].kind and boxes[v].kind else _GAP_DUMMY)
            for u, v in pairwise(row)]
    first = max(range(len(row)), key=lambda i: weight[row[i]])
    x = list(wanted)
    for i in range(first + 1, len(row)):
        x[i] = max(wanted[i], x[i - 1] + gaps[i - 1])
    for i in range(first - 1, -1, -1):
        x[i] = min(wanted[i], x[i + 1] - gaps[i])
    for v, xv in zip(row, x, strict=True):
        boxes[v].x = xv


# --- drawing -----------------------------------------------------------------------------------------------------

_MARGIN = 1.5  # ems around everything
_TITLE = 1.4  # the title's letters, in ems
_ARROW = 0.7  # an arrowhead's length, in ems


def _figure(report: dict[str, Any], boxes: list[_Box], chains: list[_Chain]) -> tuple[Any, float]:
    """The drawing, on an Agg canvas, and its em in points (the unit of its axes; shrunk to fit MAX_PIXELS)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PatchCollection, PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch
    from matplotlib.path import Path as MPath

    title, subtitle = _title(report)
    legend = list(LEGEND) + ([("back", "data back up into a subgraph")] if any(c.back for c in chains) else [])
    legend_x = [_MARGIN + sum(3.0 + len(label) * _CHAR for _, label in legend[:i]) for i in range(len(legend) + 1)]
    legend_y = _MARGIN + (_TITLE + 1) * _LINE + 0.3
    header = legend_y + _LINE + 2.5
    left = min((b.x - b.width / 2 for b in boxes), default=0.0)
    right = max((b.x + b.width / 2 for b in boxes), default=0.0)
    width = max(right - left + _MARGIN, _TITLE * len(title) * _CHAR, len(subtitle) * _CHAR, legend_x[-1]) + _MARGIN
    for b in boxes:  # the graph centred below the header
        b.x += (width - right - left) / 2
        b.top += header
    height = max((b.top + b.height for b in boxes), default=header) + _MARGIN
    font = min(FONT_PT, MAX_PIXELS * 72 / DPI / max(width, height))  # points per em, so that the PNG fits
    line = 0.09 * font  # points

    figure = Figure(figsize=(width * font / 72, height * font / 72), dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()

    shown = [b for b in boxes if b.kind]
    swatches = [_Box(kind, x=x + 1.0, top=legend_y, width=2.0, height=_LINE)
                for (kind, _), x in zip(legend, legend_x, strict=False) if kind in COLOURS]
    rects = PatchCollection(
        [FancyBboxPatch((b.x - b.width / 2, b.top), b.width, b.height, boxstyle="round,pad=0,rounding_size=0.4")
         for b in shown + swatches],
        facecolors=[COLOURS[b.kind][0] for b in shown + swatches],
        edgecolors=[COLOURS[b.kind][1] for b in shown + swatches],
        linewidths=[line * (2.2 if b.kind == "cpu" else 1.0) for b in shown + swatches], zorder=3)

    lines: dict[bool, list[Any]] = {False: [], True: []}  # back or not -> paths
    heads: dict[bool, list[Any]] = {False: [], True: []}
    for chain, (start, end) in zip(chains, _ports(boxes, chains), strict=True):
        verts, head = _edge(boxes, chain, start, end)
        codes = [MPath.MOVETO] + [MPath.CURVE4 if (i - 1) % 4 < 3 else MPath.LINETO for i in range(1, len(verts))]
        lines[chain.back].append(PathPatch(MPath(verts, codes)))
        heads[chain.back].append(head)
    if len(legend) > len(LEGEND):
        x, y = legend_x[-2], legend_y + _LINE / 2
        lines[True].append(PathPatch(MPath([(x, y), (x + 2.0 - _ARROW, y)])))
        heads[True].append([(x + 2.0 - _ARROW, y - _ARROW / 2), (x + 2.0 - _ARROW, y + _ARROW / 2), (x + 2.0, y)])

    for back, colour, style in ((False, EDGE_COLOUR, "solid"), (True, BACK_COLOUR, (0, (4, 3)))):
        ax.add_collection(PatchCollection(lines[back], facecolors="none", edgecolors=colour,
                                          linewidths=line * (1.3 if back else 1.0), linestyles=style, zorder=1))
        ax.add_collection(PolyCollection(heads[back], facecolors=colour, edgecolors="none", zorder=2))
    ax.add_collection(rects)
    text = {"parse_math": False, "fontsize": font, "linespacing": _LINE, "zorder": 4}
    for b in shown:
        ax.text(b.x, b.top + _PAD, b.lines[0], ha="center", va="top", fontweight="bold", **text)
        if len(b.lines) > 1:
            ax.text(b.x, b.top + _PAD + _LINE, "\n".join(b.lines[1:]), ha="center", va="top", **text)
    ax.text(_MARGIN, _MARGIN, title, ha="left", va="top", fontweight="bold",
            **{**text, "fontsize": _TITLE * font})
    ax.text(_MARGIN, _MARGIN + _TITLE * _LINE, subtitle, ha="left", va="top", color="#444444", **text)
    for (_, label), x in zip(legend, legend_x, strict=False):
        ax.text(x + 2.5, legend_y + _LINE / 2, label, ha="left", va="center", **text)
    return figure, font


def _title(report: dict[str, Any]) -> tuple[str, str]:
    """`Net on DPUCZDX8G_ISA1_B4096: 2 ops on the CPU, 3 DPU subgraphs` (the permutes nndct inserts counted apart,
    as the verdict line counts them), and a line on what is drawn."""
    target, nodes, summary = report.get("target") or {}, report["nodes"], report.get("summary") or {}
    model = nodes[0]["name"].split("::", 1)[0] if nodes else "model"
    inserted = sum(1 for name in summary.get("cpu_ops", []) if inserted_permute(name))
    cpu, dpu = len(summary.get("cpu_ops", [])) - inserted, summary.get("dpu_subgraphs", 0)
    verdict = f"{cpu} op{'s' * (cpu != 1)} on the CPU" + (
        f" (and {inserted} layout permute{'s' * (inserted != 1)} nndct inserts)" if inserted else "")
    verdict += f", {dpu} DPU subgraph{'s' * (dpu != 1)}"
    collapsed = _collapsed(nodes)
    drawn = f"{len(nodes)} nodes" + (", each DPU subgraph drawn as one box" if collapsed["dpu"] else "") + (
        ", connected CPU ops too" if collapsed["cpu"] else "")
    if {"type", "isa_version", "fingerprint"} <= target.keys():
        drawn += f"; {target['type']} ISA {target['isa_version']}, fingerprint {target['fingerprint']}"
    return f"{model} on {target.get('name', 'the DPU')}: {verdict}", drawn


def _ports(boxes: list[_Box], chains: list[_Chain]) -> list[tuple[float, float]]:
    """Where each edge leaves its upper box and enters its lower one: spread along the box's side in the order of
    where the edges go, so that a box's edges do not cross at its border."""
    ends: dict[tuple[int, int], list[tuple[float, int]]] = {}  # (box, 0 bottom | 1 top) -> [(x it heads to, chain)]
    for k, chain in enumerate(chains):
        ends.setdefault((chain.boxes[0], 0), []).append((boxes[chain.boxes[1]].x, k))
        ends.setdefault((chain.boxes[-1], 1), []).append((boxes[chain.boxes[-2]].x, k))
    found = [[0.0, 0.0] for _ in chains]
    for (v, side), items in ends.items():
        for i, (_, k) in enumerate(sorted(items)):
            found[k][side] = boxes[v].x + ((i + 1) / (len(items) + 1) - 0.5) * boxes[v].width * 0.7
    return [(a, b) for a, b in found]


def _edge(boxes: list[_Box], chain: _Chain, start: float, end: float) -> tuple[list[Any], list[Any]]:
    """The curve of an edge (vertices: a Bezier curve across each gap between layers, a straight line through
    each layer it crosses) and its arrowhead, at the lower end or, for data going back up, at the upper end."""
    upper, lower = boxes[chain.boxes[0]], boxes[chain.boxes[-1]]
    y0 = upper.top + upper.height + (_ARROW if chain.back else 0.0)
    y1 = lower.top - (0.0 if chain.back else _ARROW)
    points = [(start, y0)]
    for v in chain.boxes[1:-1]:
        points += [(boxes[v].x, boxes[v].top), (boxes[v].x, boxes[v].top + boxes[v].height)]
    points.append((end, y1))
    verts = [points[0]]
    for (xa, ya), (xb, yb) in zip(points[0::2], points[1::2], strict=True):
        if len(verts) > 1:
            verts.append((xa, ya))  # the straight line through a layer
        verts += [(xa, (ya + yb) / 2), (xb, (ya + yb) / 2), (xb, yb)]
    a = _ARROW / 2
    if chain.back:
        tip = upper.top + upper.height
        return verts, [(start - a, tip + _ARROW), (start + a, tip + _ARROW), (start, tip)]
    return verts, [(end - a, y1), (end + a, y1), (end, lower.top)]
