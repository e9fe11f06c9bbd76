"""The HTTP face of a flow: a WSGI app over :class:`faasflow.engine.Engine`.

Routes (faas-flow v0.6's documented surface, plus the request record and the wait header):

=====================================  =====================================================
``POST /``                             start a request (``X-Faas-Flow-Reqid``,
                                       ``X-Faas-Flow-Callback-Url``, ``X-Faas-Flow-Wait``)
``/?export-dag=true``                  the DAG as JSON
``/?pause-flow=ID`` (``resume-flow``,   control and state, as faas-flow's query forms
``stop-flow``, ``state``)
``POST /flow/ID/pause|resume|stop``    control
``GET /flow/ID/state``                 ``RUNNING`` / ``PAUSED`` / ``FINISHED``
``POST /flow/ID/forward``              one iteration (signed message; internal)
``POST /flow/ID/execute``              start a request with id ``ID``
``POST /flow/ID/redrive``              continue a failed request from its failed node(s)
``POST /flow/ID/rerun``                start a new request with the same input
``GET /flow/ID``                       the request record as JSON (``?payloads=true``: with
                                       the captured inputs and outputs)
``GET /flow``                          a page of requests, newest first (``status``, ``limit``,
                                       ``cursor``, ``since``, ``until``, ``node``, ``q``)
``GET /metrics``                       Prometheus metrics of the process (docs/history.md)
=====================================  =====================================================
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from faasflow.errors import (
    ConfigurationError,
    DefinitionError,
    FaasflowError,
    RequestNotFound,
)
from faasflow.runtime.answers import accepted, bad_id, failure, not_allowed
from faasflow.runtime.deployment import check_stores
from faasflow.runtime.guard import SIGNATURE, CallbackRefused, check_callback, verify_control
from faasflow.runtime.server import StartResponse
from faasflow.runtime.web import BodyError, WebRequest, WebResponse, error, json_response, text
from faasflow.settings import Settings

if TYPE_CHECKING:
    from faasflow.engine import Engine
    from faasflow.flow import Flow
    from faasflow.runtime.metrics import FlowMetrics

__all__ = ["FlowApp", "flow_name_from_host"]

log = logging.getLogger("faasflow.runtime")

REQID = "X-Faas-Flow-Reqid"
CALLBACK = "X-Faas-Flow-Callback-Url"
WAIT = "X-Faas-Flow-Wait"
#: Longest ``X-Faas-Flow-Wait`` honoured, in seconds.
MAX_WAIT = 3600.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ROUTE = re.compile(r"^/flow/(?P<id>[^/]+)(?:/(?P<action>[^/]+))?/?$")
_CONTROL_QUERIES = (
    ("pause-flow", "pause"), ("stop-flow", "stop"), ("resume-flow", "resume"), ("state", "state")
)
_DONE_WORDS = {"pause": "paused", "resume": "resumed", "stop": "stopped"}
_MAX_HOST_FLOWS = 4

Define = Callable[..., Any]


def flow_name_from_host(host: str | None) -> str | None:
    """faas-flow's rule (the Host header up to the first ``:`` or ``.``), but only when that is
    a function name: pod IPs (``10.1.2.3``) and ``localhost`` are not (faas-flow#145, #152)."""
    if not host:
        return None
    name = re.split(r"[:.]", host.strip().lower(), maxsplit=1)[0]
    if not _NAME.match(name) or name.isdigit() or name == "localhost":
        return None
    if not any(c.isalpha() for c in name):
        return None
    return name


class FlowApp:
    """WSGI app serving one flow.

    ``flow`` is a :class:`faasflow.Flow` or a ``define(flow, context)`` function. The flow's name
    is ``settings.flow_name`` (``FAASFLOW_FLOW_NAME``), else the name of the ``Flow``, else
    the Host header when it is a function name.

    ``processes`` is how many worker processes serve the flow (gunicorn's ``workers``); with
    more than one, or more than one replica (``FAASFLOW_REPLICAS``), a store that cannot reach
    them all is refused here with :class:`~faasflow.errors.ConfigurationError`. A WSGI server
    that reports ``wsgi.multiprocess`` gets the same check on its first request.
    """

    def __init__(
        self,
        flow: Flow | Define,
        settings: Settings | None = None,
        *,
        functions: Mapping[str, Any] | None = None,
        engine_factory: Callable[[Flow, Settings], Engine] | None = None,
        processes: int = 1,
        report_invalid: bool = True,
    ) -> None:
        self.settings = settings or Settings.from_env()
        check_stores(self.settings, processes=processes)
        self._multiprocess_checked = processes > 1
        self._flow = flow
        self._functions = functions
        self._engine_factory = engine_factory
        self._engines: dict[str, Engine] = {}
        self._metrics: FlowMetrics | None = None
        self._lock = threading.Lock()
        name = self.settings.flow_name or getattr(flow, "name", None)
        self.flow_name: str | None = name or None
        if self.flow_name:
            try:  # configuration errors show at start-up, not per request
                self.engine(self.flow_name)
            except DefinitionError as exc:
                # an invalid definition still serves its export (is-valid: false) and a 500;
                # under `faasflow up` its start-up check said so once for every worker
                log.log(logging.ERROR if report_invalid else logging.DEBUG,
                        "flow %s is invalid: %s", self.flow_name, exc)

    # -- engines -------------------------------------------------------------------------------

    def engine(self, name: str) -> Engine:
        """The engine of the flow called ``name`` (built on first use)."""
        with self._lock:
            engine = self._engines.get(name)
            if engine is not None:
                return engine
            if len(self._engines) >= _MAX_HOST_FLOWS:
                raise ConfigurationError(
                    f"refusing to serve flow {name!r}: this process already serves "
                    f"{', '.join(sorted(self._engines))}; set FAASFLOW_FLOW_NAME"
                )
            flow = self._named_flow(name)
            if self._engine_factory is not None:
                engine = self._engine_factory(flow, self.settings)
            else:
                from faasflow.engine import Engine

                engine = Engine.from_settings(flow, self.settings, functions=self._functions)
            records = getattr(engine, "records", None)
            if records is not None:
                records.watchers.append(self.metrics)
            self._engines[name] = engine
            return engine

    @property
    def metrics(self) -> FlowMetrics:
        """This app's metrics (made on first use: prometheus_client loads only when needed)."""
        if self._metrics is None:
            from faasflow.runtime.metrics import FlowMetrics

            self._metrics = FlowMetrics()
        return self._metrics

    def _named_flow(self, name: str) -> Flow:
        from faasflow.flow import Flow

        flow = self._flow
        if isinstance(flow, Flow) and flow.name == name:
            return flow
        return Flow(self._define, name=name)

    @property
    def _define(self) -> Define:
        from faasflow.flow import Flow

        return self._flow.define if isinstance(self._flow, Flow) else self._flow

    def _export(self, name: str) -> WebResponse:
        from faasflow.export import export_definition

        doc = export_definition(self._define, name)
        body = json.dumps(doc, indent=4).encode() + b"\n"
        return WebResponse(200, body, (("Content-Type", "application/json"),))

    def sweep(self) -> int:
        """Forget expired request records and fail requests past their deadline."""
        with self._lock:
            engines = list(self._engines.values())
        return sum(engine.sweep() for engine in engines)

    def close(self) -> None:
        """Close every engine (and so its backends)."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()

    # -- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            request = WebRequest.from_environ(environ, self.settings.max_body)
        except BodyError as exc:
            return error(None, exc.status, str(exc)).send(start_response)
        if environ.get("wsgi.multiprocess") and not self._multiprocess_checked:
            try:
                check_stores(self.settings, processes=2)
            except ConfigurationError as exc:
                log.error("%s", exc)
                return error(request, 500, str(exc)).send(start_response)
            self._multiprocess_checked = True
        try:
            response = self.handle(request)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = error(request, 500, "internal error in the faasflow runtime; see its log")
        return response.send(start_response)

    def handle(self, request: WebRequest) -> WebResponse:
        """Route one request."""
        if request.path.rstrip("/") == "/metrics" and request.method in ("GET", "HEAD"):
            from faasflow.runtime.metrics import CONTENT_TYPE

            return WebResponse(200, self.metrics.exposition(), (("Content-Type", CONTENT_TYPE),))
        name = self.flow_name or flow_name_from_host(request.header("Host"))
        if name is None:
            return error(
                request, 500,
                f"cannot tell this flow's name: set FAASFLOW_FLOW_NAME (the Host header "
                f"{request.header('Host')!r} is not a function name)",
            )
        path = request.path.rstrip("/") or "/"
        args = request.args
        if path == "/" and "export-dag" in args:
            if args["export-dag"][0].lower() != "true":
                return error(request, 400, "export-dag takes the value true")
            return self._export(name)
        try:
            engine = self.engine(name)
        except FaasflowError as exc:
            return self._failure(request, exc, None)
        if path == "/":
            return self._root(engine, request)
        if path == "/flow":
            if request.method not in ("GET", "HEAD"):
                return not_allowed(request, "GET")
            denied = self._authenticate(request)
            if denied is not None:
                return denied
            return self._list(engine, request, name)
        if path == "/flow/sweep" and request.method == "POST":  # for a cron connector
            denied = self._authenticate(request)
            if denied is not None:
                return denied
            return self._call(request, None, lambda: json_response({"swept": engine.sweep()}))
        match = _ROUTE.match(path)
        if match is None:
            return error(request, 404, f"no route {request.method} {request.path}; see "
                         "docs/runtime.md for the flow's routes")
        request_id, action = match["id"], match["action"]
        if not _ID.match(request_id):
            return error(request, 400, bad_id(request_id))
        if action not in ("forward", "execute"):
            denied = self._authenticate(request, request_id)
            if denied is not None:
                return denied
        if action is None:
            if request.method not in ("GET", "HEAD"):
                return not_allowed(request, "GET")
            return self._record(engine, request, request_id)
        if action in ("pause", "resume", "stop"):
            if request.method != "POST":
                return not_allowed(request, "POST")
            return self._control(engine, request, action, request_id)
        if action == "state":
            if request.method not in ("GET", "HEAD", "POST"):
                return not_allowed(request, "GET")
            return self._control(engine, request, "state", request_id)
        if action == "forward":
            if request.method != "POST":
                return not_allowed(request, "POST")
            return self._forward(engine, request, request_id)
        if action == "execute":
            if request.method != "POST":
                return not_allowed(request, "POST")
            return self._start(engine, request, request_id)
        if action in ("redrive", "rerun"):
            if request.method != "POST":
                return not_allowed(request, "POST")
            return self._again(engine, request, action, request_id)
        return error(request, 404, f"no route {request.method} {request.path}: unknown action "
                     f"{action!r} (pause, resume, stop, state, forward, execute, redrive, "
                     "rerun)")

    # -- routes --------------------------------------------------------------------------------

    def _root(self, engine: Engine, request: WebRequest) -> WebResponse:
        args = request.args
        for query, action in _CONTROL_QUERIES:
            if query in args:
                request_id = args[query][0]
                if not request_id:
                    return error(request, 400, f"{query} needs a request id: ?{query}=<id>")
                if not _ID.match(request_id):
                    return error(request, 400, bad_id(request_id))
                denied = self._authenticate(request, request_id)
                if denied is not None:
                    return denied
                return self._control(engine, request, action, request_id)
        if request.method not in ("GET", "POST", "PUT"):
            return not_allowed(request, "POST")
        return self._start(engine, request, None)

    def _start(self, engine: Engine, request: WebRequest, request_id: str | None) -> WebResponse:
        request_id = request_id or request.header(REQID) or None
        if request_id is not None and not _ID.match(request_id):
            return error(request, 400, f"header {REQID}: {bad_id(request_id)}")
        callback = request.header(CALLBACK) or None
        if callback is not None:
            try:
                check_callback(callback, self.settings, CALLBACK)
            except CallbackRefused as exc:
                return error(request, 400, str(exc), request_id)
        wait: float | None = None
        raw_wait = request.header(WAIT)
        if raw_wait is not None:
            try:
                wait = float(raw_wait)
            except ValueError:
                wait = -1.0
            if not math.isfinite(wait) or wait < 0:
                return error(request, 400, f"header {WAIT}: {raw_wait!r} is not a number of "
                             "seconds", request_id)
            wait = min(wait, MAX_WAIT)
        try:
            result = engine.start(
                request.body, request_id=request_id, query=request.query,
                callback_url=callback, headers=dict(request.headers),
            )
        except FaasflowError as exc:
            return self._failure(request, exc, request_id)
        ids = ((REQID, result.request_id), (CALLBACK, callback or ""))
        if result.status == "running" and wait:
            try:
                record = engine.wait(result.request_id, wait)
            except FaasflowError as exc:
                return self._failure(request, exc, result.request_id)
            if record is None or not record.done:
                return accepted(request, result.request_id, ids)
            if record.status == "success":
                return WebResponse(200, record.output or b"", ids)
            if record.status == "stopped":
                return error(request, 409, f"request {record.request_id} was stopped before "
                             "it finished", None, *ids)
            return error(request, 500, record.error or f"request {record.request_id} failed",
                         None, *ids)
        if result.status == "success" and (result.sync or wait):
            return WebResponse(200, result.output or b"", ids)
        if result.status in ("running", "success"):
            # a multi-node flow answers with an empty body, as in faas-flow, also when it
            # happened to finish before this answer: ask with X-Faas-Flow-Wait for the output
            return WebResponse(200, b"", ids)
        if result.status == "stopped":
            return error(request, 409, f"request {result.request_id} was stopped before it "
                         "finished", None, *ids)
        return error(request, 500, result.error or f"request {result.request_id} failed",
                     None, *ids)

    def _control(
        self, engine: Engine, request: WebRequest, action: str, request_id: str
    ) -> WebResponse:
        def act() -> WebResponse:
            if action == "state":
                return text(engine.state(request_id))
            getattr(engine, action)(request_id)
            return text(f"Successfully {_DONE_WORDS[action]} request {request_id}")

        return self._call(request, request_id, act, action=action)

    def _again(
        self, engine: Engine, request: WebRequest, action: str, request_id: str
    ) -> WebResponse:
        """Redrive a failed request from its failed node(s), or re-run any request anew."""
        from faasflow.engine.redrive import redrive

        def act() -> WebResponse:
            if action == "redrive":
                sent = redrive(engine.core, request_id)
                return json_response({"request_id": request_id, "status": "running",
                                      "redriven": sent}, 202)
            kept = engine.records.input_of(request_id)
            if kept is None:
                if engine.records.entry(request_id) is None:
                    raise RequestNotFound(request_id, "rerun")
                return error(request, 409, f"cannot re-run request {request_id}: its input was "
                             "not kept (set FAASFLOW_REDRIVE=true to keep every request's input "
                             "until its record expires)", request_id)
            body, query, callback = kept
            started = engine.start(body, query=query, callback_url=callback)
            return json_response({"request_id": started.request_id, "rerun_of": request_id,
                                  "status": started.status}, 202,
                                 (REQID, started.request_id))

        return self._call(request, request_id, act, action=action)

    def _list(self, engine: Engine, request: WebRequest, name: str) -> WebResponse:
        from faasflow.engine.index import IndexQuery, InvalidQuery

        try:
            query = IndexQuery.from_args(request.args)
        except InvalidQuery as exc:
            return error(request, 400, str(exc))

        def get() -> WebResponse:
            page = engine.records.page(query)
            return json_response({"flow": name, "requests": [e.to_json(name) for e in
                                                             page.entries], "next": page.next})

        return self._call(request, None, get)

    def _record(self, engine: Engine, request: WebRequest, request_id: str) -> WebResponse:
        raw = (request.args.get("payloads") or ["false"])[0].lower()
        if raw not in ("true", "false"):
            return error(request, 400, f"query parameter 'payloads': {raw!r}; use true or false")

        def get() -> WebResponse:
            record = engine.record(request_id)
            if record is None:
                raise RequestNotFound(request_id)
            doc = record.to_json()
            if raw == "true":  # the captured inputs and outputs (FAASFLOW_CAPTURE)
                from faasflow.engine.capture import payloads

                eids = [*record.nodes, *(k for k in record.states if k not in record.nodes)]
                doc["payloads"] = payloads(engine.core, request_id, eids)
            return json_response(doc)

        return self._call(request, request_id, get)

    def _forward(self, engine: Engine, request: WebRequest, request_id: str) -> WebResponse:
        try:
            doc = json.loads(request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nesting past the parser
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("id"), str) and doc["id"] != request_id:
            return error(request, 400, f"forwarded message of request {doc['id']} was posted "
                         f"to /flow/{request_id}/forward", request_id)

        def run() -> WebResponse:
            outcome = engine.forward(request.body, dict(request.headers))
            # 200 either way: a queue must ack a copy whose work is done or in hand
            return text("duplicate\n" if outcome == "duplicate" else "")

        return self._call(request, request_id, run, action="forward")

    def _authenticate(
        self, request: WebRequest, request_id: str | None = None
    ) -> WebResponse | None:
        """With request authentication on, the signature of a control, record or list request
        (see :mod:`faasflow.runtime.guard`); ``None`` when it may go on."""
        if not self.settings.authenticate_request:
            return None
        try:
            verify_control(self.settings, request.path, request.query, request.body,
                           request.header(SIGNATURE))
        except FaasflowError as exc:
            return self._failure(request, exc, request_id)
        return None

    # -- errors --------------------------------------------------------------------------------

    def _call(
        self,
        request: WebRequest,
        request_id: str | None,
        route: Callable[[], WebResponse],
        action: str = "find",
    ) -> WebResponse:
        try:
            return route()
        except FaasflowError as exc:
            return self._failure(request, exc, request_id, action)

    def _failure(
        self, request: WebRequest, exc: FaasflowError, request_id: str | None, action: str = ""
    ) -> WebResponse:
        return failure(request, exc, request_id, action)
