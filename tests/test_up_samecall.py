"""A flow's call of a python3-http function served by its own worker, without a socket.

Two ``faasflow up`` processes serve the same stack, one as it runs by default (the worker calls
the function in-process, :mod:`faasflow.runtime.samecall`) and one with
``FAASFLOW_SAME_PROCESS_CALLS=0`` (every call goes through the gateway over HTTP). A flow
(``probe``) makes the call its input describes and answers the response it got (status,
headers, body, URL); the function (``echo``) answers what it saw (method, path, query, headers,
body) as the client asked. The answers of the two must be equal, but for what differs per call
(ids, times) and the thread that served the call, which tells the two paths apart.
"""

from __future__ import annotations

import base64
import json
import os
import re
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.runtime.process import GatewayProcess

HANDLERS = {
    "echo": """
        import base64, json, threading, time

        def handle(event, context):
            if event.body.startswith(b"sleep:"):
                time.sleep(float(event.body[6:].decode()))
            if event.body == b"raise":
                raise RuntimeError("echo was asked to fail")
            print(f"echo-line {event.body[:40]!r}")
            seen = {
                "method": event.method,
                "path": event.path,
                "query": event.query.raw,
                "lists": {name: event.query.getlist(name) for name in event.query},
                "headers": dict(event.headers),
                "body": base64.b64encode(event.body).decode(),
                "thread": threading.current_thread().name,
            }
            thread = {"X-Thread": seen["thread"]}
            want = event.headers.get("X-Want")
            if want:
                spec = json.loads(want)
                return {"statusCode": spec.get("status", 200),
                        "headers": {**spec.get("headers", {}), **thread},
                        "body": base64.b64decode(spec["raw"]) if "raw" in spec else seen}
            return {"statusCode": 200, "headers": thread, "body": seen}
    """,
    "envecho": """
        import threading

        def handle(event, context):
            return threading.current_thread().name
    """,
    "probe": """
        import base64, json

        def define(flow, context):
            def shape(request):
                spec = json.loads(request.body)
                request.url = spec.get("function", "echo")
                request.method = spec.get("method", "POST")
                request.headers.update(spec.get("headers", {}))
                request.query = spec.get("query", {})
                request.body = base64.b64decode(spec.get("body", ""))

            def answer(response):
                return json.dumps({"status": response.status, "headers": dict(response.headers),
                                   "body": base64.b64encode(response.body).decode(),
                                   "url": response.url})

            def failed(error):
                return json.dumps({"error": type(error).__name__, "message": str(error)})

            flow.sync_node().apply("echo", request_handler=shape, response_handler=answer,
                                   on_failure=failed)
    """,
    "hasty": """
        import json

        def define(flow, context):
            flow.sync_node().apply("echo", timeout=0.5,
                       on_failure=lambda e: json.dumps({"error": type(e).__name__,
                                                        "message": str(e)}))
    """,
}
FLOWS = {"probe", "hasty"}
#: The gateway's --timeout in these stacks.
GATEWAY_TIMEOUT = 2.0
#: What differs from one call to the next, whichever path it took.
PER_CALL = {"x-call-id", "x-start-time", "x-duration-seconds", "x-faas-flow-reqid",
            "idempotency-key", "x-forwarded-host"}


def write_stack(root: Path) -> Path:
    lines = ["version: 1.0", "provider:", "  name: openfaas", "functions:"]
    for name, source in HANDLERS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
        lines += [f"  {name}:", f"    lang: {'faasflow' if name in FLOWS else 'python3-http'}",
                  f"    handler: ./{name}"]
        if name == "envecho":
            lines += ["    environment:", "      OWN_POOL: 'yes'"]
        if name in FLOWS:
            lines += ["    environment:", "      FAASFLOW_CALL_RETRIES: '1'"]
    stack = root / "stack.yml"
    stack.write_text("\n".join(lines) + "\n")
    return stack


def start(root: Path, **env: str) -> GatewayProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    return GatewayProcess(write_stack(root), data_dir=root / "data", processes=1,
                          extra=["--timeout", str(GATEWAY_TIMEOUT)],
                          env={**environ, **env}).start()


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = start(tmp_path_factory.mktemp("inproc"))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def over_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = start(tmp_path_factory.mktemp("http"), FAASFLOW_SAME_PROCESS_CALLS="0")
    yield gateway
    gateway.stop()


def probe(gateway: GatewayProcess, spec: dict[str, Any]) -> dict[str, Any]:
    # the wait gives the flow's own call more than --timeout (calls.call_limit), so a call
    # the flow makes can outlast --timeout while the flow still answers
    reply = gateway.post("/function/probe", data=json.dumps(spec).encode(),
                         headers={"X-Faas-Flow-Wait": "20"})
    assert reply.status_code == 200, reply.text
    return dict(json.loads(reply.content))


