"""The HTML of one flow (its picture, execute form, recent requests) and of one request (the
live part that htmx polls while the request runs, and the page around it)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from faasflow_tower.gantt import gantt_svg
from faasflow_tower.graph import colour
from faasflow_tower.logs import RequestLogs, logs_section, logs_table, per_node
from faasflow_tower.pages import (
    Page,
    badge,
    esc,
    fmt_duration,
    fmt_time,
    layout,
    now,
    q,
    requests_table,
)
from faasflow_tower.plan import Plan
from faasflow_tower.states import STATES, NodeState, runs_of

__all__ = ["execute_result", "flow_page", "live_fragment", "logs_page", "request_page"]

ACTIVE = ("running", "paused")


def legend() -> str:
    return '<div class="legend" aria-label="node states">' + "".join(
        badge("running-node" if s == "running" else s) for s in STATES) + "</div>"


# -- flow ---------------------------------------------------------------------------------------

def execute_form(page: Page, flow: str) -> str:
    if page.read_only:
        return ""
    action = page.url(f"/flows/{q(flow)}/execute")
    return (f'<form id="execute" method="post" action="{action}" hx-post="{action}" '
            'hx-target="#execute-result" hx-swap="innerHTML">'
            f"{page.csrf_field()}"
            '<label for="x-body">body</label><textarea id="x-body" name="body" rows="4">'
            "</textarea>"
            '<label for="x-ctype">content type</label><input id="x-ctype" name="content_type" '
            'value="text/plain" size="30">'
            '<label for="x-headers">headers (one <code>Name: value</code> a line)</label>'
            '<textarea id="x-headers" name="headers" rows="2"></textarea>'
            '<p><button class="primary" type="submit" id="execute-button">Execute</button></p>'
            '</form><div id="execute-result" aria-live="polite"></div>')


def execute_result(page: Page, flow: str, status: int, request_id: str | None,
                   body: bytes) -> str:
    link = ""
    if request_id:
        link = (f'<p>request <a id="execute-link" class="mono" '
                f'href="{page.url(f"/flows/{q(flow)}/requests/{q(request_id)}")}">'
                f"{esc(request_id)}</a></p>")
    text = body[:4096].decode("utf-8", "replace")
    answer = f"<pre>{esc(text)}</pre>" if text else ""
    cls = "ok" if status < 400 else "error"
    return f'<div class="flash {cls}" role="status">answered {status}{link}{answer}</div>'


def flow_page(page: Page, flow: str, fn: Mapping[str, Any], plan: Plan, svg: str,
              recent: Sequence[Mapping[str, Any]]) -> str:
    desc = (fn.get("annotations") or {}).get("faas-flow-desc") or ""
    invalid = "" if plan.valid else \
        f'<p class="flash error" role="alert">invalid definition: {esc(plan.error)}</p>'
    ops = "".join(f"<tr><td>{esc(v.label)}</td><td class=\"mono\">{esc(v.key)}</td>"
                  f"<td>{esc(v.kind)}</td><td>{esc(v.detail)}</td></tr>" for v in plan.vertices)
    body = (f"<h1>{esc(flow)}</h1><p>{esc(desc)}</p>{invalid}"
            f'<p class="muted">definition hash <code id="definition-hash">'
            f"{esc(plan.definition_hash)}</code> · replicas {esc(fn.get('replicas', ''))}</p>"
            f'<div class="grid2"><section aria-label="DAG"><div class="panel" id="dag">{svg}'
            "</div><h2>Nodes</h2><table><thead><tr><th>node</th><th>unique id</th><th>kind</th>"
            f"<th>does</th></tr></thead><tbody>{ops}</tbody></table></section>"
            f'<section aria-label="execute"><h2>Execute</h2>{execute_form(page, flow)}</section>'
            f"</div><h2>Recent requests</h2>{requests_table(page, flow, recent, False)}"
            f'<p><a href="{page.url(f"/flows/{q(flow)}/requests")}">All requests →</a></p>')
    return layout(page, flow, body, [(f"/flows/{q(flow)}", flow)])


# -- request ------------------------------------------------------------------------------------

def _controls(page: Page, flow: str, rid: str, status: str, extra: Sequence[str]) -> str:
    base = f"/flows/{q(flow)}/requests/{q(rid)}"
    buttons = [
        page.post_button(f"{base}/pause", "Pause", enabled=status == "running", name="pause"),
        page.post_button(f"{base}/resume", "Resume", enabled=status == "paused", name="resume"),
        page.post_button(f"{base}/stop", "Stop", enabled=status in ACTIVE, name="stop",
                         confirm=f"Stop request {rid}?"),
    ]
    for action in extra:  # only routes the flow serves (checked, never stubbed)
        buttons.append(page.post_button(f"{base}/{action}", action.capitalize(),
                                        enabled=status == "failure", name=action))
    return f'<div class="actions" id="controls">{"".join(buttons)}</div>'


def _node_table(page: Page, flow: str, rid: str, plan: Plan,
                states: Mapping[str, NodeState], logs: RequestLogs) -> str:
    counts = per_node(logs)
    base = page.url(f"/flows/{q(flow)}/requests/{q(rid)}/logs")
    rows = []
    for v in plan.vertices:
        st = states.get(v.key) or NodeState("pending")
        shown = "running-node" if st.state == "running" else st.state
        count = ""
        if plan.in_foreach(v.key) and st.runs:
            count = f"{st.ok} ok" + (f", {st.failed} failed" if st.failed else "")
        attempts = max((r.attempts for r in st.runs), default=0)
        took = sum(r.end - r.start for r in st.runs) if st.runs else None
        errors = "".join(f"<pre class=\"node-error\">{esc(r.error)}</pre>"
                         for r in st.runs if r.error)
        rows.append(f'<tr class="node-row" data-node="{esc(v.key)}" data-state="{esc(st.state)}">'
                    f"<td>{esc(v.label)}</td><td>{badge(shown)} {esc(count)}</td>"
                    f"<td>{attempts or ''}</td><td class=\"nowrap\">{fmt_duration(took)}</td>"
                    f"<td>{errors}</td><td>{_log_cell(base, v.label, v.functions, counts)}</td>"
                    "</tr>")
    return ('<table id="nodes"><thead><tr><th>node</th><th>state</th><th>attempts</th>'
            "<th>time</th><th>error</th><th>log lines</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _log_cell(base: str, label: str, functions: Sequence[str], counts: Mapping[str, int]
              ) -> str:
    if not functions:  # the flow's own code: its lines carry no node
        return '<span class="muted" title="per-node attribution is not available">—</span>'
    count = counts.get(label, 0)
    if not count:
        return "0"
    return f'<a class="node-logs" href="{base}?node={q(label)}">{count}</a>'


def _output(record: Mapping[str, Any]) -> str:
    out = record.get("output")
    if out is None:
        return ""
    text = str(out)
    if record.get("output_encoding") != "base64":
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    kind = "base64" if record.get("output_encoding") == "base64" else "text"
    return (f'<h2>Output <span class="muted">({kind})</span></h2>'
            f'<pre id="output" class="panel">{esc(text[:16384])}</pre>')


def _payloads(plan: Plan, record: Mapping[str, Any]) -> str:
    """The captured request input and each node's input and output, when the flow captured
    any (FAASFLOW_CAPTURE); with ``errors`` only the failed node's input is there."""
    captured = record.get("payloads")
    if not isinstance(captured, Mapping):
        return ""
    labels = {v.key: v.label for v in plan.vertices}
    rows = []
    request = captured.get("request")
    if isinstance(request, Mapping):
        rows.append(("request", "", "input", request))
    nodes = captured.get("nodes") or {}
    order = {key: n for n, key in enumerate(plan.keys)}
    for eid in sorted(nodes, key=lambda k: (order.get(str(k).split("/")[0], len(order)), k)):
        doc = nodes[eid]
        for side in ("input", "output"):
            if isinstance(doc, Mapping) and isinstance(doc.get(side), Mapping):
                label = labels.get(str(eid), labels.get(str(eid).split("/")[0], ""))
                rows.append((label, str(eid), side, doc[side]))
    if not rows:
        return ""
    cells = "".join(
        f'<tr class="payload" data-node="{esc(eid)}" data-side="{side}"><td>{esc(who)} '
        f'<span class="muted mono">{esc(eid)}</span></td><td>{side}</td>'
        f"<td>{esc(str(p.get('size')))}{' (cut)' if p.get('truncated') else ''}"
        f"{' base64' if p.get('encoding') == 'base64' else ''}</td>"
        f"<td><pre>{esc(str(p.get('data', ''))[:4096])}</pre></td></tr>"
        for who, eid, side, p in rows)
    mode = esc(str(captured.get("capture") or ""))
    return (f'<h2>Inputs and outputs <span class="muted">(captured: {mode})</span></h2>'
            '<table id="payloads"><thead><tr><th>node</th><th></th><th>bytes</th>'
            f"<th>data</th></tr></thead><tbody>{cells}</tbody></table>")


