"""``/function/<name>[.<namespace>][/<path>]`` and ``/async-function/...`` of the local gateway.

A synchronous call is proxied to a worker of the function's pool; an asynchronous one is put
in the durable queue (:mod:`~faasflow.runtime.dispatch` delivers it); a function of another
language goes to ``--upstream-gateway`` when there is one.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from faasflow.runtime.dispatch import HOP_BY_HOP
from faasflow.runtime.queue import CallIdInUse, Job
from faasflow.runtime.upstream import WorkerUnreachable
from faasflow.runtime.web import WebRequest, WebResponse, error
from faasflow.runtime.workers import WorkerPool

if TYPE_CHECKING:
    from faasflow.runtime.gateway import Gateway

__all__ = ["FunctionRoutes", "call_limit", "forwarded_headers"]

log = logging.getLogger("faasflow.gateway")

_ROUTE = re.compile(r"^/(?P<kind>function|async-function)/(?P<name>[^/?]+)(?P<rest>/.*)?$")
#: Longest X-Faas-Flow-Wait a call is given time for (the flow app's own bound).
_MAX_WAIT = 3600.0


class FunctionRoutes:
    """Calls of the stack's functions through one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._local = threading.local()

    def handle(self, request: WebRequest, raw_path: str, remote: str) -> WebResponse:
        """The answer to a function call, or a 404 naming what is served."""
        match = _ROUTE.match(raw_path)
        if match is None:
            return error(request, 404, f"no route {request.method} {request.path}; the local "
                         "gateway serves /function/<name>[.<namespace>], /async-function/<name>, "
                         "/system/... and /healthz")
        name, _, namespace = match["name"].partition(".")
        rest = match["rest"] or "/"
        kind = match["kind"]
        if kind == "async-function" and request.method != "POST":
            return error(request, 405, "asynchronous calls are POST /async-function/<name>, as "
                         "on OpenFaaS", None, ("Allow", "POST"))
        if namespace and namespace not in self.gateway.stack.namespaces:
            return error(request, 404, f"namespace {namespace!r} not found; the stack's "
                         f"namespaces are {', '.join(self.gateway.stack.namespaces)}")
        if name in self.gateway.stack.skipped:
            return self._other_language(request, kind, name, namespace, rest)
        pool = self.gateway.pool_of.get(name)
        spec = self.gateway.stack.functions.get(name)
        if pool is None or spec is None or (namespace and spec.namespace != namespace):
            return error(request, 404, self.gateway.not_found(name, namespace or None))
        self.gateway.count_invocation(name)
        call_id = request.header("X-Call-Id") or str(uuid.uuid4())
        started = time.monotonic()
        if kind == "async-function":
            answer = self._enqueue(request, name, rest, call_id, remote)
        else:
            answer = self._proxy(request, pool, name, rest, call_id, remote)
        self.gateway.metrics.invoked(name, answer.status, time.monotonic() - started)
        return answer

    def _proxy(self, request: WebRequest, pool: WorkerPool, name: str, rest: str, call_id: str,
               remote: str) -> WebResponse:
        started = time.time()
        headers = forwarded_headers(request, call_id, remote, started)
        target = f"/{name}{rest}" + (f"?{request.query}" if request.query else "")
        timing = (("X-Call-Id", call_id), ("X-Start-Time", str(int(started * 1e9))))
        limit = self._call_timeout(request)
        try:
            served_by, (status, out_headers, body) = pool.call(
                request.method, target, headers, request.body,
                wait=min(self.gateway.config.startup_timeout, 30.0), timeout=limit)
        except WorkerUnreachable as exc:
            duration = ("X-Duration-Seconds", f"{time.time() - started:.6f}")
            if isinstance(exc.__cause__, TimeoutError):
                return error(request, 504, f"function {name!r} did not answer within {limit:g}s "
                             "(faasflow up --timeout)", None, *timing, duration)
            return error(request, 502, f"function {name!r} is unreachable: {exc}", None,
                         *timing, duration)
        kept = tuple((k, v) for k, v in out_headers
                     if k.lower() not in HOP_BY_HOP and k.lower() != "x-duration-seconds")
        return WebResponse(status, body, (*kept, *timing,
                                       ("X-Duration-Seconds", f"{time.time() - started:.6f}"),
                                       ("X-Served-By", f"faasflow-up/{served_by}")))

    def _call_timeout(self, request: WebRequest) -> float:
        return call_limit(request.header("X-Faas-Flow-Wait"), self.gateway.config.timeout)

    def _enqueue(self, request: WebRequest, name: str, rest: str, call_id: str, remote: str
                 ) -> WebResponse:
        callback = request.header("X-Callback-Url") or None
        if callback is not None:
            problem = _callback_problem(callback)
            if problem:
                return error(request, 400, f"header X-Callback-Url: {callback!r} {problem}")
        headers = tuple(forwarded_headers(request, call_id, remote, time.time()).items())
        job = Job(id=call_id, function=name, path=rest, query=request.query,
                  method=request.method, headers=headers, body=request.body, callback=callback)
        try:
            self.gateway.queue.put(job)
        except CallIdInUse:
            return error(request, 409, f"header X-Call-Id: {call_id!r} already names another "
                         "call (another function, path or body); send a new id, or none",
                         None, ("X-Call-Id", call_id))
        except Exception as exc:
            log.error("cannot queue call %s to %s: %s", call_id, name, exc)
            return error(request, 503, f"cannot queue the call to {name!r}: {exc}")
        return WebResponse(202, b"", (("X-Call-Id", call_id),))

    def _other_language(self, request: WebRequest, kind: str, name: str, namespace: str,
                        rest: str) -> WebResponse:
        lang = self.gateway.stack.skipped[name]
        upstream = self.gateway.config.upstream_gateway.rstrip("/")
        if not upstream:
            return error(request, 404, f"function {name!r} (lang {lang}) is not run by faasflow "
                         "up; pass --upstream-gateway URL to send its calls to an OpenFaaS "
                         "gateway")
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        target = f"{upstream}/{kind}/{name}{'.' + namespace if namespace else ''}{rest}"
        if request.query:
            target += f"?{request.query}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            reply = session.request(request.method, target, data=request.body, headers=headers,
                                    timeout=self.gateway.config.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            return error(request, 502, f"function {name!r} (lang {lang}) at the upstream gateway "
                         f"{upstream}: {exc}")
        kept = tuple((k, v) for k, v in reply.headers.items()
                     if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding")
        return WebResponse(reply.status_code, reply.content, kept)


def call_limit(wait_header: str | None, timeout: float) -> float:
    """Seconds the gateway gives a call: ``timeout`` (--timeout), or longer when the caller
    asks a flow to wait longer for its output (``X-Faas-Flow-Wait``): the wait is the flow's
    to answer, not the gateway's to cut."""
    try:
        wait = float(wait_header or 0)
    except ValueError:
        wait = 0.0  # the flow answers 400 for it
    if wait <= 0:
        return timeout
    return max(timeout, min(wait, _MAX_WAIT) + 10.0)


def forwarded_headers(request: WebRequest, call_id: str, remote: str, started: float
                      ) -> dict[str, str]:
    """The headers a function gets for ``request``: the caller's but hop-by-hop ones, and the
    gateway's ``X-Call-Id``, ``X-Start-Time``, ``X-Forwarded-Host`` and ``X-Forwarded-For``."""
    out = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    out["X-Call-Id"] = call_id
    out.setdefault("X-Start-Time", str(int(started * 1e9)))
    host = request.header("Host")
    if host:
        out["X-Forwarded-Host"] = host
    if remote:
        earlier = request.header("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{earlier}, {remote}" if earlier else remote
    return out


def _callback_problem(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "is not an http(s) URL"
    if not parts.hostname:
        return "has no host"
    return ""