def comparable(answer: dict[str, Any], gateway: GatewayProcess) -> dict[str, Any]:
    """The answer without what differs per call, with the gateway's URL as a placeholder."""
    doc: dict[str, Any] = json.loads(json.dumps(answer).replace(gateway.url, "<gateway>"))
    assert doc["headers"].pop("Content-Length") == str(len(base64.b64decode(doc["body"])))
    doc["headers"] = {k: v for k, v in doc["headers"].items() if k.lower() not in PER_CALL}
    try:
        seen = json.loads(base64.b64decode(doc["body"]))
    except ValueError:
        return doc
    if isinstance(seen, dict) and "headers" in seen:
        # Host is the worker's own address (its port differs between the two stacks)
        assert seen["headers"].pop("Host").startswith("127.0.0.1:")
        seen["headers"] = {k: v for k, v in seen["headers"].items()
                           if k.lower() not in PER_CALL}
        seen.pop("thread", None)
        doc["body"] = seen
    return doc


def seen_by_echo(answer: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(answer["body"])))


def want(status: int = 200, headers: dict[str, str] | None = None, raw: bytes | None = None
         ) -> str:
    spec: dict[str, Any] = {"status": status, "headers": headers or {}}
    if raw is not None:
        spec["raw"] = base64.b64encode(raw).decode()
    return json.dumps(spec)


