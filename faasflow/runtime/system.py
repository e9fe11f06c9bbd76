"""The local gateway's ``/system/*`` API, in the shapes faas-provider and faas-cli use.

``/system/info`` (faas-provider's ``ProviderInfo`` under ``provider``, the gateway's ``version``
and ``arch``), ``/system/functions`` and ``/system/function/<name>`` (``FunctionStatus``),
``/system/namespaces``, ``/system/secrets`` (names of the files in the secrets directory; POST,
PUT and DELETE manage them as ``faas-cli secret`` does), ``/system/logs`` (NDJSON log
messages, ``follow=true`` streams), ``/system/scale-function/<name>`` (replicas are worker
processes) and ``/system/queue`` (a faasflow extension).
"""

from __future__ import annotations

import base64
import binascii
import json
import platform
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from faasflow.runtime.auth import write_secret
from faasflow.runtime.logbook import parse_time, rfc3339
from faasflow.runtime.server import StartResponse
from faasflow.runtime.stack import FunctionSpec
from faasflow.runtime.web import WebRequest, WebResponse, error, json_response
from faasflow.runtime.workers import MAX_REPLICAS

if TYPE_CHECKING:
    from faasflow.runtime.gateway import Gateway

__all__ = ["Streamed", "SystemAPI", "go_arch"]

_SECRET_NAME = re.compile(r"^[a-zA-Z0-9]([-._a-zA-Z0-9]{0,251}[a-zA-Z0-9])?$")
_FUNCTION_ROUTES = ("/system/function/", "/system/scale-function/")


