"""The HTML of each page. Every value that comes from a user, a flow or a record goes through
:func:`esc` (or ``urlencode``/``quote`` for URLs): outputs, errors, node ids, descriptions and
request ids are all user data."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

import attrs

from faasflow.runtime.web import WebResponse
from faasflow_tower.stats import FlowStats

__all__ = ["Page", "esc", "fmt_duration", "fmt_time", "html_response", "layout"]


def html_response(body: str, status: int = 200, *headers: tuple[str, str]) -> WebResponse:
    return WebResponse(status, body.encode(), (("Content-Type", "text/html; charset=utf-8"),
                                            ("Cache-Control", "no-store"), *headers))


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def q(value: str) -> str:
    return quote(value, safe="")


def fmt_time(ts: object) -> str:
    if not isinstance(ts, (int, float)) or ts <= 0:
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def badge(status: object) -> str:
    text = esc(status)
    label = "running or queued" if status == "running-node" else text
    cls = "running" if status == "running-node" else text
    return f'<span class="badge st-{cls}">{label}</span>'


@attrs.frozen
class Page:
    """What every page needs: where the app lives, the CSRF token and the mode."""

    base: str
    """The app's mount path (``SCRIPT_NAME``), without the trailing slash."""
    csrf: str
    read_only: bool = False
    authorization: str | None = None
    """The credentials this page's calls to the gateway's ``/system/*`` carry."""

    def url(self, path: str, params: Iterable[tuple[str, str]] = ()) -> str:
        query = urlencode([(k, v) for k, v in params if v])
        return esc(f"{self.base}{path}" + (f"?{query}" if query else ""))

    def csrf_field(self) -> str:
        return f'<input type="hidden" name="csrf" value="{esc(self.csrf)}">'

    def post_button(self, path: str, label: str, *, enabled: bool = True, confirm: str = "",
                    hidden: Sequence[tuple[str, str]] = (), name: str = "") -> str:
        if self.read_only:
            return ""
        extra = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                        for k, v in hidden)
        attr = f' data-confirm="{esc(confirm)}"' if confirm else ""
        disabled = "" if enabled else " disabled"
        ident = f' name="{esc(name)}"' if name else ""
        return (f'<form class="inline" method="post" action="{self.url(path)}"{attr}>'
                f"{self.csrf_field()}{extra}<button type=\"submit\"{ident}{disabled}>"
                f"{esc(label)}</button></form>")


def layout(page: Page, title: str, body: str, crumbs: Sequence[tuple[str, str]] = ()) -> str:
    trail = "".join(f' / <a href="{page.url(path)}">{esc(label)}</a>' for path, label in crumbs)
    mode = ' <span class="badge">read-only</span>' if page.read_only else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · faasflow tower</title>
