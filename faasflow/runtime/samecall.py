"""A flow's call of a python3-http function its own worker process serves, without a socket.

Flows inside ``faasflow up`` call functions through the gateway (``/function/<name>``), and the
gateway usually sends the call back to the worker the flow runs in: two HTTP exchanges for a
call that never had to leave the process. :class:`SameProcessCalls` is the
:class:`faasflow.shortcuts.CallShortcut` a worker installs for its gateway's URL. It builds the
WSGI environ the function's app would have got through the gateway and the worker's server
(the gateway's forwarded headers included: ``X-Call-Id``, ``X-Start-Time``,
``X-Forwarded-Host``, ``X-Forwarded-For``), runs the app through the worker's
:class:`~faasflow.runtime.worker.FunctionsApp` (so what the handler prints is tagged with the
function and the call, as over HTTP), and answers what the gateway would have: the handler's
status, body and headers (hop-by-hop ones dropped) plus ``X-Call-Id``, ``X-Start-Time``,
``X-Duration-Seconds``, ``X-Served-By`` naming this worker, and ``Content-Length``.

It declines (the call goes over HTTP) for a function another process serves, a flow (a flow
calling a flow keeps the gateway in between), a request the HTTP path would treat specially
(hop-by-hop or malformed headers, an unusual method, a body over the gateway's limit), and
when ``FAASFLOW_SAME_PROCESS_CALLS=0``.

Timeouts: the handler runs on a thread of its own (:mod:`~faasflow.runtime.callthreads`, about
20 µs a hand-off), the caller waits for it up to the shorter of the call's timeout and the
gateway's limit (``--timeout``, or longer for ``X-Faas-Flow-Wait``). At the gateway's limit it
answers the gateway's 504; at the call's own, shorter, timeout it raises
:class:`~faasflow.errors.FunctionTimeout` as the HTTP client would. Either way the handler runs
on to its end, as it does behind the gateway. A call without a timeout waits up to the
gateway's limit.

The gateway still counts every such call (``invocationCount``, ``/metrics``): the worker
reports them in batches on a pipe of their own (:mod:`~faasflow.runtime.callreports`).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from faasflow.errors import ConfigurationError, FunctionTimeout
from faasflow.interfaces import Response
from faasflow.runtime.callreports import CallReports
from faasflow.runtime.calls import call_limit, forwarded_headers
from faasflow.runtime.callthreads import Job, Runner
from faasflow.runtime.dispatch import HOP_BY_HOP
from faasflow.runtime.http11 import DISCONNECTED, MAX_BODY
from faasflow.runtime.server import WSGIApp
from faasflow.runtime.web import WebRequest, error
from faasflow.settings import EnvVars

__all__ = ["SameProcessCalls", "enabled", "flush_reports", "install"]

log = logging.getLogger("faasflow.runtime")

#: Methods the worker's server serves; anything else goes over HTTP and gets its answer there.
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: What the worker's server leaves out of an answer's headers (it frames the body itself).
_SERVER_DROPS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade",
                           "trailer", "content-length"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOOPBACK = "127.0.0.1"

_installed: list[SameProcessCalls] = []


def enabled(environ: Mapping[str, str]) -> bool:
    """False when ``FAASFLOW_SAME_PROCESS_CALLS`` turns the shortcut off."""
    raw = (environ.get(EnvVars.SAME_PROCESS_CALLS) or "").strip().lower()
    if raw in {"", "1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{EnvVars.SAME_PROCESS_CALLS}={raw!r} is not a boolean; use 1 "
                             "(calls of functions served by the same worker skip the gateway, "
                             "the default) or 0 (every call goes through the gateway)")


class SameProcessCalls:
    """Calls of the python3-http ``functions`` of this worker's ``app``, as the gateway at
    ``gateway_url`` would have made them (a :class:`faasflow.shortcuts.CallShortcut`)."""

    def __init__(self, app: WSGIApp, functions: Collection[str], *, gateway_url: str,
                 worker: str, port: int, timeout: float, reports: CallReports | None) -> None:
        self.app = app
        self.functions = frozenset(functions)
        self.gateway_url = gateway_url.strip().rstrip("/")
        self.worker = worker
        self.port = port
        self.timeout = timeout
        self.reports = reports
        parts = urlsplit(self.gateway_url)
        default = 443 if parts.scheme == "https" else 80
        # the Host header http.client sends for this URL, which the gateway forwards
        self.host = parts.hostname or _LOOPBACK
        if ":" in self.host:
            self.host = f"[{self.host}]"
        if parts.port and parts.port != default:
            self.host += f":{parts.port}"
        self.runner = Runner("faasflow-samecall")

    def call(self, function: str, data: bytes, *, method: str, headers: Mapping[str, str],
             query: Mapping[str, list[str]] | None, timeout: float | None) -> Response | None:
        if function not in self.functions or method not in _METHODS or len(data) > MAX_BODY:
            return None
        if quote(function, safe="") != function or "." in function:
            return None  # the gateway would read another name (or a namespace) from the path
        wire = _request_headers(headers, self.host)
        if wire is None:
            return None
        started_mono = time.monotonic()
        request = WebRequest(method=method, path=f"/function/{function}",
                             query=urlencode(query, doseq=True) if query else "",
                             headers=wire, body=data)
        call_id = request.header("X-Call-Id") or str(uuid.uuid4())
        started = time.time()
        environ = self._environ(function, request,
                                forwarded_headers(request, call_id, _LOOPBACK, started))
        url = f"{self.gateway_url}/function/{function}" + (f"?{request.query}"
                                                             if query else "")
        limit = call_limit(request.header("X-Faas-Flow-Wait"), self.timeout)
        wait = limit if timeout is None else min(timeout, limit)
        job = self.runner.submit(lambda: self._serve(environ))
        timing = (("X-Call-Id", call_id), ("X-Start-Time", str(int(started * 1e9))))
        if job.wait(wait):
            status, out_headers, body = _answer(job, method)
            if not 100 < status <= 999:
                # the gateway's HTTP client cannot read such a status line: a 502
                self._report(function, 502, time.monotonic() - started_mono)
                answer = error(request, 502, f"function {function!r} is unreachable: worker "
                               f"on port {self.port}: answered status {status}", None, *timing,
                               ("X-Duration-Seconds", f"{time.time() - started:.6f}"))
                return _response(answer.status, answer.body, answer.headers, url)
            self._report(function, status, time.monotonic() - started_mono)
            return _response(status, body, (*out_headers, *timing, (
                "X-Duration-Seconds", f"{time.time() - started:.6f}"), (
                "X-Served-By", f"faasflow-up/{self.worker}")), url)
        if limit <= wait:  # the gateway's limit came first: its 504
            self._report(function, 504, time.monotonic() - started_mono)
            answer = error(request, 504, f"function {function!r} did not answer within "
                           f"{limit:g}s (faasflow up --timeout)", None, *timing,
                           ("X-Duration-Seconds", f"{time.time() - started:.6f}"))
            return _response(answer.status, answer.body, answer.headers, url)

        def late(done: Job[Any]) -> None:  # the gateway would count it when it answers
            seconds = time.monotonic() - started_mono
            if seconds > limit:
                self._report(function, 504, limit)
            else:
                self._report(function, _answer(done, method)[0], seconds)

        job.then(late)
        raise FunctionTimeout(
            f"{method} {url} did not answer within {wait:g} s; raise the timeout or check "
            "that the function is not stuck", url=url)

    def _environ(self, function: str, request: WebRequest, forwarded: Mapping[str, str]
                 ) -> dict[str, Any]:
        """What the worker's server would hand the app for the gateway's request."""
        target = f"/{function}/" + (f"?{request.query}" if request.query else "")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": f"/{function}/",
            "RAW_URI": target,
            "QUERY_STRING": request.query,
            "SERVER_NAME": _LOOPBACK,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": _LOOPBACK,
            "CONTENT_LENGTH": str(len(request.body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            DISCONNECTED: _connected,
        }
        for name, value in forwarded.items():
            if name.lower() == "content-type":
                environ["CONTENT_TYPE"] = value
        environ["HTTP_HOST"] = f"{_LOOPBACK}:{self.port}"
        for name, value in forwarded.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _serve(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """The app's answer as the worker's server sends it (an app error is its 500)."""
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Any:
            started["status"], started["headers"] = status, headers
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            log.exception("unhandled error serving %s %s", environ["REQUEST_METHOD"],
                          environ["RAW_URI"])
            return 500, [("Content-Type", "text/plain")], b"[ Failed ] internal server error\n"
        if "status" not in started:
            return 500, [("Content-Type", "text/plain")], (
                b"[ Failed ] the application did not start a response\n")
        status = int(str(started["status"]).split(" ", 1)[0])
        headers = [(str(k), str(v).lstrip(" \t")) for k, v in started["headers"]
                   if str(k).lower() not in _SERVER_DROPS]
        return status, headers, b"".join(chunks)

    def _report(self, function: str, status: int, seconds: float) -> None:
        if self.reports is not None:
            self.reports.add(function, status, seconds)


def _connected() -> bool:
    return False  # the caller is this process: it cannot hang up


def _request_headers(headers: Mapping[str, str], host: str) -> dict[str, str] | None:
    """The headers the gateway reads from the invoker's request (``WebRequest.headers``), or
    None when the HTTP path must handle them (hop-by-hop, or not valid on the wire)."""
    given: list[tuple[str, str]] = []
    names: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if not name or lower in HOP_BY_HOP or not set(name) <= _TOKEN or \
                any(c in value for c in "\r\n\0"):
            return None
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return None
        if lower != "content-type" and name.upper().replace("-", "_") == "CONTENT_TYPE":
            return None  # a spelling the gateway's server reads as another header
        names.add(lower)
        given.append((name, value.lstrip(" \t")))
    wire = [("Host", host)]
    if "accept-encoding" not in names:
        wire.append(("Accept-Encoding", "identity"))
    wire += given
    keys: dict[str, str] = {}
    content_type: str | None = None
    for name, value in wire:
        if name.lower() == "content-type":
            content_type = value if content_type is None else content_type
            continue
        key = name.upper().replace("-", "_")
        keys[key] = f"{keys[key]},{value}" if key in keys else value
    seen = {key.replace("_", "-").title(): value for key, value in keys.items()}
    if content_type:
        seen["Content-Type"] = content_type
    return seen


def _answer(job: Job[tuple[int, list[tuple[str, str]], bytes]], method: str
            ) -> tuple[int, list[tuple[str, str]], bytes]:
    """What the gateway keeps of the worker's answer (``calls._proxy``)."""
    if job.error is not None or job.result is None:
        return 500, [("Content-Type", "text/plain")], b"[ Failed ] internal server error\n"
    status, headers, body = job.result
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""  # the gateway's HTTP client reads no body for these
    kept = [(k, v) for k, v in headers
            if k.lower() not in HOP_BY_HOP and k.lower() != "x-duration-seconds"]
    return status, kept, body


