"""Request and response values shared by the flow app and the local gateway."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import attrs

from faasflow.runtime.server import StartResponse

__all__ = ["Request", "Response", "error", "json_response", "text"]


@attrs.frozen
class Request:
    """One HTTP request, read whole."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Header names in canonical ``Title-Case``."""
    body: bytes

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> Request:
        headers: dict[str, str] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").title()] = str(value)
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = str(environ["CONTENT_TYPE"])
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
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
class Response:
    """What a route answers."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        start_response(f"{self.status} {phrase}", list(self.headers))
        return [self.body]

    def with_headers(self, *headers: tuple[str, str]) -> Response:
        return attrs.evolve(self, headers=self.headers + headers)


def text(body: str | bytes, status: int = 200, *headers: tuple[str, str]) -> Response:
    data = body.encode() if isinstance(body, str) else body
    return Response(status, data, (("Content-Type", "text/plain; charset=utf-8"), *headers))


def json_response(doc: Any, status: int = 200, *headers: tuple[str, str]) -> Response:
    data = json.dumps(doc, indent=2).encode() + b"\n"
    return Response(status, data, (("Content-Type", "application/json"), *headers))


def error(
    request: Request | None,
    status: int,
    message: str,
    request_id: str | None = None,
    *headers: tuple[str, str],
) -> Response:
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
