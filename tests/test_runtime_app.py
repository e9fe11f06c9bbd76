"""FlowApp details: new-request authentication and where a flow's name comes from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.engine.message import sign_body
from faasflow.runtime.app import FlowApp, flow_name_from_host
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings


def define(flow: Any, context: Any) -> None:
    flow.sync_node().modify(lambda data: b"ok:" + data)


def served(environ: dict[str, str]) -> Server:
    return serve(FlowApp(define, Settings.from_env(environ))).start()


@pytest.fixture
def authenticated() -> Iterator[Server]:
    server = served({"FAASFLOW_FLOW_NAME": "auth", "FAASFLOW_AUTHENTICATE_REQUEST": "true",
                     "FAASFLOW_HMAC_SECRET": "s3cr3t"})
    yield server
    server.close()


def test_a_correctly_signed_request_runs(authenticated: Server) -> None:
    reply = requests.post(authenticated.url, data=b"hello", timeout=10,
                          headers={"X-Hub-Signature-256": sign_body(b"s3cr3t", b"hello")})
    assert (reply.status_code, reply.text) == (200, "ok:hello")


def test_an_unsigned_request_is_401(authenticated: Server) -> None:
    reply = requests.post(authenticated.url, data=b"hello", timeout=10)
    assert reply.status_code == 401
    assert "failed to authenticate request" in reply.text


def test_a_wrongly_signed_request_is_403(authenticated: Server) -> None:
    reply = requests.post(authenticated.url, data=b"hello", timeout=10,
                          headers={"X-Hub-Signature-256": sign_body(b"other", b"hello")})
    assert reply.status_code == 403


def test_authentication_without_a_secret_is_a_500_naming_the_secret(tmp_path: Path) -> None:
    server = served({"FAASFLOW_FLOW_NAME": "auth", "FAASFLOW_AUTHENTICATE_REQUEST": "true",
                     "FAASFLOW_SECRET_MOUNT_PATH": str(tmp_path)})
    try:
        reply = requests.post(server.url, data=b"x", timeout=10)
    finally:
        server.close()
    assert reply.status_code == 500
    assert "faasflow-hmac-secret" in reply.text


@pytest.mark.parametrize(("host", "name"), [
    ("greet.openfaas-fn:8080", "greet"),
    ("greet.openfaas-fn.svc.cluster.local", "greet"),
    ("my-flow:8080", "my-flow"),
    ("10.1.2.3:8080", None),
    ("127.0.0.1", None),
    ("localhost:8080", None),
    ("[::1]:8080", None),
    ("", None),
    (None, None),
])
def test_flow_name_from_the_host_header_only_when_it_is_a_name(
    host: str | None, name: str | None
) -> None:
    assert flow_name_from_host(host) == name


def test_the_environment_names_the_flow_whatever_the_host() -> None:
    server = served({"FAASFLOW_FLOW_NAME": "named"})
    try:
        reply = requests.get(f"{server.url}/?export-dag=true", timeout=10,
                             headers={"Host": "10.1.2.3:8080"})
    finally:
        server.close()
    assert reply.json()["name"] == "named"
