"""Serving a ``handle(event, context)`` function the way OpenFaaS's python3-http template does.

``event`` has ``body`` (bytes), ``headers`` (case-insensitive), ``method``, ``query`` (first value
by ``get``, every value by ``getlist``) and ``path``; ``context`` has ``hostname``. The handler
returns a dict ``{"statusCode", "body", "headers"}``, a str / bytes body, or ``None`` for an
empty 200; :func:`format_response` says what the official template answers for each.
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
from faasflow.runtime.web import MAX_BODY, BodyError, read_body

__all__ = ["Event", "HandlerContext", "Headers", "QueryArgs", "call_handler", "wsgi_app"]

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


class HandlerContext:
    """The second argument of a python3-http ``handle(event, context)`` (not a flow's
    :class:`faasflow.Context`)."""

    def __init__(self) -> None:
        self.hostname = socket.gethostname()


def event_from_environ(environ: Mapping[str, Any], max_body: int = MAX_BODY) -> Event:
    """Build the :class:`Event` of one WSGI request, reading its body whatever its framing
    (:func:`faasflow.runtime.web.read_body`; :class:`~faasflow.runtime.web.BodyError` if it is
    malformed or over ``max_body``)."""
    body = read_body(environ, max_body)
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").title(), str(value)))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", str(environ["CONTENT_TYPE"])))
    if environ.get("CONTENT_LENGTH"):
        headers.append(("Content-Length", str(environ["CONTENT_LENGTH"])))
    return Event(
        body=body,
        headers=Headers(headers),
        method=str(environ.get("REQUEST_METHOD", "GET")),
        query=QueryArgs(str(environ.get("QUERY_STRING", ""))),
        path=str(environ.get("PATH_INFO") or "/"),
    )


_HTML = "text/html; charset=utf-8"
_JSON = "application/json"
#: Flask's (werkzeug's) page for an unhandled exception, byte for byte.
ERROR_PAGE = (
    b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was "
    b"unable to complete your request. Either the server is overloaded or there is an error "
    b"in the application.</p>\n"
)


def _jsonify(value: Any) -> bytes:
    # Flask's jsonify outside debug mode: sorted keys, compact, one trailing newline.
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _with_type(headers: list[tuple[str, str]], content_type: str) -> list[tuple[str, str]]:
    if any(name.lower() == "content-type" for name, _ in headers):
        return headers
    return [("Content-Type", content_type), *headers]


def _plain(result: Any) -> tuple[list[tuple[str, str]], bytes]:
    """What Flask makes of a view's plain return value (not the template's dict form)."""
    if isinstance(result, (bytes, bytearray)):
        return [("Content-Type", _HTML)], bytes(result)
    if isinstance(result, str):
        return [("Content-Type", _HTML)], result.encode()
    if isinstance(result, (dict, list)):
        return [("Content-Type", _JSON)], _jsonify(result)
    raise TypeError(
        f"the handler returned {type(result).__name__}; return a dict "
        "{'statusCode', 'body', 'headers'}, str, bytes or None"
    )


def format_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Turn what ``handle`` returned into (status, headers, body) exactly as the official
    python3-http template (Flask) does.

    A dict is the template's form: ``statusCode`` (default 200), ``headers`` and ``body``; a
    dict body is sent as JSON, any other body as ``str(body)`` in text/html (so ``b"raw"``
    answers ``b'raw'`` and ``None`` answers ``None``) unless the headers say
    ``application/octet-stream``, when bytes go out as they are. ``None`` is an empty 200; a
    str or bytes is text/html; a ``(body, status[, headers])`` tuple is Flask's. One kindness
    over the original: the Content-Type header is found whatever its case (the original looks
    only for ``Content-type``).
    """
    if result is None:
        return 200, [("Content-Type", _HTML)], b""
    if isinstance(result, tuple) and len(result) in (2, 3):
        headers, data = _plain(result[0]) if not isinstance(result[0], dict) else (
            [("Content-Type", _JSON)], _jsonify(result[0]))
        if len(result) == 3 and isinstance(result[2], dict):
            given = [(str(k), str(v)) for k, v in result[2].items()]
            headers = [h for h in headers if h[0].lower() not in {k.lower() for k, _ in given}]
            headers += given
        return int(result[1]), headers, data
    if isinstance(result, dict):
        status = int(result.get("statusCode", 200))
        raw_headers = result.get("headers") or {}
        headers = [(str(k), str(v)) for k, v in dict(raw_headers).items()]
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        if content_type == "application/octet-stream" and "body" in result:
            body = result["body"]
            data = bytes(body) if isinstance(body, (bytes, bytearray)) else str(body).encode()
            return status, headers, data
        if "body" not in result:
            return status, _with_type(headers, _HTML), b""
        body = result["body"]
        if isinstance(body, dict):
            return status, _with_type(headers, _JSON), _jsonify(body)
        return status, _with_type(headers, _HTML), str(body).encode()
    headers, data = _plain(result)
    return 200, headers, data


def call_handler(
    handle: Handle, event: Event, name: str = ""
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run ``handle`` on ``event``; an exception becomes Flask's HTML 500 page, and the
    traceback goes to the log naming the function."""
    try:
        return format_response(handle(event, HandlerContext()))
    except Exception:
        log.exception("function %s raised", name or handle)
        return 500, [("Content-Type", _HTML)], ERROR_PAGE


def wsgi_app(handle: Handle, name: str = "", max_body: int = MAX_BODY) -> WSGIApp:
    """A WSGI app serving ``handle`` on every path and method."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            event = event_from_environ(environ, max_body)
        except BodyError as exc:
            status, headers, body = exc.status, [("Content-Type", "text/plain; charset=utf-8")], (
                f"{exc}\n".encode())
        else:
            status, headers, body = call_handler(handle, event, name)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers = [*headers, ("Content-Length", str(len(body)))]
        start_response(f"{status} {phrase}", headers)
        return [body]

    return app