def _response(status: int, body: bytes, headers: tuple[tuple[str, str], ...] | list[
        tuple[str, str]], url: str) -> Response:
    """The answer as the invoker's HTTP client reads it from the gateway."""
    received: dict[str, str] = {}
    for name, value in (*headers, ("Content-Length", str(len(body)))):
        received[name] = f"{received[name]}, {value}" if name in received else value
    return Response(status, body, received, url)


def install(config: Mapping[str, Any], app: WSGIApp, functions: Collection[str], port: int
            ) -> SameProcessCalls | None:
    """Install the shortcut for the gateway of a worker's ``config`` (its flows' default
    ``FAASFLOW_GATEWAY_URL``) over the python3-http ``functions`` it serves on ``port``; None
    when there are none or ``FAASFLOW_SAME_PROCESS_CALLS`` is off. Calls are reported on the
    pipe the gateway passed as ``config["reports"]``, if any."""
    from faasflow import shortcuts

    gateway_url = (config.get("defaults") or {}).get(EnvVars.GATEWAY_URL)
    if not functions or not gateway_url or not enabled(os.environ):
        return None
    fd = config.get("reports")
    reports = None
    if isinstance(fd, int) and not isinstance(fd, bool):
        os.set_inheritable(fd, False)  # not for the handlers' child processes
        reports = CallReports(os.fdopen(fd, "w", encoding="utf-8"))
    calls = SameProcessCalls(app, functions, gateway_url=str(gateway_url),
                             worker=str(config.get("name") or "?"), port=port,
                             timeout=float(config.get("timeout") or 300.0), reports=reports)
    shortcuts.install(calls.gateway_url, call=calls)
    _installed.append(calls)
    return calls


def flush_reports() -> None:
    """Write the reports not yet sent (the worker is stopping)."""
    for calls in _installed:
        if calls.reports is not None:
            calls.reports.flush()
