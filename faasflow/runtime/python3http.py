"""Serving a ``handle(event, context)`` function the way OpenFaaS's python3-http template does.

``event`` has ``body`` (bytes), ``headers`` (case-insensitive), ``method``, ``query`` (first value
by ``get``, every value by ``getlist``) and ``path``; ``context`` has ``hostname``. The handler
returns a dict ``{"statusCode", "body", "headers"}`` (a dict or list body is sent as JSON), or a
str / bytes body, or ``None`` for an empty 200.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from faasflow.runtime.server import StartResponse, WSGIApp

__all__ = ["Context", "Event", "Headers", "QueryArgs", "call_handler", "wsgi_app"]

log = logging.getLogger("faasflow.runtime")

Handle = Callable[[Any, Any], Any]


class Headers(Mapping[str, str]):
    """Request headers; lookups ignore case."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class QueryArgs(Mapping[str, str]):
    """The query string: ``args["a"]`` and ``get("a")`` give the first value."""

    def __init__(self, raw: str = "") -> None:
        self.raw = raw
        self._values = parse_qs(raw, keep_blank_values=True)

    def __getitem__(self, name: str) -> str:
        return self._values[name][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``."""
        return list(self._values.get(name, []))


class Event:
    """What the handler is called with."""

    def __init__(
        self, body: bytes, headers: Headers, method: str, query: QueryArgs, path: str
    ) -> None:
        self.body = body
        self.headers = headers
        self.method = method
        self.query = query
        self.path = path


class Context:
    """The second argument of ``handle``."""

    def __init__(self) -> None:
        self.hostname = socket.gethostname()


def event_from_environ(environ: Mapping[str, Any]) -> Event:
    """Build the :class:`Event` of one WSGI request."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").title(), str(value)))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", str(environ["CONTENT_TYPE"])))
    if length:
        headers.append(("Content-Length", str(length)))
    return Event(
        body=body,
        headers=Headers(headers),
        method=str(environ.get("REQUEST_METHOD", "GET")),
        query=QueryArgs(str(environ.get("QUERY_STRING", ""))),
        path=str(environ.get("PATH_INFO") or "/"),
    )


def format_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Turn what ``handle`` returned into (status, headers, body) as python3-http does."""
    if result is None:
        return 200, [], b""
    if isinstance(result, tuple) and len(result) in (2, 3):  # Flask's (body, status[, headers])
        _, headers, data = format_response(result[0])
        if len(result) == 3 and isinstance(result[2], dict):
            headers += [(str(k), str(v)) for k, v in result[2].items()]
        return int(result[1]), headers, data
    if isinstance(result, dict):
        status = int(result.get("statusCode", 200))
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        if "body" not in result or result["body"] is None:
            return status, headers, b""
        body = result["body"]
        if isinstance(body, (bytes, bytearray)):
            return status, headers, bytes(body)
        if content_type != "application/octet-stream" and isinstance(body, (dict, list)):
            if not content_type:
                headers.append(("Content-Type", "application/json"))
            return status, headers, json.dumps(body).encode()
        return status, headers, str(body).encode()
    if isinstance(result, (bytes, bytearray)):
        return 200, [], bytes(result)
    if isinstance(result, (list, dict)):
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    return 200, [("Content-Type", "text/html; charset=utf-8")], str(result).encode()


def call_handler(
    handle: Handle, event: Event, name: str = ""
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run ``handle`` on ``event``; an exception becomes a 500 naming the function."""
    try:
        return format_response(handle(event, Context()))
    except Exception as exc:
        log.exception("function %s raised", name or handle)
        return 500, [("Content-Type", "text/plain; charset=utf-8")], (
            f"function {name} raised {type(exc).__name__}: {exc}\n".encode()
        )


def wsgi_app(handle: Handle, name: str = "") -> WSGIApp:
    """A WSGI app serving ``handle`` on every path and method."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = call_handler(handle, event_from_environ(environ), name)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        start_response(f"{status} {phrase}", headers)
        return [body]

    return app