def live_fragment(page: Page, flow: str, record: Mapping[str, Any], plan: Plan, svg: str,
                  states: Mapping[str, NodeState], extra_actions: Sequence[str],
                  logs: RequestLogs) -> str:
    """The part of the request page that changes; it polls itself only while the request runs."""
    rid = str(record.get("id") or "")
    status = str(record.get("status") or "running")
    created, ended = record.get("created"), record.get("ended")
    poll = ""
    if status in ACTIVE:
        poll = (f' hx-get="{page.url(f"/flows/{q(flow)}/requests/{q(rid)}/live")}" '
                'hx-trigger="every 1s" hx-swap="outerHTML"')
    duration = (ended if isinstance(ended, (int, float)) else now()) - created \
        if isinstance(created, (int, float)) else None
    error = record.get("error")
    banner = (f'<div class="flash error" role="alert" id="request-error"><strong>failed'
              f"</strong><pre>{esc(error)}</pre></div>") if error else ""
    coloured = colour(svg, plan, dict(states))
    runs = runs_of(record)
    timeline = gantt_svg(plan, runs, float(created or 0.0), ended if isinstance(
        ended, (int, float)) else None, now())
    note = ' <span class="muted">(a running node may still be queued)</span>' \
        if status == "running" else ""
    return (f'<div id="live" data-status="{esc(status)}"{poll}>'
            f'<p>status <span id="request-status">{badge(status)}</span>{note} · created '
            f"{fmt_time(created)} · ended {fmt_time(ended)} · duration "
            f"{fmt_duration(duration)}</p>{banner}"
            f"{_controls(page, flow, rid, status, extra_actions)}"
            f'<div class="panel" id="dag">{coloured}</div>{legend()}'
            f'<h2>Timeline</h2><div class="panel" id="timeline">{timeline}</div>'
            f"<h2>Nodes</h2>{_node_table(page, flow, rid, plan, states, logs)}"
            f"{_output(record)}{_payloads(plan, record)}"
            f"{logs_section(page.base, flow, rid, logs)}</div>")


