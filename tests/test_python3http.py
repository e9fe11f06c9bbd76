"""python3-http functions answer exactly as OpenFaaS's official template (Flask) does: every row
of the table in the reference, through a real socket."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from faasflow.runtime.python3http import ERROR_PAGE, Headers, QueryArgs, wsgi_app
from faasflow.runtime.server import Server, serve

HTML = "text/html; charset=utf-8"


def send(server: Server, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


def call(handle: Callable[[Any, Any], Any]) -> tuple[int, str | None, bytes]:
    server: Server = serve(wsgi_app(handle, "fn")).start()
    try:
        status, headers, body = send(server, "POST", "/", b"x")
        return status, headers.get("Content-Type"), body
    finally:
        server.close()


def returning(value: Any) -> Callable[[Any, Any], Any]:
    return lambda event, context: value


@pytest.mark.parametrize(("returned", "status", "content_type", "body"), [
    pytest.param({"statusCode": 200, "body": {"a": 1}}, 200, "application/json", b'{"a":1}\n',
                 id="dict-body-is-json"),
    pytest.param({"statusCode": 200, "body": {"b": 1, "a": [1, 2]}}, 200, "application/json",
                 b'{"a":[1,2],"b":1}\n', id="json-keys-sorted-compact-as-jsonify"),
    pytest.param({"statusCode": 200, "body": [1, 2]}, 200, HTML, b"[1, 2]",
                 id="list-body-is-its-str-as-html"),
    pytest.param({"statusCode": 200, "body": b"raw"}, 200, HTML, b"b'raw'",
                 id="bytes-body-is-its-str-as-html"),
    pytest.param({"statusCode": 201, "body": None}, 201, HTML, b"None",
                 id="none-body-with-a-status-is-None"),
    pytest.param("hello", 200, HTML, b"hello", id="str-is-html"),
    pytest.param(None, 200, HTML, b"", id="none-is-an-empty-200"),
    pytest.param({"statusCode": 202, "body": "text"}, 202, HTML, b"text",
                 id="dict-with-a-str-body-and-no-headers-is-html"),
    pytest.param({"statusCode": 204}, 204, HTML, b"", id="dict-without-a-body-is-empty"),
    pytest.param({"body": "x"}, 200, HTML, b"x", id="status-defaults-to-200"),
    pytest.param({"body": b"\x00\x01", "headers": {"Content-type": "application/octet-stream"}},
                 200, "application/octet-stream", b"\x00\x01", id="octet-stream-bytes-as-they-are"),
    pytest.param({"body": "<b>", "headers": {"Content-Type": "text/plain"}}, 200, "text/plain",
                 b"<b>", id="the-handler's-content-type-wins"),
    pytest.param(b"raw", 200, HTML, b"raw", id="plain-bytes-as-they-are"),
    pytest.param([1, 2], 200, "application/json", b"[1,2]\n", id="plain-list-is-jsonified"),
    pytest.param(("made", 418), 418, HTML, b"made", id="flask-tuple-sets-the-status"),
])
def test_a_return_value_answers_as_the_official_template(
    returned: Any, status: int, content_type: str, body: bytes
) -> None:
    assert call(returning(returned)) == (status, content_type, body)


def test_an_exception_answers_flasks_html_500_page() -> None:
    def handle(event: Any, context: Any) -> Any:
        raise ValueError("boom")

    assert call(handle) == (500, HTML, ERROR_PAGE)
    assert ERROR_PAGE.startswith(b"<!doctype html>\n<html lang=en>\n<title>500 Internal")


def test_a_return_value_flask_cannot_send_is_the_500_page() -> None:
    assert call(returning(42)) == (500, HTML, ERROR_PAGE)


def test_a_dict_body_keeps_the_handlers_headers_and_status() -> None:
    server = serve(wsgi_app(returning(
        {"statusCode": 201, "body": {"a": 1}, "headers": {"X-A": "1"}}), "fn")).start()
    try:
        status, headers, body = send(server, "GET", "/")
        assert (status, headers["X-A"], body) == (201, "1", b'{"a":1}\n')
    finally:
        server.close()


def test_the_event_carries_body_method_query_path_and_headers() -> None:
    seen: dict[str, Any] = {}

    def handle(event: Any, context: Any) -> str:
        seen.update(body=event.body, method=event.method, q=event.query.getlist("q"),
                    path=event.path, token=event.headers["x-token"], host=context.hostname)
        return "ok"

    server = serve(wsgi_app(handle, "fn")).start()
    try:
        assert send(server, "PUT", "/a/b?q=1&q=2", b"data", {"X-Token": "t"})[2] == b"ok"
    finally:
        server.close()
    assert {k: v for k, v in seen.items() if k != "host"} == {
        "body": b"data", "method": "PUT", "q": ["1", "2"], "path": "/a/b", "token": "t"}
    assert seen["host"]


def test_headers_ignore_case_and_query_keeps_every_value() -> None:
    headers = Headers([("X-Token", "abc")])
    assert (headers["x-token"], headers.get("X-TOKEN"), "x-token" in headers) == \
        ("abc", "abc", True)
    query = QueryArgs("a=1&a=2&b=")
    assert (query["a"], query.getlist("a"), query.get("b"), query.get("c")) == \
        ("1", ["1", "2"], "", None)


@pytest.fixture
def echo() -> Iterator[Server]:
    server = serve(wsgi_app(lambda event, context: event.body, "echo")).start()
    yield server
    server.close()


def test_a_chunked_body_reaches_the_handler_whole(echo: Server) -> None:
    connection = http.client.HTTPConnection(echo.host, echo.port, timeout=10)
    try:
        connection.request("POST", "/", body=iter([b"ab", b"cd", b"ef"]), encode_chunked=True)
        assert connection.getresponse().read() == b"abcdef"
    finally:
        connection.close()
