"""The DAG picture: SVG from Graphviz ``dot`` when it is installed, else a layered layout of our
own, cached by definition hash and coloured per request by adding CSS classes.

Each vertex is a ``<g id="n<i>" class="node ffnode">`` holding a ``<title>`` with the node's
unique id, so the page colours a node by its class (``st-running``, ``st-failed`` ...) and the
tests find a node by its title. User text (node ids, function names) goes into DOT as quoted
strings and into our own SVG escaped.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import threading
from collections import OrderedDict

from faasflow_tower.plan import Plan
from faasflow_tower.states import NodeState

__all__ = ["SvgCache", "colour", "layered_svg", "to_dot"]

_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_VIEWBOX = re.compile(r'viewBox="[-\d.]+ [-\d.]+ (?P<w>[\d.]+) [\d.]+"')
_SIZE = re.compile(r'<svg width="[^"]*" height="[^"]*"')


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _ids(plan: Plan) -> dict[str, str]:
    return {v.key: f"n{i}" for i, v in enumerate(plan.vertices)}


def to_dot(plan: Plan) -> str:
    """The plan in Graphviz DOT, left to right, clusters for nested DAGs."""
    ids = _ids(plan)
    lines = ["digraph flow {", "  rankdir=LR; bgcolor=transparent;",
             '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="sans-serif",'
             " fontsize=11];", '  edge [fontname="sans-serif", fontsize=9];']
    children: dict[str | None, list[str]] = {}
    for cluster in plan.clusters:
        children.setdefault(cluster.parent, []).append(cluster.key)
    clusters = {c.key: c for c in plan.clusters}

    def vertices_in(cluster: str | None, depth: int) -> None:
        pad = "  " * depth
        for v in plan.vertices:
            if v.cluster == cluster:
                label = _q(v.label) if not v.detail else _q(v.label)[:-1] + "\\n" + \
                    _q(v.detail)[1:]
                lines.append(f'{pad}{_q(v.key)} [id={_q(ids[v.key])}, class="ffnode", '
                             f"label={label}];")
        for index, key in enumerate(children.get(cluster, [])):
            c = clusters[key]
            lines.append(f"{pad}subgraph {_q('cluster_' + str(index) + '_' + key)} {{")
            lines.append(f'{pad}  label={_q(c.label)}; style="dashed,rounded"; '
                         f'class="ffcluster"; fontname="sans-serif"; fontsize=10;')
            vertices_in(key, depth + 1)
            lines.append(f"{pad}}}")

    vertices_in(None, 1)
    for source, target, label in plan.edges:
        extra = f" [label={_q(label)}]" if label else ""
        lines.append(f"  {_q(source)} -> {_q(target)}{extra};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_svg(dot: str, timeout: float = 10.0) -> str | None:
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    svg = _PROLOG.sub("", done.stdout.decode("utf-8", "replace"), count=1)
    # natural size in CSS pixels (Graphviz writes points), shrunk by the page when too wide
    box = _VIEWBOX.search(svg)
    width = f' width="{float(box["w"]) * 4 / 3:.0f}"' if box else ""
    return _SIZE.sub(f'<svg class="dag" role="img"{width}', svg, count=1)


def layered_svg(plan: Plan) -> str:
    """A plain SVG layout for machines without Graphviz: one column per longest-path layer."""
    ids = _ids(plan)
    preds = plan.predecessors()
    layer: dict[str, int] = {}

    def depth(key: str, seen: frozenset[str] = frozenset()) -> int:
        if key in layer:
            return layer[key]
        if key in seen:
            return 0
        value = max((depth(p, seen | {key}) + 1 for p in preds.get(key, ())), default=0)
        layer[key] = value
        return value

    for key in plan.keys:
        depth(key)
    columns: dict[int, list[str]] = {}
    for key in plan.keys:
        columns.setdefault(layer[key], []).append(key)
    width, height, gap_x, gap_y = 150, 40, 60, 22
    pos: dict[str, tuple[int, int]] = {}
    for col, keys in columns.items():
        for row, key in enumerate(keys):
            pos[key] = (20 + col * (width + gap_x), 20 + row * (height + gap_y))
    total_w = 40 + max((c for c in columns), default=0) * (width + gap_x) + width
    total_h = 40 + max((len(k) for k in columns.values()), default=1) * (height + gap_y)
    labels = {v.key: v for v in plan.vertices}
    parts = [f'<svg class="dag" role="img" width="{total_w}" viewBox="0 0 {total_w} {total_h}" '
             'xmlns="http://www.w3.org/2000/svg">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
             '<path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>']
    for source, target, label in plan.edges:
        if source not in pos or target not in pos:
            continue
        (x1, y1), (x2, y2) = pos[source], pos[target]
        parts.append(f'<g class="edge"><path d="M{x1 + width} {y1 + height // 2} '
                     f'L{x2} {y2 + height // 2}" marker-end="url(#arrow)"/>'
                     + (f'<text x="{(x1 + width + x2) // 2}" y="{(y1 + y2) // 2 + height // 2 - 4}"'
                        f">{html.escape(label)}</text>" if label else "") + "</g>")
    for key, (x, y) in pos.items():
        v = labels[key]
        parts.append(
            f'<g id="{ids[key]}" class="node ffnode"><title>{html.escape(key)}</title>'
            f'<rect x="{x}" y="{y}" width="{width}" height="{height}" rx="6"/>'
            f'<text x="{x + width // 2}" y="{y + 17}" text-anchor="middle">'
            f"{html.escape(v.label)}</text>"
            f'<text x="{x + width // 2}" y="{y + 31}" text-anchor="middle" class="detail">'
            f"{html.escape(v.detail[:28])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


class SvgCache:
    """Rendered plans by definition hash (a changed definition has a new hash)."""

    def __init__(self, size: int = 128, use_dot: bool = True) -> None:
        self.size = size
        self.use_dot = use_dot
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.renders = 0

    def svg(self, plan: Plan) -> str:
        key = plan.definition_hash or to_dot(plan)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        svg = (_dot_svg(to_dot(plan)) if self.use_dot else None) or layered_svg(plan)
        with self._lock:
            self.renders += 1
            self._items[key] = svg
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return svg


def colour(svg: str, plan: Plan, states: dict[str, NodeState]) -> str:
    """The picture with each vertex's state as a CSS class (``st-<state>``)."""
    ids = _ids(plan)
    for key, state in states.items():
        ident = ids.get(key)
        if ident is None:
            continue
        svg = re.sub(rf'(<g id="{ident}" class="node[^"]*)"', rf'\1 st-{state.state}"', svg,
                     count=1)
    return svg