def request_page(page: Page, flow: str, rid: str, fragment: str, flash: str = "") -> str:
    body = (f'<h1>Request <span class="mono">{esc(rid)}</span></h1>'
            f'<p class="muted">flow <a href="{page.url(f"/flows/{q(flow)}")}">{esc(flow)}</a>'
            f" · deep link to this page: copy the address bar</p>{flash}{fragment}")
    return layout(page, f"Request {rid}", body, [
        (f"/flows/{q(flow)}", flow), (f"/flows/{q(flow)}/requests", "requests"),
        (f"/flows/{q(flow)}/requests/{q(rid)}", rid)])


def logs_page(page: Page, flow: str, rid: str, logs: RequestLogs, node: str) -> str:
    # only the lines laid at this node alone, as its count on the request page
    lines = [line for line in logs.lines if not node or line.nodes == (node,)]
    what = f" of node {esc(node)}" if node else ""
    back = page.url(f"/flows/{q(flow)}/requests/{q(rid)}")
    body = (f'<h1>Logs{what} of request <span class="mono">{esc(rid)}</span></h1>'
            f'<p class="muted">{len(lines)} line(s) from the logs the gateway keeps of '
            f"{esc(', '.join(logs.functions))} · <a href=\"{back}\">back to the request</a></p>"
            f"{logs_table(lines)}")
    return layout(page, f"Logs of {rid}", body, [
        (f"/flows/{q(flow)}", flow), (f"/flows/{q(flow)}/requests", "requests"),
        (f"/flows/{q(flow)}/requests/{q(rid)}", rid),
        (f"/flows/{q(flow)}/requests/{q(rid)}/logs", "logs")])
