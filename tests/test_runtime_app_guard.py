"""The flow app's guards: with request authentication on, control routes, records and the
request list need a signature of their path and body; callback URLs are http(s) to allowed
hosts; garbage in headers, query or body answers 4xx, never 500."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from faasflow.engine.message import sign_body
from faasflow.runtime.app import FlowApp
from faasflow.runtime.guard import signed_target
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings

KEY = b"s3cr3t"


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(lambda data: data + b"-a")
    dag.node("b").modify(lambda data: data + b"-b")
    dag.edge("a", "b")


@contextlib.contextmanager
def served(**environ: str) -> Iterator[Server]:
    app = FlowApp(define, Settings.from_env({"FAASFLOW_FLOW_NAME": "guarded", **environ}))
    server = serve(app).start()
    try:
        yield server
    finally:
        server.close()
        app.close()


def signature(path: str, query: str = "", body: bytes = b"") -> dict[str, str]:
    return {"X-Hub-Signature-256": sign_body(KEY, signed_target(path, query, body))}


@pytest.fixture(scope="module")
def locked() -> Iterator[Server]:
    with served(FAASFLOW_AUTHENTICATE_REQUEST="true", FAASFLOW_HMAC_SECRET=KEY.decode()) as server:
        yield server


@pytest.fixture(scope="module")
def request_id(locked: Server) -> str:
    reply = requests.post(locked.url, data=b"x", timeout=10, headers={
        "X-Hub-Signature-256": sign_body(KEY, b"x"), "X-Faas-Flow-Wait": "10"})
    assert reply.status_code == 200, reply.text
    return reply.headers["X-Faas-Flow-Reqid"]


@pytest.fixture(scope="module")
def open_app() -> Iterator[Server]:
    with served() as server:
        yield server


# -- authentication of control routes, records and the list -----------------------------------


def test_an_unsigned_record_read_is_401(locked: Server, request_id: str) -> None:
    reply = requests.get(f"{locked.url}/flow/{request_id}", timeout=10)
    assert reply.status_code == 401
    assert "X-Hub-Signature-256" in reply.text


def test_a_signed_record_read_answers_the_record(locked: Server, request_id: str) -> None:
    path = f"/flow/{request_id}"
    reply = requests.get(locked.url + path, headers=signature(path), timeout=10)
    assert (reply.status_code, reply.json()["output"]) == (200, "x-a-b")


def test_a_signature_of_another_path_is_403(locked: Server, request_id: str) -> None:
    reply = requests.get(f"{locked.url}/flow/{request_id}", headers=signature("/flow/other"),
                         timeout=10)
    assert reply.status_code == 403


def test_an_unsigned_request_list_is_401(locked: Server) -> None:
    assert requests.get(f"{locked.url}/flow", timeout=10).status_code == 401


def test_a_signed_request_list_answers(locked: Server, request_id: str) -> None:
    reply = requests.get(f"{locked.url}/flow", headers=signature("/flow"), timeout=10)
    assert request_id in {r["id"] for r in reply.json()["requests"]}


@pytest.mark.parametrize("action", ["pause", "resume", "stop", "state"])
def test_an_unsigned_control_route_is_401(locked: Server, request_id: str, action: str) -> None:
    reply = requests.post(f"{locked.url}/flow/{request_id}/{action}", timeout=10)
    assert reply.status_code == 401


@pytest.mark.parametrize("query", ["pause-flow", "stop-flow", "resume-flow", "state"])
def test_an_unsigned_control_query_is_401(locked: Server, request_id: str, query: str) -> None:
    assert requests.get(f"{locked.url}/?{query}={request_id}", timeout=10).status_code == 401


def test_a_signed_control_query_answers(locked: Server, request_id: str) -> None:
    query = f"state={request_id}"
    reply = requests.get(f"{locked.url}/?{query}", headers=signature("/", query), timeout=10)
    assert (reply.status_code, reply.text) == (200, "FINISHED")


def test_a_signed_control_route_signs_its_body_too(locked: Server, request_id: str) -> None:
    path = f"/flow/{request_id}/state"
    reply = requests.post(locked.url + path, data=b"extra", headers=signature(path), timeout=10)
    assert reply.status_code == 403
    reply = requests.post(locked.url + path, data=b"extra",
                          headers=signature(path, body=b"extra"), timeout=10)
    assert reply.status_code == 200


def test_without_authentication_records_stay_open(open_app: Server) -> None:
    assert requests.get(f"{open_app.url}/flow", timeout=10).status_code == 200


# -- callback URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://[::1", "http://host:99999/x", "ftp://example.com/x",
                                 "file:///etc/passwd", "gopher://x", "http:///nohost",
                                 "javascript:alert(1)"])
def test_a_bad_callback_url_is_400(open_app: Server, url: str) -> None:
    reply = requests.post(open_app.url, data=b"x", timeout=10,
                          headers={"X-Faas-Flow-Callback-Url": url})
    assert reply.status_code == 400, reply.text
    assert "X-Faas-Flow-Callback-Url" in reply.text


def test_a_link_local_callback_is_refused_by_default(open_app: Server) -> None:
    reply = requests.post(open_app.url, data=b"x", timeout=10, headers={
        "X-Faas-Flow-Callback-Url": "http://169.254.169.254/latest/meta-data"})
    assert reply.status_code == 400
    assert "FAASFLOW_CALLBACK_HOSTS" in reply.text


def test_a_callback_to_a_host_outside_the_allow_list_is_400_naming_the_variable() -> None:
    # refused before any connection is tried
    with served(FAASFLOW_CALLBACK_HOSTS="*.svc.cluster.local,hooks.example.com:443") as server:
        reply = requests.post(server.url, data=b"x", timeout=10, headers={
            "X-Faas-Flow-Callback-Url": "http://127.0.0.1:2379/v3/kv/put"})
    assert reply.status_code == 400
    assert "FAASFLOW_CALLBACK_HOSTS" in reply.text
    assert "'127.0.0.1'" in reply.text


@pytest.mark.parametrize("allowed", ["127.0.0.*", "127.0.0.1:{port}", "*.svc.cluster.local,127.*"])
def test_a_callback_to_an_allowed_host_is_made(allowed: str) -> None:
    got: list[bytes] = []
    done = threading.Event()

    def receiver(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        got.append(environ["wsgi.input"].read())
        done.set()
        start_response("200 OK", [])
        return [b""]

    hook = serve(receiver).start()
    try:
        with served(FAASFLOW_CALLBACK_HOSTS=allowed.format(port=hook.port)) as server:
            reply = requests.post(server.url, data=b"x", timeout=10,
                                  headers={"X-Faas-Flow-Callback-Url": f"{hook.url}/done"})
            assert reply.status_code == 200
            assert done.wait(10)
    finally:
        hook.close()
    assert got == [b"x-a-b"]


# -- garbage ------------------------------------------------------------------------------------


def raw(server: Server, method: str, target: str, headers: list[tuple[str, bytes]],
        body: bytes = b"") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


GARBAGE: list[tuple[str, str, list[tuple[str, bytes]], bytes]] = [
    ("POST", "/", [("X-Faas-Flow-Wait", b"nan")], b"x"),
    ("POST", "/", [("X-Faas-Flow-Wait", b"1e999")], b"x"),
    ("POST", "/", [("X-Faas-Flow-Wait", b"-3")], b"x"),
    ("POST", "/", [("X-Faas-Flow-Reqid", "r\u00e9q".encode("latin-1"))], b"x"),
    ("POST", "/", [("X-Faas-Flow-Reqid", b"../../etc")], b"x"),
    ("POST", "/", [("X-Faas-Flow-Callback-Url", "http://h\u00e9/".encode("latin-1"))], b"x"),
    ("GET", "/?pause-flow=", [], b""),
    ("GET", "/?state=%ff%fe", [], b""),
    ("GET", "/?export-dag=yes", [], b""),
    ("GET", "/flow/%00/state", [], b""),
    ("POST", "/flow/x/explode", [], b""),
    ("DELETE", "/flow/x", [], b""),
    ("POST", "/flow/x/forward", [], b"{"),
    ("POST", "/flow/x/forward", [], json.dumps({"id": "x", "sign": "s\u00e9"}).encode()),
    ("POST", "/flow/x/forward", [], b"[" * 1000 + b"]" * 1000),
    ("POST", "/flow/x/forward", [], b"\xff\xfe\x00"),
]


@pytest.mark.parametrize(("method", "target", "headers", "body"), GARBAGE,
                         ids=[f"{m} {t} {h[0][0] if h else ''} {b[:12]!r}"
                              for m, t, h, b in GARBAGE])
def test_garbage_answers_4xx_not_500(
    open_app: Server, method: str, target: str, headers: list[tuple[str, bytes]], body: bytes
) -> None:
    status, text = raw(open_app, method, target, headers, body)
    assert 400 <= status < 500, (status, text)
