"""The timeline of a request: one bar per node run, drawn server-side as SVG.

Bars go from a run's start to its end, relative to the request's creation; a thin line before
a bar is the hand-off gap (the latest predecessor's end to this run's start: the queue and the
invocation between two functions, a cost particular to composing FaaS functions). Runs after
the 200th are summarised, so a wide foreach cannot freeze the page.
"""

from __future__ import annotations

import html

from faasflow_tower.plan import Plan
from faasflow_tower.states import NodeRun

__all__ = ["MAX_ROWS", "gantt_svg"]

MAX_ROWS = 200
_STATUS_CLASS = {"success": "st-succeeded"}


def _ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def gantt_svg(plan: Plan, runs: list[NodeRun], created: float, ended: float | None,
              now: float) -> str:
    if not runs:
        return '<p class="muted">No node has finished yet.</p>'
    labels = {v.key: v.label for v in plan.vertices}
    preds = plan.predecessors()
    shown = runs[:MAX_ROWS]
    origin = min(created, *(r.start for r in shown))
    finish = max(ended or 0.0, *(r.end for r in shown))
    if not ended:
        finish = max(finish, now)
    span = max(finish - origin, 1e-6)
    name_w, chart_w, row_h, top = 190, 700, 20, 24
    height = top + row_h * len(shown) + 8

    def x(t: float) -> float:
        return name_w + (t - origin) / span * chart_w

    ends_by_node: dict[str, list[NodeRun]] = {}
    for run in runs:
        ends_by_node.setdefault(run.node, []).append(run)
    out = [f'<svg class="gantt" role="img" aria-label="timeline of node runs" '
           f'viewBox="0 0 {name_w + chart_w + 10} {height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        t = span * i / 4
        tx = name_w + chart_w * i / 4
        out.append(f'<line class="tick" x1="{tx:.1f}" y1="14" x2="{tx:.1f}" y2="{height}"/>'
                   f'<text class="axis" x="{tx:.1f}" y="10" text-anchor="middle">'
                   f"{html.escape(_ms(t))}</text>")
    for row, run in enumerate(shown):
        y = top + row * row_h
        name = labels.get(run.node, run.node)
        if run.branch is not None:
            name = f"{name} [{run.branch}]"
        label = name if len(name) <= 26 else name[:25] + "…"
        out.append(f'<g class="run" data-key="{html.escape(run.key)}">'
                   f"<title>{html.escape(name)}: {html.escape(_ms(run.end - run.start))}, "
                   f"{run.attempts} attempt(s), {html.escape(run.status)}</title>"
                   f'<text x="4" y="{y + 14}">{html.escape(label)}</text>')
        before = [p.end for k in preds.get(run.node, ()) for p in ends_by_node.get(k, ())
                  if p.end <= run.start and (p.branch in (None, run.branch))]
        if before:
            gap_from = max(before)
            out.append(f'<line class="handoff" x1="{x(gap_from):.1f}" y1="{y + 10}" '
                       f'x2="{x(run.start):.1f}" y2="{y + 10}"><title>hand-off '
                       f"{html.escape(_ms(run.start - gap_from))}</title></line>")
        width = max(x(run.end) - x(run.start), 2.0)
        cls = _STATUS_CLASS.get(run.status, "st-failed")
        out.append(f'<rect class="bar {cls}" x="{x(run.start):.1f}" y="{y + 3}" '
                   f'width="{width:.1f}" height="{row_h - 6}" rx="2"/>')
        if run.attempts > 1:
            out.append(f'<text class="attempts" x="{x(run.end) + 4:.1f}" y="{y + 14}">'
                       f"x{run.attempts}</text>")
        out.append("</g>")
    out.append("</svg>")
    if len(runs) > MAX_ROWS:
        out.append(f'<p class="muted">{len(runs) - MAX_ROWS} more runs not drawn.</p>')
    return "".join(out)