<link rel="stylesheet" href="{page.url('/static/tower.css')}">
<script src="{page.url('/static/tower.js')}"></script>
<script defer src="{page.url('/static/htmx.min.js')}"></script>
</head><body>
<header><a class="brand" href="{page.url('/')}">faasflow tower</a>
<nav aria-label="breadcrumb"><a href="{page.url('/')}">Flows</a>{trail}{mode}</nav>
<button id="theme-toggle" type="button" aria-pressed="false" title="switch light / dark theme">
Theme</button></header>
<main id="main">{body}</main></body></html>"""


def error_page(page: Page, status: int, message: str) -> str:
    return layout(page, f"Error {status}", f'<h1>Error {status}</h1>'
                  f'<p class="flash error" role="alert">{esc(message)}</p>'
                  f'<p><a href="{page.url("/")}">Back to the flows</a></p>')


# -- flows --------------------------------------------------------------------------------------

def flows_page(page: Page, flows: Sequence[tuple[Mapping[str, Any], FlowStats | None, str]],
               others: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for fn, stats, problem in flows:
        name = str(fn["name"])
        desc = (fn.get("annotations") or {}).get("faas-flow-desc") or ""
        link = page.url(f"/flows/{q(name)}")
        if stats is None:
            figures = f'<td colspan="4" class="muted">{esc(problem)}</td>'
        else:
            listing = f"/flows/{q(name)}/requests"
            counts = " ".join(
                f'<a class="nowrap" href="{page.url(listing, [("status", s), ("since", "1h")])}">'
                f"{badge(s)} {n}</a>" for s, n in sorted(stats.counts.items())
            ) or '<span class="muted">none</span>'
            rate = "—" if stats.failure_rate is None else f"{stats.failure_rate * 100:.1f} %"
            figures = (f'<td>{counts}</td><td class="nowrap">{fmt_duration(stats.p50)}</td>'
                       f'<td class="nowrap">{fmt_duration(stats.p99)}</td>'
                       f'<td class="nowrap">{rate}</td>')
        rows.append(f'<tr class="flow-row"><td><a href="{link}">{esc(name)}</a></td>'
                    f"<td>{esc(desc)}</td><td>{esc(fn.get('replicas', ''))}</td>{figures}</tr>")
    table = ('<table id="flows"><thead><tr><th>flow</th><th>description</th><th>replicas</th>'
             "<th>requests, last hour</th><th>p50</th><th>p99</th><th>failure rate</th></tr>"
             f"</thead><tbody>{''.join(rows)}</tbody></table>") if rows else \
        '<p class="muted">No flows: the gateway lists no function labelled faas-flow: "1".</p>'
    fns = "".join(
        f"<tr><td>{esc(f['name'])}</td><td>{esc(f.get('envProcess') or f.get('image') or '')}"
        f"</td><td>{esc(f.get('replicas', ''))}</td><td>{esc(f.get('invocationCount', ''))}</td>"
        "</tr>" for f in others)
    functions = (f'<h2>Functions of the stack</h2><table id="functions"><thead><tr><th>function'
                 f"</th><th>runtime</th><th>replicas</th><th>invocations</th></tr></thead>"
                 f"<tbody>{fns}</tbody></table>") if others else ""
    return layout(page, "Flows", f"<h1>Flows</h1>{table}{functions}")


# -- requests -----------------------------------------------------------------------------------

STATUSES = ("running", "paused", "success", "failure", "stopped")


def request_rows(page: Page, flow: str, rows: Sequence[Mapping[str, Any]], select: bool) -> str:
    out = []
    for doc in rows:
        rid = str(doc.get("id") or "")
        created, ended = doc.get("created"), doc.get("ended")
        duration = ended - created if isinstance(ended, (int, float)) and \
            isinstance(created, (int, float)) else None
        error = str(doc.get("error") or "").splitlines()[0:1]
        box = (f'<td><input type="checkbox" name="id" value="{esc(rid)}" form="bulk" '
               f'aria-label="select {esc(rid)}"></td>') if select else ""
        out.append(
            f'<tr class="request-row" data-status="{esc(doc.get("status"))}">{box}'
            f'<td class="mono"><a href="{page.url(f"/flows/{q(flow)}/requests/{q(rid)}")}">'
            f"{esc(rid)}</a></td><td>{badge(doc.get('status'))}</td>"
            f'<td class="nowrap">{fmt_time(created)}</td>'
            f'<td class="nowrap">{fmt_duration(duration)}</td>'
            f"<td>{esc(_failed_node(doc))}</td><td>{esc(error[0][:160] if error else '')}</td></tr>"
        )
    return "".join(out)


def _failed_node(doc: Mapping[str, Any]) -> str:
    for key in ("failed_node", "failed-node", "node"):
        if isinstance(doc.get(key), str):
            return str(doc[key])
    for key, run in (doc.get("nodes") or {}).items():
        if isinstance(run, Mapping) and run.get("status") not in (None, "success"):
            return str(key)
    return ""


def requests_table(page: Page, flow: str, rows: Sequence[Mapping[str, Any]], select: bool) -> str:
    if not rows:
        return '<p class="muted" id="no-requests">No request matches.</p>'
    head = '<th><input type="checkbox" id="select-all" aria-label="select all"></th>' \
        if select else ""
    return (f'<table id="requests"><thead><tr>{head}<th>request</th><th>status</th><th>created'
            "</th><th>duration</th><th>failed at</th><th>error</th></tr></thead><tbody>"
            f"{request_rows(page, flow, rows, select)}</tbody></table>")


def requests_page(page: Page, flow: str, rows: Sequence[Mapping[str, Any]],
                  args: Mapping[str, str], statuses: Sequence[str], next_url: str | None,
                  flash: str = "") -> str:
    options = "".join(
        f'<label><input type="checkbox" name="status" value="{s}"'
        f'{" checked" if s in statuses else ""}> {s}</label>' for s in STATUSES)
    fields = "".join(
        f'<div><label for="f-{k}">{label}</label><input id="f-{k}" name="{k}" '
        f'value="{esc(args.get(k, ""))}" placeholder="{hint}" size="{size}"></div>'
        for k, label, hint, size in (
            ("since", "since", "1h, 24h, ISO time", 12), ("until", "until", "ISO time", 12),
            ("node", "failed at node", "node id", 10), ("q", "search", "id or error text", 18))
    )
    # stopping applies to running and paused requests: no bulk action on a view without them
    select = not page.read_only and (not statuses or bool({"running", "paused"} & set(statuses)))
    bulk = ""
    if select and rows:
        action = page.url(f"/flows/{q(flow)}/requests/stop")
        kept = [("all", "1"), *(("status", s) for s in statuses),
                *((k, args[k]) for k in ("since", "until", "node", "q") if args.get(k))]
        stop_all = page.post_button(
            f"/flows/{q(flow)}/requests/stop", "Stop all matching", hidden=kept,
            confirm="Stop every running or paused request this filter matches (at most "
            "10,000)?", name="stop-all")
        bulk = (f'<div class="actions"><form id="bulk" method="post" action="{action}"'
                ' data-confirm="Stop the selected requests?">'
                f'{page.csrf_field()}<button type="submit" id="bulk-stop">Stop selected</button>'
                f"</form>{stop_all}</div>")
    pager = f'<div class="pager"><a id="next-page" href="{next_url}">Next page →</a></div>' \
        if next_url else ""
    body = (f"<h1>Requests of {esc(flow)}</h1>{flash}"
            f'<form class="filters" method="get" action="{page.url(f"/flows/{q(flow)}/requests")}"'
            f' role="search"><fieldset class="filters"><legend>status</legend>{options}'
            f"</fieldset>{fields}<div><button class=\"primary\" type=\"submit\">Filter</button> "
            f'<a href="{page.url(f"/flows/{q(flow)}/requests")}">clear</a></div></form>'
            f"{bulk}{requests_table(page, flow, rows, select)}{pager}")
    return layout(page, f"Requests of {flow}", body,
                  [(f"/flows/{q(flow)}", flow), (f"/flows/{q(flow)}/requests", "requests")])


def now() -> float:
    return time.time()
