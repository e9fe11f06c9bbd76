"""The local gateway as faas-cli 0.16-0.18 and the OpenFaaS CE gateway use it.

One ``faasflow up`` process serves a stack for the whole module; every request below has the
shape faas-cli sends (paths with ``.openfaas-fn``, faas-cli's JSON bodies) and goes over a real
socket. See /work/shared/reference/openfaas-real.md for what real OpenFaaS answers.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import stat
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from test_gateway import CallbackServer, wait_for

from faasflow.runtime.process import GatewayProcess

HANDLERS = {
    "echo": """
        def handle(event, context):
            return event.body
    """,
    "seen": """
        def handle(event, context):
            names = ["X-Forwarded-For", "X-Forwarded-Host", "X-Call-Id", "X-Start-Time"]
            return {"statusCode": 200, "body": {n: event.headers.get(n) for n in names}}
    """,
    "talker": """
        import logging

        def handle(event, context):
            print("said " + event.body.decode())
            logging.getLogger("talker").warning("warned " + event.body.decode())
            return "ok"
    """,
    "secretive": """
        import os
        import pathlib

        def handle(event, context):
            mount = pathlib.Path(os.environ.get("FAASFLOW_SECRET_MOUNT_PATH",
                                                "/var/openfaas/secrets"))
            return (mount / event.body.decode()).read_text()
    """,
    "flaky": """
        import os
        import pathlib

        def handle(event, context):
            attempt = event.headers.get("X-Faas-Flow-Attempt")
            with open(pathlib.Path(os.environ["RECORD_DIR"]) / "flaky", "a") as out:
                out.write(event.headers.get("X-Call-Id") + " " + attempt + "\\n")
            if int(attempt) < 3:
                return {"statusCode": 503, "body": "not yet"}
            return "third time"
    """,
    "down": """
        def handle(event, context):
            return {"statusCode": 503, "body": "always down"}
    """,
    "teamfn": """
        def handle(event, context):
            return "team " + event.body.decode()
    """,
    "hello": """
        def define(flow, context):
            flow.sync_node().modify(lambda data: b"Hello " + data)
    """,
    "noisy": """
        def say(node):
            def modify(data):
                print("noisy " + node)
                return data
            return modify

        def define(flow, context):
            dag = flow.dag()
            dag.node("a").modify(say("a"))
            dag.node("b").modify(say("b"))
            dag.edge("a", "b")
    """,
}


def write_stack(root: Path) -> Path:
    for name, source in HANDLERS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    (root / "records").mkdir()
    (root / "flaky.yml").write_text(f"environment:\n  RECORD_DIR: {root / 'records'}\n")
    stack = root / "stack.yml"
    stack.write_text(textwrap.dedent("""
        version: 1.0
        provider:
          name: openfaas
          gateway: http://127.0.0.1:8080
        functions:
          echo:
            lang: python3-http
            handler: ./echo
            image: example/echo:0.1
            labels:
              team: core
            annotations:
              topic: echoes
            limits:
              memory: 128Mi
          seen:
            lang: python3-http
            handler: ./seen
          talker:
            lang: python3-http
            handler: ./talker
          secretive:
            lang: python3-http
            handler: ./secretive
            secrets:
              - api-key
          flaky:
            lang: python3-http
            handler: ./flaky
            environment:
              RECORD_DIR: /nowhere
            environment_file:
              - flaky.yml
          down:
            lang: python3-http
            handler: ./down
          teamfn:
            lang: python3-http
            handler: ./teamfn
            namespace: team-a
          hello:
            lang: faasflow
            handler: ./hello
          noisy:
            lang: faasflow
            handler: ./noisy
          nodefn:
            lang: node20
            handler: ./nodefn
    """).lstrip())
    return stack


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openfaas")


@pytest.fixture(scope="module")
def gateway(root: Path) -> Iterator[GatewayProcess]:
    stack = write_stack(root)
    secrets = root / "secrets"
    secrets.mkdir()
    (secrets / "api-key").write_text("s3cret\n")
    with GatewayProcess(stack, data_dir=root / "data",
                        extra=["--secrets-dir", str(secrets), "--max-attempts", "3"]) as process:
        yield process


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- /function and /async-function as faas-cli 0.18 calls them ------------------------------


def test_function_with_the_default_namespace_is_called(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/echo.openfaas-fn", data=b"hi")
    assert (reply.status_code, reply.content) == (200, b"hi")


def test_function_without_a_namespace_is_called_as_faas_cli_0_16_does(
    gateway: GatewayProcess,
) -> None:
    assert gateway.post("/function/echo", data=b"old").content == b"old"


def test_function_path_and_query_after_the_namespace_reach_the_handler(
    gateway: GatewayProcess,
) -> None:
    reply = gateway.post("/function/hello.openfaas-fn", data=b"you")
    assert reply.content == b"Hello you"


def test_function_in_its_own_namespace_is_called_there_only(gateway: GatewayProcess) -> None:
    assert gateway.post("/function/teamfn.team-a", data=b"a").content == b"team a"
    reply = gateway.post("/function/teamfn.openfaas-fn", data=b"a")
    assert reply.status_code == 404
    assert "'openfaas-fn'" in reply.text


def test_unknown_namespace_is_404_naming_it(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/echo.elsewhere", data=b"x")
    assert reply.status_code == 404
    assert "'elsewhere'" in reply.text


def test_function_answers_carry_start_time_duration_and_served_by(
    gateway: GatewayProcess,
) -> None:
    before = time.time_ns()
    reply = gateway.post("/function/echo.openfaas-fn", data=b"t")
    assert before <= int(reply.headers["X-Start-Time"]) <= time.time_ns()
    assert 0 <= float(reply.headers["X-Duration-Seconds"]) < 10
    assert reply.headers["X-Served-By"].startswith("faasflow-up/")


def test_function_sees_forwarded_for_and_forwarded_host(gateway: GatewayProcess) -> None:
    doc = gateway.post("/function/seen.openfaas-fn", data=b"",
                       headers={"X-Forwarded-For": "10.0.0.9"}).json()
    assert doc["X-Forwarded-For"] == "10.0.0.9, 127.0.0.1"
    assert doc["X-Forwarded-Host"] == gateway.url.split("://")[1]
    assert doc["X-Call-Id"] and doc["X-Start-Time"].isdigit()


def test_async_function_with_the_namespace_answers_202_and_calls_back(
    gateway: GatewayProcess,
) -> None:
    callbacks = CallbackServer()
    try:
        reply = gateway.post("/async-function/echo.openfaas-fn", data=b"later",
                             headers={"X-Callback-Url": callbacks.url})
        assert reply.status_code == 202
        _, headers, body = callbacks.next()
        assert body == b"later"
        assert headers["X-Call-Id"] == reply.headers["X-Call-Id"]
        assert headers["X-Function-Name"] == "echo"
    finally:
        callbacks.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_async_function_is_post_only(gateway: GatewayProcess, method: str) -> None:
    reply = requests.request(method, gateway.url + "/async-function/echo.openfaas-fn",
                             timeout=30)
    assert reply.status_code == 405
    assert reply.headers["Allow"] == "POST"


def test_async_function_with_an_unparsable_callback_url_is_400(gateway: GatewayProcess) -> None:
    reply = gateway.post("/async-function/echo", data=b"x",
                         headers={"X-Callback-Url": "http://[::1"})
    assert reply.status_code == 400
    assert "X-Callback-Url" in reply.text


def test_reused_call_id_with_the_same_call_is_the_same_job(gateway: GatewayProcess) -> None:
    headers = {"X-Call-Id": "same-call-1"}
    first = gateway.post("/async-function/flaky", data=b"once", headers=headers)
    second = gateway.post("/async-function/flaky", data=b"once", headers=headers)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.headers["X-Call-Id"] == second.headers["X-Call-Id"] == "same-call-1"
    record = Path(gateway.stack.parent / "records" / "flaky")
    wait_for(lambda: record.exists() and "same-call-1 3" in record.read_text(),
             what="the third attempt")
    time.sleep(0.3)
    lines = [line for line in record.read_text().splitlines() if line.startswith("same-call-1")]
    assert lines == ["same-call-1 1", "same-call-1 2", "same-call-1 3"]


def test_reused_call_id_with_another_body_is_409_naming_the_header(
    gateway: GatewayProcess,
) -> None:
    headers = {"X-Call-Id": "same-call-2"}
    assert gateway.post("/async-function/echo", data=b"a", headers=headers).status_code == 202
    reply = gateway.post("/async-function/echo", data=b"b", headers=headers)
    assert reply.status_code == 409
    assert "X-Call-Id" in reply.text
    assert "UNIQUE" not in reply.text


def test_redeliveries_carry_the_attempt_and_are_logged_with_call_id_and_function(
    gateway: GatewayProcess,
) -> None:
    gateway.post("/async-function/flaky", data=b"x", headers={"X-Call-Id": "attempts-1"})
    wait_for(lambda: "attempts-1" in gateway.text and "attempt 2 of 3" in gateway.text,
             what="the logged retry")
    line = next(line for line in gateway.output if "attempts-1" in line and "attempt 1" in line)
    assert "faasflow.gateway" in line and "flaky" in line and "status 503" in line


def test_call_failing_every_attempt_is_a_dead_letter(gateway: GatewayProcess) -> None:
    before = gateway.get("/system/queue").json()["dead"]
    gateway.post("/async-function/down", data=b"x", headers={"X-Call-Id": "dead-1"})
    wait_for(lambda: gateway.get("/system/queue").json()["dead"] == before + 1,
             what="the dead letter")
    assert any("dead letter" in line and "dead-1" in line and "down" in line
               for line in gateway.output)


def test_other_language_is_skipped_with_one_warning(gateway: GatewayProcess) -> None:
    warnings = [line for line in gateway.output if "nodefn" in line and "node20" in line]
    assert len(warnings) == 1
    reply = gateway.post("/function/nodefn.openfaas-fn", data=b"x")
    assert reply.status_code == 404
    assert "--upstream-gateway" in reply.text


# -- /system as faas-cli reads it ------------------------------------------------------------


def test_system_info_has_faas_providers_shape(gateway: GatewayProcess) -> None:
    doc = gateway.get("/system/info").json()
    assert set(doc) == {"provider", "version", "arch"}
    assert set(doc["provider"]) == {"provider", "orchestration", "version"}
    assert doc["provider"]["provider"] == "faasflow"
    assert set(doc["provider"]["version"]) == {"sha", "release"}
    assert set(doc["version"]) == {"sha", "release"}
    assert isinstance(doc["arch"], str) and doc["arch"]


def test_system_namespaces_lists_the_stacks_namespaces(gateway: GatewayProcess) -> None:
    assert gateway.get("/system/namespaces").json() == ["openfaas-fn", "team-a"]


def test_system_functions_in_a_namespace_has_function_status_fields(
    gateway: GatewayProcess,
) -> None:
    functions = {f["name"]: f for f in
                 gateway.get("/system/functions?namespace=openfaas-fn").json()}
    assert "teamfn" not in functions and "nodefn" not in functions
    echo = functions["echo"]
    assert echo["image"] == "example/echo:0.1"
    assert echo["namespace"] == "openfaas-fn"
    assert echo["labels"] == {"team": "core"}
    assert echo["annotations"] == {"topic": "echoes"}
    assert echo["limits"] == {"memory": "128Mi"}
    assert isinstance(echo["replicas"], int) and echo["replicas"] >= 1
    assert echo["availableReplicas"] == echo["replicas"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", echo["createdAt"])


def test_system_function_describes_env_secrets_and_counts(gateway: GatewayProcess) -> None:
    gateway.post("/function/flaky.openfaas-fn", data=b"", headers={"X-Faas-Flow-Attempt": "3"})
    doc = gateway.get("/system/function/flaky?namespace=openfaas-fn").json()
    assert doc["envVars"]["RECORD_DIR"].endswith("records")  # environment_file wins
    assert doc["envProcess"] == "python3-http"
    assert doc["invocationCount"] >= 1
    assert gateway.get("/system/function/secretive").json()["secrets"] == ["api-key"]


def test_system_function_in_another_namespace_is_404(gateway: GatewayProcess) -> None:
    assert gateway.get("/system/function/echo?namespace=team-a").status_code == 404
    reply = gateway.get("/system/function/echo?namespace=nowhere")
    assert reply.status_code == 404
    assert "'nowhere'" in reply.text


def test_system_secrets_lists_names_only(gateway: GatewayProcess) -> None:
    secrets = gateway.get("/system/secrets?namespace=openfaas-fn").json()
    assert {"name": "api-key", "namespace": "openfaas-fn"} in secrets
    assert "s3cret" not in json.dumps(secrets)


def test_declared_secret_is_readable_by_the_handler(gateway: GatewayProcess) -> None:
    assert gateway.post("/function/secretive", data=b"api-key").text.strip() == "s3cret"


def test_secret_created_as_faas_cli_does_is_listed_and_readable(gateway: GatewayProcess) -> None:
    body = {"name": "made-here", "value": "v4lue", "namespace": "openfaas-fn"}
    assert gateway.post("/system/secrets", json=body).status_code == 201
    assert gateway.post("/system/secrets", json=body).status_code == 409
    names = [s["name"] for s in gateway.get("/system/secrets").json()]
    assert "made-here" in names
    assert gateway.post("/function/secretive", data=b"made-here").text == "v4lue"
    reply = requests.delete(gateway.url + "/system/secrets", json={"name": "made-here"},
                            timeout=30)
    assert reply.status_code == 202


def test_secret_from_a_file_as_faas_cli_sends_it_is_decoded(gateway: GatewayProcess) -> None:
    body = {"name": "from-file", "rawValue": base64.b64encode(b"file bytes").decode(),
            "namespace": "openfaas-fn"}
    assert gateway.post("/system/secrets", json=body).status_code == 201
    assert gateway.post("/function/secretive", data=b"from-file").text == "file bytes"


def test_secret_with_a_path_in_its_name_is_400(gateway: GatewayProcess) -> None:
    reply = gateway.post("/system/secrets", json={"name": "../escape", "value": "x"})
    assert reply.status_code == 400


def test_system_logs_answers_ndjson_lines_tagged_with_the_call(gateway: GatewayProcess) -> None:
    gateway.post("/function/talker", data=b"first", headers={"X-Call-Id": "talk-1"})
    gateway.post("/function/talker", data=b"second", headers={"X-Call-Id": "talk-2"})

    def lines() -> list[dict[str, Any]]:
        found = ndjson(gateway.get("/system/logs?name=talker&namespace=openfaas-fn&tail=-1"
                                   "&follow=false").text)
        return found if any("warned second" in line["text"] for line in found) else []

    found = wait_for(lines, what="the talker's lines")
    said = next(line for line in found if line["text"] == "said first")
    assert set(said) >= {"name", "namespace", "instance", "timestamp", "text"}
    assert (said["name"], said["namespace"], said["call_id"]) == ("talker", "openfaas-fn",
                                                                  "talk-1")
    assert said["instance"]
    assert not any("said" in line["text"] for line in ndjson(
        gateway.get("/system/logs?name=echo").text))


def test_the_terminal_shows_each_line_under_its_function(gateway: GatewayProcess) -> None:
    gateway.post("/function/talker", data=b"on-screen")

    def shown() -> list[str]:
        return [line for line in gateway.text.splitlines() if line.endswith("said on-screen")]

    lines = wait_for(shown, what="the talker's line on the terminal")
    assert re.match(r"^talker +\| said on-screen$", lines[0]), lines


def test_flow_log_lines_carry_the_request_id(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/noisy", data=b"x",
                         headers={"X-Faas-Flow-Reqid": "noisy-1", "X-Faas-Flow-Wait": "30"})
    assert reply.status_code == 200

    def lines() -> dict[str, dict[str, Any]]:
        found = {line["text"]: line for line in ndjson(gateway.get("/system/logs?name=noisy")
                                                        .text)}
        return found if {"noisy a", "noisy b"} <= set(found) else {}

    found = wait_for(lines, what="both nodes' lines")
    assert found["noisy a"]["request_id"] == found["noisy b"]["request_id"] == "noisy-1"
    assert (found["noisy a"]["node"], found["noisy b"]["node"]) == ("0_1_a", "0_2_b")


def test_flow_log_lines_of_a_request_started_without_an_id_carry_the_one_it_got(
    gateway: GatewayProcess,
) -> None:
    reply = gateway.post("/function/noisy", data=b"x", headers={"X-Faas-Flow-Wait": "30"})
    assert reply.status_code == 200
    rid = reply.headers["X-Faas-Flow-Reqid"]

    def lines() -> dict[str, dict[str, Any]]:
        found = {line["text"]: line for line in ndjson(gateway.get("/system/logs?name=noisy")
                                                        .text) if line.get("request_id") == rid}
        return found if {"noisy a", "noisy b"} <= set(found) else {}

    found = wait_for(lines, what="the first node's line under the new request's id")
    assert found["noisy a"]["node"] == "0_1_a"


def test_system_logs_tail_and_since_select_lines(gateway: GatewayProcess) -> None:
    gateway.post("/function/talker", data=b"tail-me")
    wait_for(lambda: "said tail-me" in gateway.get("/system/logs?name=talker").text,
             what="the line")
    last = ndjson(gateway.get("/system/logs?name=talker&tail=1").text)
    assert len(last) == 1
    since = last[0]["timestamp"]
    assert all(line["timestamp"] >= since for line in
               ndjson(gateway.get(f"/system/logs?name=talker&since={since}").text))
    future = "2999-01-01T00:00:00Z"
    assert gateway.get(f"/system/logs?name=talker&since={future}").text == ""


def test_system_logs_follow_streams_new_lines(gateway: GatewayProcess) -> None:
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def follow() -> None:
        with requests.get(gateway.url + "/system/logs?name=talker&tail=0&follow=true",
                          stream=True, timeout=30) as reply:
            for raw in reply.iter_lines():
                if raw:
                    got.append(json.loads(raw))
                    if "said streamed" in got[-1]["text"]:
                        done.set()
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)
    gateway.post("/function/talker", data=b"streamed")
    assert done.wait(20), got
    assert all(line["name"] == "talker" for line in got)


@pytest.mark.parametrize("query", ["", "?name=", "?name=talker&tail=x",
                                   "?name=talker&since=yesterday"])
def test_system_logs_with_bad_parameters_is_400(gateway: GatewayProcess, query: str) -> None:
    assert gateway.get(f"/system/logs{query}").status_code == 400


def test_system_logs_of_an_unknown_function_is_404(gateway: GatewayProcess) -> None:
    assert gateway.get("/system/logs?name=nope").status_code == 404


def test_scale_function_as_faas_cli_sends_it_sets_worker_processes(
    gateway: GatewayProcess,
) -> None:
    body = {"serviceName": "teamfn", "namespace": "team-a", "replicas": 3}
    reply = gateway.post("/system/scale-function/teamfn", json=body)
    assert reply.status_code == 202
    wait_for(lambda: gateway.get("/system/function/teamfn").json()["replicas"] == 3,
             what="three replicas")
    replies = {gateway.post("/function/teamfn.team-a", data=b"x").headers["X-Served-By"]
               for _ in range(12)}
    assert len(replies) == 3
    gateway.post("/system/scale-function/teamfn", json={**body, "replicas": 1})
    wait_for(lambda: gateway.get("/system/function/teamfn").json()["replicas"] == 1,
             what="one replica")


@pytest.mark.parametrize("body", [b"", b"{}", b'{"replicas": 0}', b'{"replicas": "2"}',
                                  b'{"replicas": 1000}', b"not json"])
def test_scale_function_with_a_bad_body_is_400(gateway: GatewayProcess, body: bytes) -> None:
    reply = gateway.post("/system/scale-function/teamfn", data=body)
    assert reply.status_code == 400
    assert "replicas" in reply.text


# -- hardening -------------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                                     b"HELLO\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                                     b"GET " + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"])
def test_garbage_instead_of_http_answers_the_failed_text(gateway: GatewayProcess,
                                                         garbage: bytes) -> None:
    host, port = gateway.url.split("://")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(garbage)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 4") or head.startswith(b"HTTP/1.1 5")
    assert b"text/plain" in head
    assert body.startswith(b"[ Failed ] ")
    assert b"<html" not in body.lower()


def test_data_directory_is_the_owners_only(gateway: GatewayProcess, root: Path) -> None:
    gateway.post("/function/hello", data=b"x")
    data = root / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.rglob("*"):
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