CASES: dict[str, dict[str, Any]] = {
    "a plain POST": {"body": base64.b64encode(b"hello").decode()},
    "a GET with a multi-valued query": {
        "method": "GET", "query": {"a": ["1", "2"], "b": ["x y", ""], "c&d": ["=?"]}},
    "a binary body": {"method": "PUT", "body": base64.b64encode(bytes(range(256))).decode()},
    "headers of every spelling": {
        "headers": {"x-lower": "a", "X-UPPER": "b", "X_Under": "c", "X-Spaced": "  lead",
                    "Content-Type": "application/x-thing", "Accept-Encoding": "gzip",
                    "X-Forwarded-For": "10.0.0.9", "X-Empty": ""}},
    "a 4xx the handler chose, with its headers": {
        "headers": {"X-Want": want(418, {"X-Teapot": "short", "x-Mixed": "Case",
                                         "Content-Type": "text/teapot"}, b"I'm a teapot")}},
    "a 5xx the handler chose": {"headers": {"X-Want": want(503, {"Retry-After": "3"}, b"")}},
    "a 204 with a body the handler gave": {"headers": {"X-Want": want(204, {}, b"dropped")}},
    "hop-by-hop headers the handler set": {
        "headers": {"X-Want": want(200, {"Connection": "close", "Keep-Alive": "timeout=1",
                                         "Content-Length": "999", "X-Duration-Seconds": "9",
                                         "Trailer": "x"}, b"framed by the server")}},
    "a binary answer": {
        "headers": {"X-Want": want(200, {"Content-Type": "application/octet-stream"},
                                   bytes(range(255, -1, -1)))}},
    "a handler exception": {"body": base64.b64encode(b"raise").decode()},
    "a HEAD": {"method": "HEAD"},
    "a DELETE without a body": {"method": "DELETE"},
    "a caller's own call id": {"headers": {"X-Call-Id": "my-own-call-id"}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_call_in_the_worker_answers_what_the_gateway_answers(
    inproc: GatewayProcess, over_http: GatewayProcess, case: str
) -> None:
    direct = probe(inproc, CASES[case])
    proxied = probe(over_http, CASES[case])
    if case != "a handler exception":  # (its answer is the error page alone)
        assert direct["headers"].pop("X-Thread").startswith("faasflow-samecall")
        assert proxied["headers"].pop("X-Thread").startswith("faasflow-http-")
    assert comparable(direct, inproc) == comparable(proxied, over_http)


def test_the_answer_carries_the_gateways_headers_and_names_the_worker(
    inproc: GatewayProcess,
) -> None:
    answer = probe(inproc, {"headers": {"X-Call-Id": "call-17"}})
    headers = answer["headers"]
    assert headers["X-Call-Id"] == "call-17"
    assert headers["X-Served-By"] == "faasflow-up/shared-0"
    assert int(headers["X-Start-Time"]) == pytest.approx(time.time() * 1e9, rel=1e-3)
    assert 0 <= float(headers["X-Duration-Seconds"]) < GATEWAY_TIMEOUT
    assert headers["Content-Length"] == str(len(base64.b64decode(answer["body"])))
    seen = seen_by_echo(answer)["headers"]
    assert seen["X-Call-Id"] == "call-17"
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Host"] == inproc.url.split("://", 1)[1]


def test_the_function_runs_in_the_flows_worker_without_http(inproc: GatewayProcess) -> None:
    assert seen_by_echo(probe(inproc, {}))["thread"].startswith("faasflow-samecall")


def test_with_the_opt_out_every_call_goes_over_http(over_http: GatewayProcess) -> None:
    assert seen_by_echo(probe(over_http, {}))["thread"].startswith("faasflow-http-")


def test_a_function_of_another_pool_is_called_over_http(inproc: GatewayProcess) -> None:
    answer = probe(inproc, {"function": "envecho"})
    assert base64.b64decode(answer["body"]).decode().startswith("faasflow-http-")
    assert answer["headers"]["X-Served-By"] == "faasflow-up/envecho-0"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def invocations(gateway: GatewayProcess, name: str) -> int:
    functions = {f["name"]: f for f in gateway.get("/system/functions").json()}
    return int(functions[name]["invocationCount"])


def metric(gateway: GatewayProcess, pattern: str) -> float:
    text = gateway.get("/metrics").text
    found = re.search(pattern + r" ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_calls_in_the_worker_are_counted_by_the_gateway(inproc: GatewayProcess) -> None:
    # a status no other test asks for: counts of other calls may still be on their way
    code = r'gateway_function_invocation_total\{code="299",function_name="echo"\}'
    timed = r'gateway_functions_seconds_count\{function_name="echo"\}'
    before, before_code, before_timed = (invocations(inproc, "echo"), metric(inproc, code),
                                         metric(inproc, timed))
    for _ in range(4):
        probe(inproc, {"headers": {"X-Want": want(299, {}, b"")}})
    wait_for(lambda: metric(inproc, code) == before_code + 4, "4 calls answered 299")
    assert metric(inproc, timed) >= before_timed + 4
    assert invocations(inproc, "echo") >= before + 4
    time.sleep(0.3)
    assert metric(inproc, code) == before_code + 4  # counted once each


def test_handler_log_lines_name_the_function_and_the_call(inproc: GatewayProcess) -> None:
    marker = f"logged-{time.time_ns()}"
    answer = probe(inproc, {"body": base64.b64encode(marker.encode()).decode()})
    call_id = answer["headers"]["X-Call-Id"]
    request_id = seen_by_echo(answer)["headers"]["X-Faas-Flow-Reqid"]

    def logged() -> list[dict[str, Any]]:
        reply = inproc.get("/system/logs", params={"name": "echo", "tail": "50"})
        lines = [json.loads(line) for line in reply.text.splitlines() if line.strip()]
        return [line for line in lines if marker in line["text"]]

    line = wait_for(logged, "the handler's line")[0]
    assert line["name"] == "echo"
    assert line["call_id"] == call_id
    assert line["request_id"] == request_id
    assert line["instance"] == "shared-0"


def test_past_the_gateways_timeout_the_answer_is_its_504(
    inproc: GatewayProcess, over_http: GatewayProcess
) -> None:
    spec = {"body": base64.b64encode(f"sleep:{GATEWAY_TIMEOUT + 1}".encode()).decode()}
    started = time.monotonic()
    direct = probe(inproc, spec)
    waited = time.monotonic() - started
    proxied = probe(over_http, spec)
    assert direct["status"] == 504
    assert GATEWAY_TIMEOUT <= waited < GATEWAY_TIMEOUT + 1
    assert b"(faasflow up --timeout)" in base64.b64decode(direct["body"])
    assert comparable(direct, inproc) == comparable(proxied, over_http)


def test_a_call_timeout_shorter_than_the_gateways_fails_the_call_as_over_http(
    inproc: GatewayProcess, over_http: GatewayProcess
) -> None:
    for gateway in (inproc, over_http):
        reply = gateway.post("/function/hasty", data=b"sleep:1.5")
        assert reply.status_code == 200, reply.text
    direct = json.loads(inproc.post("/function/hasty", data=b"sleep:1.5").content)
    proxied = json.loads(over_http.post("/function/hasty", data=b"sleep:1.5").content)
    assert direct["error"] == proxied["error"] == "FunctionTimeout"
    assert direct["message"].replace(inproc.url, "<gateway>") == \
        proxied["message"].replace(over_http.url, "<gateway>")


def test_a_call_that_timed_out_is_counted_once_it_ends(inproc: GatewayProcess) -> None:
    before = invocations(inproc, "echo")
    inproc.post("/function/hasty", data=b"sleep:1")
    wait_for(lambda: invocations(inproc, "echo") == before + 1, "the late call's count")


def test_the_gateways_own_route_still_serves_the_function(inproc: GatewayProcess) -> None:
    reply = requests.post(inproc.url + "/function/echo", data=b"direct", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["thread"].startswith("faasflow-http-")