def go_arch() -> str:
    """The machine's architecture as Go names it (``runtime.GOARCH``), as the CE gateway
    reports it."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "i386": "386", "i686": "386"}.get(machine, machine)


class SystemAPI:
    """Routes ``/system/*`` requests of one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def handle(self, request: WebRequest, disconnected: Callable[[], bool]
               ) -> WebResponse | Streamed | None:
        """The answer to a ``/system/...`` request (``None``: not a system route)."""
        path = request.path.rstrip("/") or "/"
        routes: dict[str, tuple[tuple[str, ...], Callable[[WebRequest], WebResponse]]] = {
            "/system/info": (("GET",), self.info),
            "/system/functions": (("GET",), self.functions),
            "/system/namespaces": (("GET",), self.namespaces),
            "/system/secrets": (("GET", "POST", "PUT", "DELETE"), self.secrets),
            "/system/queue": (("GET",), self.queue),
        }
        if path == "/system/logs":
            if request.method != "GET":
                return _not_allowed(request, ("GET",))
            return self.logs(request, disconnected)
        for prefix in _FUNCTION_ROUTES:
            if path.startswith(prefix):
                name = path[len(prefix):]
                if prefix == "/system/function/":
                    if request.method != "GET":
                        return _not_allowed(request, ("GET",))
                    return self.function(request, name)
                if request.method not in ("POST", "PUT"):
                    return _not_allowed(request, ("POST",))
                return self.scale(request, name)
        route = routes.get(path)
        if route is None:
            return None
        methods, handler = route
        if request.method not in methods:
            if path == "/system/functions":
                return error(request, 405, "deploying is faas-cli's job against a real gateway; "
                             "for faasflow up edit stack.yml and restart faasflow up", None,
                             ("Allow", "GET"))
            return _not_allowed(request, methods)
        return handler(request)

    # -- functions -----------------------------------------------------------------------------

    def info(self, request: WebRequest) -> WebResponse:
        from faasflow import __version__

        version = {"sha": "", "release": __version__}
        return json_response({
            "provider": {"provider": "faasflow", "orchestration": "local",
                         "version": dict(version)},
            "version": dict(version),
            "arch": go_arch(),
        })

    def functions(self, request: WebRequest) -> WebResponse:
        namespace, problem = self._namespace(request)
        if problem is not None:
            return problem
        return json_response([self.describe(spec) for spec in self.gateway.stack.functions.values()
                              if namespace is None or spec.namespace == namespace])

    def function(self, request: WebRequest, name: str) -> WebResponse:
        namespace, problem = self._namespace(request)
        if problem is not None:
            return problem
        spec = self.gateway.stack.functions.get(name)
        if spec is None or (namespace is not None and spec.namespace != namespace):
            return error(request, 404, self.gateway.not_found(name, namespace))
        return json_response(self.describe(spec))

    def describe(self, spec: FunctionSpec) -> dict[str, Any]:
        """faas-provider's ``FunctionStatus`` of one function."""
        pool = self.gateway.pool_of.get(spec.name)
        replicas = pool.replicas() if pool else 0
        doc: dict[str, Any] = {
            "name": spec.name,
            "image": spec.image or f"faasflow/{spec.lang}",
            "namespace": spec.namespace,
            "envProcess": spec.environment.get("fprocess") or spec.lang,
            "envVars": dict(spec.environment),
            "secrets": list(spec.secrets),
            "labels": dict(spec.labels),
            "annotations": dict(spec.annotations),
            "invocationCount": self.gateway.invocations.get(spec.name, 0),
            "replicas": replicas,
            "availableReplicas": replicas,
            "createdAt": rfc3339(self.gateway.started_at),
        }
        for field in ("limits", "requests"):
            resources = getattr(spec, field)
            if resources:
                doc[field] = {k: v for k, v in resources.items() if k in ("memory", "cpu")}
        return doc

    def scale(self, request: WebRequest, name: str) -> WebResponse:
        spec = self.gateway.stack.functions.get(name)
        if spec is None:
            return error(request, 404, self.gateway.not_found(name, None))
        try:
            doc = json.loads(request.body or b"{}")
            replicas = doc["replicas"] if isinstance(doc, dict) else None
        except (ValueError, KeyError):
            replicas = None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or \
                not 1 <= replicas <= MAX_REPLICAS:
            return error(request, 400, 'the body must be JSON {"serviceName": "<name>", '
                         f'"replicas": N}} with N from 1 to {MAX_REPLICAS} (faasflow up keeps at '
                         "least one worker process; it does not scale to zero)")
        pool = self.gateway.pool_of[name]
        pool.scale(replicas)
        self.gateway.wake_monitor()
        others = [f for f in pool.functions if f != name]
        note = f" (with {', '.join(others)}, which share its worker processes)" if others else ""
        return json_response({"name": name, "replicas": replicas,
                              "message": f"scaling {name}{note} to {replicas} worker processes"},
                             202)

    # -- namespaces, secrets, logs, queue ------------------------------------------------------

    def namespaces(self, request: WebRequest) -> WebResponse:
        return json_response(list(self.gateway.stack.namespaces))

    def _namespace(self, request: WebRequest) -> tuple[str | None, WebResponse | None]:
        namespace = (request.args.get("namespace") or [""])[0] or None
        if namespace is not None and namespace not in self.gateway.stack.namespaces:
            return None, error(request, 404, f"namespace {namespace!r} not found; the stack's "
                               f"namespaces are {', '.join(self.gateway.stack.namespaces)}")
        return namespace, None

    def secrets(self, request: WebRequest) -> WebResponse:
        namespace, problem = self._namespace(request)
        if problem is not None:
            return problem
        namespace = namespace or self.gateway.stack.namespaces[0]
        directory = self.gateway.secrets_dir
        if request.method == "GET":
            names = sorted(p.name for p in directory.iterdir() if p.is_file()) \
                if directory.is_dir() else []
            return json_response([{"name": n, "namespace": namespace} for n in names])
        try:
            doc = json.loads(request.body or b"{}")
        except ValueError:
            doc = None
        name = doc.get("name") if isinstance(doc, dict) else None
        if not isinstance(name, str) or not _SECRET_NAME.match(name):
            return error(request, 400, 'the body must be JSON {"name": "<secret name>", '
                         '"value": "..."} with a name of letters, digits, ".", "-" and "_"')
        path = directory / name
        if request.method == "DELETE":
            if not path.is_file():
                return error(request, 404, f"secret {name!r} not found in {directory}")
            path.unlink()
            return WebResponse(202)
        value = doc.get("value") if isinstance(doc, dict) else None
        raw = doc.get("rawValue") if isinstance(doc, dict) else None
        if isinstance(raw, str) and value is None:  # faas-cli --from-file: base64 bytes
            try:
                value = base64.b64decode(raw, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return error(request, 400, f"secret {name!r}: rawValue is not base64 of UTF-8 "
                             "text")
        if not isinstance(value, str):
            return error(request, 400, f'secret {name!r}: give its value as "value": "..." '
                         '(or "rawValue": base64)')
        exists = path.is_file()
        if request.method == "POST" and exists:
            return error(request, 409, f"secret {name!r} already exists; use PUT to update it")
        if request.method == "PUT" and not exists:
            return error(request, 404, f"secret {name!r} not found; use POST to create it")
        write_secret(path, value)
        return WebResponse(201 if request.method == "POST" else 202)

    def logs(self, request: WebRequest, disconnected: Callable[[], bool]) -> WebResponse | Streamed:
        args = request.args
        name = (args.get("name") or [""])[0]
        if not name:
            return error(request, 400, "give the function as /system/logs?name=<function>")
        namespace, problem = self._namespace(request)
        if problem is not None:
            return problem
        spec = self.gateway.stack.functions.get(name)
        if spec is None or (namespace is not None and spec.namespace != namespace):
            return error(request, 404, self.gateway.not_found(name, namespace))
        try:
            tail = int((args.get("tail") or ["-1"])[0] or -1)
        except ValueError:
            return error(request, 400, "tail must be a whole number of lines (-1: all)")
        raw_since = (args.get("since") or [""])[0]
        try:
            since = parse_time(raw_since) if raw_since else None
        except ValueError:
            return error(request, 400, f"since={raw_since!r} is not an RFC 3339 time "
                         "(2026-12-01T21:00:00Z)")
        follow = (args.get("follow") or ["false"])[0].lower() in ("1", "true", "yes")
        book = self.gateway.logs
        headers = (("Content-Type", "application/x-ndjson"),)
        if not follow:
            lines = book.read(name, since=since, tail=None if tail < 0 else tail)
            body = b"".join(json.dumps(line.to_json()).encode() + b"\n" for line in lines)
            return WebResponse(200, body, headers)

        def stop() -> bool:
            return self.gateway.closing.is_set() or disconnected()

        stream = book.follow(name, since=since, tail=None if tail < 0 else tail, stop=stop)
        return Streamed(200, headers, _ndjson(stream))

    def queue(self, request: WebRequest) -> WebResponse:
        queue = self.gateway.queue
        return json_response({"pending": queue.pending(), "recovered": queue.recovered,
                              "dead": queue.dead()})


def _ndjson(lines: Iterable[Any]) -> Iterator[bytes]:
    for line in lines:
        yield json.dumps(line.to_json()).encode() + b"\n"


@attrs.frozen
class Streamed:
    """An answer whose body is produced while it is sent (``follow=true`` logs)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    chunks: Iterator[bytes]

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        start_response(f"{self.status} OK", list(self.headers))

        def generate() -> Iterator[bytes]:
            yield from self.chunks

        return generate()


def _not_allowed(request: WebRequest, methods: Iterable[str]) -> WebResponse:
    allowed = ", ".join(methods)
    return error(request, 405, f"use {allowed} for {request.path}", None, ("Allow", allowed))
