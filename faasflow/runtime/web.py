"""Request and response values shared by the flow app and the local gateway."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import attrs

from faasflow.runtime.server import StartResponse

__all__ = ["MAX_BODY", "BodyError", "WebRequest", "WebResponse", "error", "json_response",
           "read_body", "text"]

#: Largest request body read by default (bytes); ``FAASFLOW_MAX_BODY`` changes it.
MAX_BODY = 64 * 1024 * 1024
_CHUNK = 64 * 1024


class BodyError(Exception):
    """A request body that cannot be read: ``status`` is 400 or 413."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def read_body(environ: Mapping[str, Any], limit: int = MAX_BODY) -> bytes:
    """The whole request body of one WSGI request, whatever its framing.

    Behind the of-watchdog a body arrives with ``Transfer-Encoding: chunked`` and no
    ``Content-Length``; gunicorn and waitress de-chunk it and mark ``wsgi.input_terminated``, so
    the input is read to its end. A ``Content-Length`` is read exactly. A server that gives
    neither (wsgiref on a bodiless GET) hands over the raw socket, where reading to the end
    would wait for the client to hang up: that body is empty unless the request said it is
    chunked. Past ``limit`` bytes :class:`BodyError` 413 is raised.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    raw = str(environ.get("CONTENT_LENGTH") or "").strip()
    length: int | None = None
    if raw:
        if not raw.isdigit():
            raise BodyError(400, f"invalid Content-Length {raw!r}: send a whole number of bytes")
        length = int(raw)
        if length > limit:
            raise BodyError(413, _too_large(limit))
    to_end = bool(environ.get("wsgi.input_terminated")) or (
        length is None and "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    )
    if length is None and not to_end:
        return b""
    parts: list[bytes] = []
    total = 0
    while length is None or total < length:
        want = _CHUNK if length is None else min(_CHUNK, length - total)
        part = stream.read(want)
        if not part:
            break
        total += len(part)
        if total > limit:
            raise BodyError(413, _too_large(limit))
        parts.append(part)
    if length is not None and total < length:
        raise BodyError(400, f"request body of {total} bytes is shorter than its Content-Length "
                        f"{length}")
    return b"".join(parts)


def _too_large(limit: int) -> str:
    return (f"request body is over {limit} bytes; send less, or raise FAASFLOW_MAX_BODY "
            "(and the gateway's limit)")


@attrs.frozen
class WebRequest:
    """One HTTP request, read whole."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Header names in canonical ``Title-Case``."""
    body: bytes

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any], max_body: int = MAX_BODY) -> WebRequest:
        """Read one WSGI request; :class:`BodyError` when its body is malformed or too large."""
        headers: dict[str, str] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").title()] = str(value)
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = str(environ["CONTENT_TYPE"])
        body = read_body(environ, max_body)
        return cls(
            method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
            path=str(environ.get("PATH_INFO") or "/"),
            query=str(environ.get("QUERY_STRING", "")),
            headers=headers,
            body=body,
        )

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header by name, ignoring case."""
        value = self.headers.get(name.title())
        if value is None:
            lower = name.lower()
            for key, item in self.headers.items():
                if key.lower() == lower:
                    return item
            return default
        return value

    @property
    def args(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def wants_json(self) -> bool:
        return "application/json" in (self.header("Accept") or "")


@attrs.frozen
class WebResponse:
    """What a route answers."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        headers = list(self.headers)
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers.append(("Content-Length", str(len(self.body))))
        start_response(f"{self.status} {phrase}", headers)
        return [self.body]

    def with_headers(self, *headers: tuple[str, str]) -> WebResponse:
        return attrs.evolve(self, headers=self.headers + headers)


def text(body: str | bytes, status: int = 200, *headers: tuple[str, str]) -> WebResponse:
    data = body.encode() if isinstance(body, str) else body
    return WebResponse(status, data, (("Content-Type", "text/plain; charset=utf-8"), *headers))


def json_response(doc: Any, status: int = 200, *headers: tuple[str, str]) -> WebResponse:
    data = json.dumps(doc, indent=2).encode() + b"\n"
    return WebResponse(status, data, (("Content-Type", "application/json"), *headers))


def error(
    request: WebRequest | None,
    status: int,
    message: str,
    request_id: str | None = None,
    *headers: tuple[str, str],
) -> WebResponse:
    """An error answer: faas-flow's ``[ Failed ] <message>`` text, or JSON when the client
    accepts it; it names the request when there is one."""
    extra = list(headers)
    if request_id:
        extra.append(("X-Faas-Flow-Reqid", request_id))
    if request is not None and request.wants_json:
        doc: dict[str, Any] = {"error": message, "status": status}
        if request_id:
            doc["request_id"] = request_id
        return json_response(doc, status, *extra)
    return text(f"[ Failed ] {message}\n", status, *extra)
