"""The dashboard's WSGI app: routing, the checks every request passes, and the control actions.

Every page first asks the gateway for ``/system/functions`` with the user's credentials, so the
gateway's basic auth guards the whole dashboard (a 401 from the gateway becomes a 401 asking
the browser for them). Control actions are POSTs carrying a CSRF token that must equal the
``tower_csrf`` cookie (double submit; the cookie is ``SameSite=Strict``), and read-only mode
refuses them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import attrs

from faasflow.runtime.web import BodyError, WebRequest, WebResponse, json_response
from faasflow_tower import detail, logs, pages
from faasflow_tower.client import GatewayClient, GatewayError, Unauthorized
from faasflow_tower.config import READ_ONLY, TowerConfig
from faasflow_tower.graph import SvgCache
from faasflow_tower.plan import Plan
from faasflow_tower.requests_view import (
    MAX_PAGE,
    BadParameter,
    Filter,
    list_requests,
    matching_ids,
)
from faasflow_tower.states import derive
from faasflow_tower.stats import FlowStats, summarise

__all__ = ["TowerApp"]

log = logging.getLogger("faasflow.tower")

COOKIE = "tower_csrf"
_STATIC = {"tower.css": "text/css", "tower.js": "text/javascript",
           "htmx.min.js": "text/javascript"}
_FLOW = r"(?P<flow>[a-z0-9][a-z0-9.-]{0,127})"
_RID = r"(?P<rid>[A-Za-z0-9][A-Za-z0-9._-]{0,127})"
_ACTIONS = "pause|resume|stop|redrive|rerun"
_ROUTES = [
    ("GET", re.compile(r"^/?$"), "flows"),
    ("GET", re.compile(r"^/static/(?P<name>[a-z.]+)$"), "static"),
    ("GET", re.compile(rf"^/flows/{_FLOW}$"), "flow"),
    ("POST", re.compile(rf"^/flows/{_FLOW}/execute$"), "execute"),
    ("GET", re.compile(rf"^/flows/{_FLOW}/requests$"), "requests"),
    ("POST", re.compile(rf"^/flows/{_FLOW}/requests/stop$"), "bulk_stop"),
    ("GET", re.compile(rf"^/flows/{_FLOW}/requests/{_RID}$"), "request"),
    ("GET", re.compile(rf"^/flows/{_FLOW}/requests/{_RID}/live$"), "live"),
    ("GET", re.compile(rf"^/flows/{_FLOW}/requests/{_RID}/logs$"), "request_logs"),
    ("POST", re.compile(rf"^/flows/{_FLOW}/requests/{_RID}/(?P<action>{_ACTIONS})$"), "control"),
]
_HOP = {"host", "content-length", "connection", "transfer-encoding", "authorization", "cookie"}
_DONE = {"pause": "paused", "resume": "resumed", "stop": "stopped", "redrive": "redriven",
         "rerun": "re-run"}
_ROUTE_TTL = 60.0
#: Most requests one bulk action stops.
MAX_BULK = 10_000


_html = pages.html_response


def is_flow(fn: Mapping[str, Any]) -> bool:
    labels = fn.get("labels") or {}
    return str(labels.get("faas-flow", "")) == "1" or fn.get("envProcess") == "faasflow"


class TowerApp:
    """The dashboard, served under any mount path (its WSGI ``SCRIPT_NAME``)."""

    def __init__(self, config: TowerConfig) -> None:
        self.config = config
        self.client = GatewayClient(config.gateway_url, config.hmac_secret)
        self.svgs = SvgCache(use_dot=config.use_dot)
        self._routes: dict[str, tuple[float, tuple[str, ...]]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        base = str(environ.get("SCRIPT_NAME") or self.config.base_path).rstrip("/")
        try:
            request = WebRequest.from_environ(environ, max_body=1024 * 1024)
        except BodyError as exc:
            return _html(f"<p>{pages.esc(exc)}</p>", exc.status).send(start_response)
        token = _cookie(request) or secrets.token_urlsafe(24)
        page = pages.Page(base, token, self.config.read_only)
        try:
            response = self.handle(request, page)
        except Unauthorized:
            response = _html(pages.error_page(page, 401, "The gateway asks for its basic-auth "
                                              "user and password."), 401,
                             ("WWW-Authenticate", 'Basic realm="faasflow tower"'))
        except GatewayError as exc:
            response = _html(pages.error_page(page, exc.status, str(exc)), exc.status)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = _html(pages.error_page(page, 500, "internal error in faasflow-tower; "
                                              "see its log"), 500)
        if _cookie(request) != token:
            response = response.with_headers(("Set-Cookie", f"{COOKIE}={token}; Path="
                                              f"{base or '/'}; HttpOnly; SameSite=Strict"))
        return response.send(start_response)

    # -- routing -------------------------------------------------------------------------------

    def handle(self, request: WebRequest, page: pages.Page) -> WebResponse:
        path = request.path
        if path == "" and request.method == "GET":
            return WebResponse(308, b"", (("Location", f"{page.base}/"),))
        allowed: list[str] = []
        for method, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            if request.method != method and not (method == "GET" and request.method == "HEAD"):
                allowed.append(method)
                continue
            if name == "static":
                return self.static(match["name"])
            auth = self._authorization(request)
            functions = self.client.functions(auth)
            page = attrs.evolve(page, authorization=auth)
            if method == "POST":
                refused = self._refuse_post(request, page)
                if refused is not None:
                    return refused
            args = match.groupdict()
            return getattr(self, name)(request, page, functions, **args)  # type: ignore[no-any-return]
        if allowed:
            return _html(pages.error_page(page, 405, f"use {' or '.join(allowed)} on "
                                          f"{path}"), 405, ("Allow", ", ".join(allowed)))
        return _html(pages.error_page(page, 404, f"no page {path or '/'} in faasflow-tower: "
                                      "start from the flow list"), 404)

    def _authorization(self, request: WebRequest) -> str | None:
        given = request.header("Authorization")
        creds = self.config.credentials
        if creds is None:
            return given
        expected = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized
        return expected

    def _refuse_post(self, request: WebRequest, page: pages.Page) -> WebResponse | None:
        if self.config.read_only:
            return _html(pages.error_page(page, 403, f"faasflow-tower runs read-only "
                                          f"({READ_ONLY}): control actions are off"), 403)
        form = _form(request)
        sent = (form.get("csrf") or [""])[0]
        cookie = _cookie(request)
        if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
            return _html(pages.error_page(page, 403, "missing or wrong CSRF token: reload the "
                                          "page (cookies on) and submit the form again"), 403)
        return None

    def _flow_fn(self, functions: list[dict[str, Any]], flow: str) -> dict[str, Any]:
        for fn in functions:
            if fn["name"] == flow and is_flow(fn):
                return fn
        raise GatewayError(f"no flow {flow!r}: the gateway lists no function of that name "
                           'labelled faas-flow: "1"', 404)

    def _plan(self, flow: str) -> tuple[Plan, str]:
        plan = Plan.from_export(self.client.export(flow))
        return plan, self.svgs.svg(plan)

    # -- pages ---------------------------------------------------------------------------------

    def static(self, name: str) -> WebResponse:
        kind = _STATIC.get(name)
        if kind is None:
            return WebResponse(404, b"no such file\n", (("Content-Type", "text/plain"),))
        data = resources.files("faasflow_tower").joinpath("static").joinpath(name).read_bytes()
        return WebResponse(200, data, (("Content-Type", f"{kind}; charset=utf-8"),
                                    ("Cache-Control", "public, max-age=3600")))

    def flows(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]]
              ) -> WebResponse:
        since = time.time() - 3600

        def figures(fn: dict[str, Any]) -> tuple[dict[str, Any], FlowStats | None, str]:
            try:
                docs, _, _ = self.client.requests(fn["name"], [("since", f"{since:.0f}"),
                                                               ("limit", "1000")])
            except GatewayError as exc:
                return fn, None, str(exc)
            return fn, summarise(docs, since), ""

        flows = [f for f in functions if is_flow(f)]
        # one index query per flow, a few at a time: the page waits for the slowest, not the sum
        with ThreadPoolExecutor(max_workers=min(4, max(1, len(flows)))) as pool:
            rows = list(pool.map(figures, flows))
        others = [f for f in functions if not is_flow(f)]
        return _html(pages.flows_page(page, rows, others))

    def flow(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
             flow: str) -> WebResponse:
        fn = self._flow_fn(functions, flow)
        plan, svg = self._plan(flow)
        docs, _, _ = self.client.requests(flow, [("limit", "10")])
        return _html(detail.flow_page(page, flow, fn, plan, svg, docs[:10]))

    def execute(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
                flow: str) -> WebResponse:
        self._flow_fn(functions, flow)
        form = _form(request)
        headers: dict[str, str] = {}
        for number, line in enumerate((form.get("headers") or [""])[0].splitlines(), 1):
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep or not re.match(r"^[A-Za-z0-9-]+$", name.strip()):
                return _html(pages.error_page(page, 400, f"headers, line {number}: "
                                              f"{line[:80]!r} is not 'Name: value'"), 400)
            if name.strip().lower() not in _HOP:
                headers[name.strip()] = value.strip()
        headers["Content-Type"] = (form.get("content_type") or ["text/plain"])[0] or "text/plain"
        answer = self.client.execute(flow, (form.get("body") or [""])[0].encode(), headers)
        rid = next((v for k, v in answer.headers.items() if k.lower() == "x-faas-flow-reqid"),
                   None)
        fragment = detail.execute_result(page, flow, answer.status, rid, answer.body)
        if request.header("HX-Request"):
            return _html(fragment)
        return _html(pages.layout(page, f"Executed {flow}", f"<h1>Executed {pages.esc(flow)}"
                                  f"</h1>{fragment}", [(f"/flows/{pages.q(flow)}", flow)]))

    def requests(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
                 flow: str) -> WebResponse:
        self._flow_fn(functions, flow)
        return list_requests(self.client, request, page, flow)

    def bulk_stop(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
                  flow: str) -> WebResponse:
        self._flow_fn(functions, flow)
        form = _form(request)
        if form.get("all"):
            # only requests that can still be stopped, whatever else the filter shows
            wanted = [s for s in form.get("status", []) if s in ("running", "paused")]
            form = {**form, "status": wanted or ["running", "paused"], "limit": [str(MAX_PAGE)]}
            try:
                ids = matching_ids(self.client, flow, Filter.parse(form), MAX_BULK)
            except BadParameter as exc:
                return _html(pages.error_page(page, 400, str(exc)), 400)
        else:
            ids = [i for i in form.get("id") or () if re.match(rf"^{_RID}$", i)][:MAX_BULK]
        stopped = failed = 0
        for rid in ids:
            answer = self.client.control(flow, rid, "stop")
            stopped += answer.status < 400
            failed += answer.status >= 400
        target = f"{page.base}/flows/{pages.q(flow)}/requests?stopped={stopped}&failed={failed}"
        return WebResponse(303, b"", (("Location", target),))

    def _record_view(self, page: pages.Page, flow: str, rid: str, etag: str | None = None
                     ) -> tuple[str, str] | None:
        """The live fragment and its ETag; an empty fragment when ``etag`` still holds."""
        record = self.client.record(flow, rid)
        if record is None:
            return None
        plan, svg = self._plan(flow)
        extra = self._extra_actions(flow, rid)
        lines = logs.gather(self.client, plan, flow, rid, page.authorization)
        # the same record, picture, buttons and log lines for the same user render the same
        # fragment
        digest = hashlib.sha256(json.dumps([record, plan.definition_hash, extra, page.csrf,
                                            attrs.asdict(lines)],
                                           sort_keys=True, default=str).encode())
        tag = f'"{digest.hexdigest()[:32]}"'
        if tag == etag:
            return "", tag
        states = derive(plan, record)
        return detail.live_fragment(page, flow, record, plan, svg, states, extra, lines), tag

    def _extra_actions(self, flow: str, rid: str) -> tuple[str, ...]:
        cached = self._routes.get(flow)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found = tuple(a for a in ("redrive", "rerun") if self.client.has_route(flow, rid, a))
        self._routes[flow] = (time.monotonic() + _ROUTE_TTL, found)
        return found

    def request(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
                flow: str, rid: str) -> WebResponse:
        self._flow_fn(functions, flow)
        if request.wants_json:
            return self._request_json(flow, rid)
        view = self._record_view(page, flow, rid)
        if view is None:
            return _not_found(page, flow, rid)
        done = (request.args.get("done") or [""])[0]
        flash = f'<p class="flash ok" role="status">Request {_DONE[done]}.</p>' \
            if done in _DONE else ""
        return _html(detail.request_page(page, flow, rid, view[0], flash))

    def _request_json(self, flow: str, rid: str) -> WebResponse:
        """The record with the state of every node, for scripts (``Accept: application/json``)."""
        record = self.client.record(flow, rid)
        if record is None:
            return json_response({"error": f"request {rid} of flow {flow} not found",
                                  "status": 404}, 404)
        plan, _ = self._plan(flow)
        nodes = {key: {"state": s.state, "ok": s.ok, "failed": s.failed}
                 for key, s in derive(plan, record).items()}
        return json_response({"request": record, "nodes": nodes,
                              "definition_hash": plan.definition_hash})

    def live(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
             flow: str, rid: str) -> WebResponse:
        self._flow_fn(functions, flow)
        view = self._record_view(page, flow, rid, request.header("If-None-Match"))
        if view is None:
            return _not_found(page, flow, rid)
        # kept by the browser but revalidated at every poll: an unchanged record costs a 304
        cache = (("ETag", view[1]), ("Cache-Control", "private, no-cache"))
        if not view[0]:
            return WebResponse(304, b"", cache)
        return WebResponse(200, view[0].encode(),
                        (("Content-Type", "text/html; charset=utf-8"), *cache))

    def request_logs(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
                     flow: str, rid: str) -> WebResponse:
        """Every kept line of the request (``?node=<label>``: only the lines of that node)."""
        self._flow_fn(functions, flow)
        plan, _ = self._plan(flow)
        node = (request.args.get("node") or [""])[0]
        labels = {v.label for v in plan.vertices}
        if node and node not in labels:
            return _html(pages.error_page(page, 400, f"node={node[:80]!r}: flow {flow} has no "
                                          f"such node; use one of {', '.join(sorted(labels))}"),
                         400)
        found = logs.gather(self.client, plan, flow, rid, page.authorization)
        return _html(detail.logs_page(page, flow, rid, found, node))

    def control(self, request: WebRequest, page: pages.Page, functions: list[dict[str, Any]],
                flow: str, rid: str, action: str) -> WebResponse:
        self._flow_fn(functions, flow)
        answer = self.client.control(flow, rid, action)
        if answer.status >= 400:
            text = answer.body[:500].decode("utf-8", "replace").strip()
            return _html(pages.error_page(page, 409 if answer.status < 500 else 502,
                                          f"{action} of request {rid}: the flow answered "
                                          f"{answer.status}: {text}"),
                         409 if answer.status < 500 else 502)
        target = f"{page.base}/flows/{pages.q(flow)}/requests/{pages.q(rid)}?done={action}"
        return WebResponse(303, b"", (("Location", target),))


def _not_found(page: pages.Page, flow: str, rid: str) -> WebResponse:
    return _html(pages.error_page(page, 404, f"request {rid} of flow {flow} not found: it never "
                                  "existed, ran as a sync flow (no record) or its record "
                                  "expired (FAASFLOW_RECORD_RETENTION)"), 404)


def _cookie(request: WebRequest) -> str | None:
    raw = request.header("Cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def _form(request: WebRequest) -> dict[str, list[str]]:
    try:
        return parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}
