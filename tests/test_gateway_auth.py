"""Basic auth of ``faasflow up`` as OpenFaaS does it: ``/system/*`` needs the credentials,
``/function/*``, ``/async-function/*`` and ``/healthz`` stay open; and the signing key a user
configured wins over the generated one."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from faasflow.engine.message import Message
from faasflow.runtime.process import GatewayProcess

ECHO = """
    def handle(event, context):
        return event.body
"""
CHAIN = """
    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda data: data + b"-a")
        dag.node("b").apply("echo").modify(lambda data: data + b"-b")
        dag.edge("a", "b")
"""


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    for name, source in {"echo": ECHO, "chain": CHAIN}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    path = tmp_path / "stack.yml"
    path.write_text(textwrap.dedent("""
        provider:
          name: openfaas
        functions:
          echo:
            lang: python3-http
            handler: ./echo
          chain:
            lang: faasflow
            handler: ./chain
    """).lstrip())
    return path


@pytest.fixture
def guarded(stack: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(stack, data_dir=stack.parent / "data", extra=["--basic-auth"],
                        processes=1) as process:
        yield process


def password(gateway: GatewayProcess) -> str:
    match = re.search(r"basic auth: user admin, password (\S+)", gateway.text)
    assert match, gateway.text
    return match.group(1)


def login_check(gateway: GatewayProcess, user: str, secret: str) -> int:
    """What ``faas-cli login`` does to check the credentials."""
    return requests.get(gateway.url + "/system/functions", auth=(user, secret),
                        timeout=30).status_code


def test_login_passes_with_the_generated_password(guarded: GatewayProcess) -> None:
    assert login_check(guarded, "admin", password(guarded)) == 200


def test_login_fails_with_a_wrong_password(guarded: GatewayProcess) -> None:
    assert login_check(guarded, "admin", "wrong") == 401


def test_system_route_without_credentials_is_401_with_a_basic_challenge(
    guarded: GatewayProcess,
) -> None:
    for route in ("/system/functions", "/system/info", "/system/logs?name=echo",
                  "/system/secrets", "/system/queue", "/system/nothing"):
        reply = guarded.get(route)
        assert reply.status_code == 401, route
        assert reply.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'


def test_functions_and_health_stay_open(guarded: GatewayProcess) -> None:
    assert guarded.post("/function/echo.openfaas-fn", data=b"open").content == b"open"
    assert guarded.post("/async-function/echo", data=b"x").status_code == 202
    assert guarded.get("/healthz").status_code == 200


def test_credentials_are_secret_files_of_the_owner_only(guarded: GatewayProcess,
                                                        stack: Path) -> None:
    secrets = stack.parent / "data" / "secrets"
    assert (secrets / "basic-auth-user").read_text() == "admin"
    assert (secrets / "basic-auth-password").read_text() == password(guarded)
    assert oct(os.stat(secrets / "basic-auth-password").st_mode & 0o777) == "0o600"


def test_the_password_is_printed_only_when_it_is_created(stack: Path) -> None:
    data = stack.parent / "data"
    with GatewayProcess(stack, data_dir=data, extra=["--basic-auth"], processes=1) as first:
        created = password(first)
    with GatewayProcess(stack, data_dir=data, extra=["--basic-auth"], processes=1) as second:
        assert created not in second.text
        assert "basic auth: on" in second.text
        assert login_check(second, "admin", created) == 200


def test_basic_auth_env_turns_it_on(stack: Path) -> None:
    secrets = stack.parent / "mounted"
    secrets.mkdir()
    (secrets / "basic-auth-user").write_text("alice\n")
    (secrets / "basic-auth-password").write_text("hunter22\n")
    env = {**os.environ, "basic_auth": "true", "FAASFLOW_SECRET_MOUNT_PATH": str(secrets)}
    with GatewayProcess(stack, data_dir=stack.parent / "data", env=env, processes=1) as gateway:
        assert "hunter22" not in gateway.text
        assert login_check(gateway, "alice", "hunter22") == 200
        assert login_check(gateway, "admin", "hunter22") == 401


def test_without_basic_auth_the_system_api_is_open(stack: Path) -> None:
    with GatewayProcess(stack, data_dir=stack.parent / "data", processes=1) as gateway:
        assert gateway.get("/system/functions").status_code == 200
        assert "basic auth" not in gateway.text


def test_a_configured_hmac_secret_signs_the_flows(stack: Path) -> None:
    secrets = stack.parent / "data" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "faasflow-hmac-secret").write_text("configured-key\n")
    with GatewayProcess(stack, data_dir=stack.parent / "data", processes=1) as gateway:
        reply = gateway.post("/function/chain", data=b"x", headers={"X-Faas-Flow-Wait": "30"})
        assert (reply.status_code, reply.content) == (200, b"x-a-b")
        message = Message("fw-1", "chain", "0" * 64, "0_2_b", data=b"x")
        forward = "/function/chain/flow/fw-1/forward"
        assert gateway.post(forward, data=message.encode(b"another-key")).status_code == 403
        accepted = gateway.post(forward, data=message.encode(b"configured-key"))
        assert accepted.status_code not in (401, 403), accepted.text
    assert not (stack.parent / "data" / "hmac-secret").exists()
