"""The local gateway and the flow HTTP surface, driven over real sockets.

One ``faasflow up`` process (with its worker processes) serves a test stack for the whole module;
tests talk to it with ``requests`` and receive callbacks on a real local HTTP server.
"""

from __future__ import annotations

import json
import queue
import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.engine.message import Message
from faasflow.runtime.process import GatewayProcess

XID = re.compile(r"^[0-9a-v]{23}$")

HANDLERS = {
    # python3-http functions
    "echo": """
        def handle(event, context):
            return event.body
    """,
    "inspect": """
        import json

        def handle(event, context):
            return {
                "statusCode": 201,
                "headers": {"X-Seen": "yes"},
                "body": {
                    "method": event.method,
                    "path": event.path,
                    "query": {k: event.query.getlist(k) for k in event.query},
                    "token": event.headers.get("x-token"),
                    "body": event.body.decode(),
                },
            }
    """,
    "gate": """
        import os
        import pathlib
        import time

        def handle(event, context):
            name = event.body.decode()
            gates = pathlib.Path(os.environ["GATE_DIR"])
            (gates / (name + ".entered")).touch()
            deadline = time.time() + 60
            while not (gates / name).exists():
                if time.time() > deadline:
                    return {"statusCode": 504, "body": "gate " + name + " never opened"}
                time.sleep(0.02)
            return name + "-2"
    """,
    "mark": """
        import os
        import pathlib

        def handle(event, context):
            name = event.body.decode()
            (pathlib.Path(os.environ["GATE_DIR"]) / (name + ".marked")).touch()
            return name + "-3"
    """,
    "envcheck": """
        import os

        def handle(event, context):
            return os.environ.get("GREETING", "unset")
    """,
    "fail": """
        def handle(event, context):
            return {"statusCode": 500, "body": "boom"}
    """,
    "raises": """
        def handle(event, context):
            raise ValueError("bad input " + event.body.decode())
    """,
    "crash": """
        import os

        def handle(event, context):
            os._exit(3)
    """,
    # flows
    "hello": """
        def define(flow, context):
            flow.sync_node().modify(lambda data: b"Hello " + data)
    """,
    "chain": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("n1").apply("echo").modify(lambda data: data + b"-1")
            dag.node("n2").apply("gate")
            dag.node("n3").apply("mark")
            dag.edge("n1", "n2")
            dag.edge("n2", "n3")
    """,
    "fanout": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("a").modify(lambda data: data + b"a")
            dag.node("b").apply("echo").modify(lambda data: data + b"b")
            dag.node("c").modify(lambda data: data + b"c")
            dag.node("d", aggregator=lambda found: b";".join(
                key.encode() + b"=" + found[key] for key in sorted(found)))
            dag.edge("a", "b")
            dag.edge("a", "c")
            dag.edge("b", "d")
            dag.edge("c", "d")
    """,
    "failing": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("n1").modify(lambda data: data)
            dag.node("n2").apply("fail")
            dag.edge("n1", "n2")
    """,
    "each": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("split").modify(lambda data: data)
            branch = dag.foreach_branch(
                "each",
                lambda data: {str(i): part for i, part in enumerate(data.split(b","))},
                aggregator=lambda found: b",".join(found[k] for k in sorted(found, key=int)),
            )
            branch.node("up").apply("echo").modify(lambda data: data.upper())
            dag.edge("split", "each")
    """,
    "invalid": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("a").modify(lambda data: data)
            dag.node("b").modify(lambda data: data)
    """,
}

FLOWS = {"hello", "chain", "fanout", "failing", "each", "invalid"}
NEEDS_ENV = {"gate", "mark", "envcheck"}


def write_stack(root: Path, gates: Path) -> Path:
    """A stack.yml with every handler above; returns its path."""
    lines = ["version: 1.0", "provider:", "  name: openfaas", "functions:"]
    for name, source in HANDLERS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
        lines += [f"  {name}:",
                  f"    lang: {'faasflow' if name in FLOWS else 'python3-http'}",
                  f"    handler: ./{name}"]
        if name in NEEDS_ENV:
            lines += ["    environment:", f"      GATE_DIR: {gates}", "      GREETING: bonjour"]
        if name == "hello":
            lines += ["    labels:", '      faas-flow: "1"',
                      "    annotations:", "      faas-flow-desc: says hello"]
    stack = root / "stack.yml"
    stack.write_text("\n".join(lines) + "\n")
    return stack


class CallbackServer:
    """A real HTTP server that records every request it gets."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                calls.put((self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def next(self, timeout: float = 30) -> tuple[str, dict[str, str], bytes]:
        return self.calls.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, gates: Path) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("stack")
    stack = write_stack(root, gates)
    with GatewayProcess(stack, data_dir=root / "data") as process:
        yield process


@pytest.fixture
def callbacks() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.close()


def record(gateway: GatewayProcess, flow: str, request_id: str) -> dict[str, Any]:
    reply = gateway.get(f"/function/{flow}/flow/{request_id}")
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def finished(gateway: GatewayProcess, flow: str, request_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        doc = record(gateway, flow, request_id)
        return doc if doc["status"] not in ("running", "paused") else None

    return dict(wait_for(ended, what=f"request {request_id} to end"))


def queue_drained(gateway: GatewayProcess) -> bool:
    return bool(gateway.get("/system/queue").json()["pending"] == 0)


def start_held(gateway: GatewayProcess, gates: Path, name: str) -> str:
    """Start ``chain`` and return its id once node n2 is blocked in the gate ``<name>-1``."""
    reply = gateway.post("/function/chain", data=name)
    assert reply.status_code == 200, reply.text
    wait_for(lambda: (gates / f"{name}-1.entered").exists(), what="n2 to enter its gate")
    return str(reply.headers["X-Faas-Flow-Reqid"])


# -- the gateway API ---------------------------------------------------------------------------


def test_healthz_answers_ok(gateway: GatewayProcess) -> None:
    reply = gateway.get("/healthz")
    assert (reply.status_code, reply.text) == (200, "OK")


def test_system_functions_lists_names_labels_annotations_and_counts(
    gateway: GatewayProcess,
) -> None:
    gateway.post("/function/echo", data=b"count me")
    functions = {f["name"]: f for f in gateway.get("/system/functions").json()}
    assert set(functions) == set(HANDLERS)
    assert functions["hello"]["labels"] == {"faas-flow": "1"}
    assert functions["hello"]["annotations"] == {"faas-flow-desc": "says hello"}
    assert functions["echo"]["invocationCount"] >= 1
    assert functions["echo"]["replicas"] >= 1


def test_system_functions_rejects_deploys(gateway: GatewayProcess) -> None:
    reply = gateway.post("/system/functions", json={"service": "x"})
    assert reply.status_code == 405
    assert "stack.yml" in reply.text


def test_unknown_function_is_404_naming_it(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/nope", data=b"x")
    assert reply.status_code == 404
    assert "'nope'" in reply.text


def test_unknown_gateway_route_is_404(gateway: GatewayProcess) -> None:
    assert gateway.get("/nothing/here").status_code == 404


def test_python3_http_handler_sees_method_path_query_headers_and_body(
    gateway: GatewayProcess,
) -> None:
    reply = requests.put(f"{gateway.url}/function/inspect/some/path?a=1&a=2&b=",
                         data=b"payload", headers={"X-Token": "abc"}, timeout=30)
    assert reply.status_code == 201
    assert reply.headers["X-Seen"] == "yes"
    assert reply.json() == {"method": "PUT", "path": "/some/path",
                            "query": {"a": ["1", "2"], "b": [""]}, "token": "abc",
                            "body": "payload"}
    assert reply.headers["X-Call-Id"]


def test_stack_environment_reaches_the_function(gateway: GatewayProcess) -> None:
    assert gateway.post("/function/envcheck").text == "bonjour"


def test_handler_exception_is_500_and_its_traceback_is_in_the_functions_logs(
    gateway: GatewayProcess,
) -> None:
    reply = gateway.post("/function/raises", data=b"42", headers={"X-Call-Id": "raises-1"})
    assert reply.status_code == 500

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in
                 gateway.get("/system/logs?name=raises&namespace=openfaas-fn").text.splitlines()]
        return [line for line in lines if "bad input 42" in line["text"]]

    line = wait_for(logged, what="the traceback in the logs")[0]
    assert (line["name"], line["namespace"], line["call_id"]) == ("raises", "openfaas-fn",
                                                                  "raises-1")


def test_crashed_worker_is_replaced(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/crash")
    assert reply.status_code == 502
    # the other worker and then the restarted one keep serving
    wait_for(lambda: all(gateway.post("/function/echo", data=b"x").text == "x" for _ in range(4)),
             what="workers to serve again")
    wait_for(lambda: all(f["replicas"] == 2 for f in gateway.get("/system/functions").json()
                         if f["name"] == "crash"), what="the crashed worker to be restarted")


def test_async_function_answers_202_with_call_id_and_calls_back(
    gateway: GatewayProcess, callbacks: CallbackServer
) -> None:
    reply = gateway.post("/async-function/echo", data=b"later",
                         headers={"X-Callback-Url": callbacks.url + "/done"})
    assert reply.status_code == 202
    call_id = reply.headers["X-Call-Id"]
    path, headers, body = callbacks.next()
    assert (path, body) == ("/done", b"later")
    assert headers["X-Call-Id"] == call_id
    assert headers["X-Function-Status"] == "200"
    assert headers["X-Function-Name"] == "echo"


def test_async_function_keeps_the_functions_status_for_the_callback(
    gateway: GatewayProcess, callbacks: CallbackServer
) -> None:
    gateway.post("/async-function/fail", headers={"X-Callback-Url": callbacks.url})
    _, headers, body = callbacks.next()
    assert (headers["X-Function-Status"], body) == ("500", b"boom")


def test_async_function_with_malformed_callback_url_is_400(gateway: GatewayProcess) -> None:
    reply = gateway.post("/async-function/echo", data=b"x",
                         headers={"X-Callback-Url": "ftp:/nowhere"})
    assert reply.status_code == 400
    assert "X-Callback-Url" in reply.text


def test_async_function_of_unknown_function_is_404(gateway: GatewayProcess) -> None:
    assert gateway.post("/async-function/nope", data=b"x").status_code == 404


def test_malformed_content_length_is_400(gateway: GatewayProcess) -> None:
    import socket

    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")


# -- the flow: new requests --------------------------------------------------------------------


def test_sync_flow_answers_its_result_and_request_id(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/hello", data=b"Adam")
    assert (reply.status_code, reply.text) == (200, "Hello Adam")
    assert XID.match(reply.headers["X-Faas-Flow-Reqid"])
    assert reply.headers["X-Faas-Flow-Callback-Url"] == ""


def test_dag_flow_answers_at_once_and_its_record_gets_the_output(
    gateway: GatewayProcess,
) -> None:
    reply = gateway.post("/function/fanout", data=b"x")
    assert (reply.status_code, reply.content) == (200, b"")
    doc = finished(gateway, "fanout", reply.headers["X-Faas-Flow-Reqid"])
    assert doc["status"] == "success"
    assert doc["output"] == "b=xab;c=xac"
    assert {"0_1_a", "0_2_b", "0_3_c", "0_4_d"} <= set(doc["nodes"])


def test_wait_header_answers_the_final_output(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/each", data=b"a,b,c", headers={"X-Faas-Flow-Wait": "30"})
    assert (reply.status_code, reply.text) == (200, "A,B,C")
    assert XID.match(reply.headers["X-Faas-Flow-Reqid"])


def test_wait_header_answers_202_with_the_id_when_the_flow_is_still_running(
    gateway: GatewayProcess, gates: Path
) -> None:
    reply = gateway.post("/function/chain", data=b"slow",
                         headers={"X-Faas-Flow-Wait": "0.2", "Accept": "application/json"})
    assert reply.status_code == 202
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    assert reply.json()["request_id"] == request_id
    (gates / "slow-1").touch()
    assert finished(gateway, "chain", request_id)["output"] == "slow-1-2-3"


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", ""])
def test_malformed_wait_header_is_400(gateway: GatewayProcess, value: str) -> None:
    reply = gateway.post("/function/fanout", data=b"x", headers={"X-Faas-Flow-Wait": value})
    assert reply.status_code == 400
    assert "X-Faas-Flow-Wait" in reply.text


def test_wait_header_reports_a_failed_flow_as_500_naming_the_request(
    gateway: GatewayProcess,
) -> None:
    reply = gateway.post("/function/failing", data=b"x", headers={"X-Faas-Flow-Wait": "30"})
    assert reply.status_code == 500
    assert reply.text.startswith("[ Failed ]")
    assert "500" in reply.text
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    doc = record(gateway, "failing", request_id)
    assert doc["status"] == "failure"
    assert "0_2_n2" in doc["error"]


def test_custom_request_id_is_used(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/fanout", data=b"x",
                         headers={"X-Faas-Flow-Reqid": "my-req-1", "X-Faas-Flow-Wait": "30"})
    assert reply.status_code == 200
    assert reply.headers["X-Faas-Flow-Reqid"] == "my-req-1"
    assert record(gateway, "fanout", "my-req-1")["status"] == "success"


def test_reused_request_id_with_another_body_is_409(gateway: GatewayProcess) -> None:
    headers = {"X-Faas-Flow-Reqid": "twice-1", "X-Faas-Flow-Wait": "30"}
    assert gateway.post("/function/fanout", data=b"x", headers=headers).status_code == 200
    reply = gateway.post("/function/fanout", data=b"other", headers=headers)
    assert reply.status_code == 409
    assert "twice-1" in reply.text


@pytest.mark.parametrize("bad", ["has space", "-leading-dash", "x" * 129, "slash/in"])
def test_malformed_request_id_header_is_400(gateway: GatewayProcess, bad: str) -> None:
    reply = gateway.post("/function/fanout", data=b"x", headers={"X-Faas-Flow-Reqid": bad})
    assert reply.status_code == 400
    assert "invalid request id" in reply.text


def test_callback_url_receives_the_final_output_and_request_id(
    gateway: GatewayProcess, callbacks: CallbackServer
) -> None:
    reply = gateway.post("/function/fanout", data=b"cb",
                         headers={"X-Faas-Flow-Callback-Url": callbacks.url + "/result"})
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    assert reply.headers["X-Faas-Flow-Callback-Url"] == callbacks.url + "/result"
    path, headers, body = callbacks.next()
    assert (path, body) == ("/result", b"b=cbab;c=cbac")
    assert headers["X-Faas-Flow-Reqid"] == request_id


def test_sync_flow_calls_back_too(gateway: GatewayProcess, callbacks: CallbackServer) -> None:
    gateway.post("/function/hello", data=b"Eve",
                 headers={"X-Faas-Flow-Callback-Url": callbacks.url})
    assert callbacks.next()[2] == b"Hello Eve"


@pytest.mark.parametrize("bad", ["not a url", "ftp://x/y", "http://"])
def test_malformed_callback_url_is_400(gateway: GatewayProcess, bad: str) -> None:
    reply = gateway.post("/function/fanout", data=b"x",
                         headers={"X-Faas-Flow-Callback-Url": bad})
    assert reply.status_code == 400
    assert "X-Faas-Flow-Callback-Url" in reply.text


def test_invalid_definition_answers_500_invalid_dag(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/invalid", data=b"x")
    assert reply.status_code == 500
    assert reply.text.startswith("[ Failed ]")
    assert "Invalid dag" in reply.text


def test_errors_are_json_when_the_client_accepts_json(gateway: GatewayProcess) -> None:
    reply = gateway.get("/function/chain/flow/unknown-id",
                        headers={"Accept": "application/json"})
    assert reply.status_code == 404
    doc = reply.json()
    assert doc["request_id"] == "unknown-id"
    assert "unknown-id" in doc["error"]


# -- the flow: export, records, state ----------------------------------------------------------


def test_export_dag_describes_the_flow(gateway: GatewayProcess) -> None:
    doc = gateway.get("/function/fanout?export-dag=true").json()
    assert doc["is-valid"] is True
    assert doc["start-node"] == "a"
    assert doc["nodes"]["a"]["childrens"] == ["b", "c"]
    assert doc["nodes"]["d"]["has-aggregator"] is True


def test_export_dag_of_an_invalid_flow_says_why(gateway: GatewayProcess) -> None:
    doc = gateway.get("/function/invalid?export-dag=TRUE").json()
    assert doc["is-valid"] is False
    assert "only one start vertex is allowed" in doc["validation-error"]


def test_export_dag_with_another_value_is_400(gateway: GatewayProcess) -> None:
    assert gateway.get("/function/fanout?export-dag=yes").status_code == 400


def test_request_list_names_recent_requests(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/fanout", data=b"x", headers={"X-Faas-Flow-Wait": "30"})
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    doc = gateway.get("/function/fanout/flow").json()
    assert doc["flow"] == "fanout"
    assert request_id in {r["id"] for r in doc["requests"]}


def test_unknown_request_record_is_404(gateway: GatewayProcess) -> None:
    reply = gateway.get("/function/fanout/flow/never-started")
    assert reply.status_code == 404
    assert "never-started" in reply.text


def test_state_of_an_unknown_request_is_finished(gateway: GatewayProcess) -> None:
    reply = gateway.get("/function/chain?state=never-started")
    assert (reply.status_code, reply.text) == (200, "FINISHED")


# -- the flow: pause, resume, stop -------------------------------------------------------------


def test_pause_and_resume_by_query_hold_and_release_the_next_node(
    gateway: GatewayProcess, gates: Path
) -> None:
    request_id = start_held(gateway, gates, "pq")
    reply = gateway.get(f"/function/chain?pause-flow={request_id}")
    assert (reply.status_code, reply.text) == (200, f"Successfully paused request {request_id}")
    assert gateway.get(f"/function/chain?state={request_id}").text == "PAUSED"
    (gates / "pq-1").touch()
    # n2 ends; its iteration is done once the queue is empty, and n3 was held back
    wait_for(lambda: "0_2_n2" in record(gateway, "chain", request_id)["nodes"], what="n2")
    wait_for(lambda: queue_drained(gateway), what="the queue to drain")
    assert record(gateway, "chain", request_id)["status"] == "paused"
    assert not (gates / "pq-1-2.marked").exists()
    reply = gateway.get(f"/function/chain?resume-flow={request_id}")
    assert (reply.status_code, reply.text) == (200, f"Successfully resumed request {request_id}")
    doc = finished(gateway, "chain", request_id)
    assert (doc["status"], doc["output"]) == ("success", "pq-1-2-3")


def test_pause_and_resume_by_rest_routes(gateway: GatewayProcess, gates: Path) -> None:
    request_id = start_held(gateway, gates, "pr")
    reply = gateway.post(f"/function/chain/flow/{request_id}/pause")
    assert reply.text == f"Successfully paused request {request_id}"
    assert gateway.get(f"/function/chain/flow/{request_id}/state").text == "PAUSED"
    (gates / "pr-1").touch()
    wait_for(lambda: "0_2_n2" in record(gateway, "chain", request_id)["nodes"], what="n2")
    reply = gateway.post(f"/function/chain/flow/{request_id}/resume")
    assert reply.text == f"Successfully resumed request {request_id}"
    assert finished(gateway, "chain", request_id)["output"] == "pr-1-2-3"
    assert gateway.get(f"/function/chain/flow/{request_id}/state").text == "FINISHED"


def test_pausing_a_paused_request_is_409(gateway: GatewayProcess, gates: Path) -> None:
    request_id = start_held(gateway, gates, "pp")
    assert gateway.post(f"/function/chain/flow/{request_id}/pause").status_code == 200
    reply = gateway.post(f"/function/chain/flow/{request_id}/pause")
    assert reply.status_code == 409
    assert request_id in reply.text
    gateway.post(f"/function/chain/flow/{request_id}/stop")
    (gates / "pp-1").touch()


def test_pausing_an_unknown_request_is_404(gateway: GatewayProcess) -> None:
    reply = gateway.get("/function/chain?pause-flow=unknown")
    assert reply.status_code == 404
    assert reply.text.startswith("[ Failed ]")
    assert "failed to pause request unknown, check if request is active" in reply.text


def test_stop_ends_a_running_request_before_its_next_node(
    gateway: GatewayProcess, gates: Path, callbacks: CallbackServer
) -> None:
    reply = gateway.post("/function/chain", data=b"st",
                         headers={"X-Faas-Flow-Callback-Url": callbacks.url})
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    wait_for(lambda: (gates / "st-1.entered").exists(), what="n2 to enter its gate")
    reply = gateway.get(f"/function/chain?stop-flow={request_id}")
    assert (reply.status_code, reply.text) == (200, f"Successfully stopped request {request_id}")
    assert gateway.get(f"/function/chain?state={request_id}").text == "FINISHED"
    (gates / "st-1").touch()
    wait_for(lambda: queue_drained(gateway), what="the queue to drain")
    assert record(gateway, "chain", request_id)["status"] == "stopped"
    assert not (gates / "st-1-2.marked").exists()
    assert callbacks.calls.empty()


def test_stopping_a_stopped_request_is_409(gateway: GatewayProcess, gates: Path) -> None:
    request_id = start_held(gateway, gates, "ss")
    assert gateway.post(f"/function/chain/flow/{request_id}/stop").status_code == 200
    assert gateway.post(f"/function/chain/flow/{request_id}/stop").status_code == 409
    (gates / "ss-1").touch()


# -- the flow: malformed input on every route --------------------------------------------------


@pytest.mark.parametrize("query", ["pause-flow=", "resume-flow=", "stop-flow=", "state="])
def test_control_query_without_an_id_is_400(gateway: GatewayProcess, query: str) -> None:
    reply = gateway.get(f"/function/chain?{query}")
    assert reply.status_code == 400
    assert "needs a request id" in reply.text


@pytest.mark.parametrize("query", ["pause-flow", "resume-flow", "stop-flow", "state"])
def test_control_query_with_a_malformed_id_is_400(gateway: GatewayProcess, query: str) -> None:
    reply = gateway.get(f"/function/chain?{query}=bad%20id")
    assert reply.status_code == 400
    assert "invalid request id" in reply.text


@pytest.mark.parametrize("route", ["pause", "resume", "stop", "state", "forward", ""])
def test_rest_route_with_a_malformed_id_is_400(gateway: GatewayProcess, route: str) -> None:
    method = "GET" if route in ("state", "") else "POST"
    reply = requests.request(method, f"{gateway.url}/function/chain/flow/bad%20id/{route}",
                             timeout=30)
    assert reply.status_code == 400


@pytest.mark.parametrize(("method", "route"), [
    ("GET", "pause"), ("GET", "resume"), ("GET", "stop"), ("GET", "forward"),
    ("DELETE", "state"), ("POST", ""), ("DELETE", "/"),
])
def test_wrong_method_is_405(gateway: GatewayProcess, method: str, route: str) -> None:
    path = "/function/chain" + (route if route.startswith("/") else f"/flow/some-id/{route}")
    reply = requests.request(method, f"{gateway.url}{path.rstrip('/')}", timeout=30)
    assert reply.status_code == 405
    assert reply.headers["Allow"]


def test_unknown_flow_action_is_404(gateway: GatewayProcess) -> None:
    assert gateway.post("/function/chain/flow/some-id/explode").status_code == 404


def test_unknown_flow_route_is_404(gateway: GatewayProcess) -> None:
    assert gateway.get("/function/chain/elsewhere/deep/path").status_code == 404


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_forward_is_400(gateway: GatewayProcess, body: bytes) -> None:
    reply = gateway.post("/function/chain/flow/r1/forward", data=body)
    assert reply.status_code == 400, reply.text


def _message(request_id: str = "fw-1") -> Message:
    return Message(request_id, "chain", "0" * 64, "0_2_n2", data=b"x")


def test_unsigned_forward_is_401(gateway: GatewayProcess) -> None:
    doc = json.loads(_message().encode(None))
    doc.pop("sign", None)
    reply = gateway.post("/function/chain/flow/fw-1/forward", data=json.dumps(doc))
    assert reply.status_code == 401, reply.text


def test_forward_signed_with_another_key_is_403(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/chain/flow/fw-1/forward",
                         data=_message().encode(b"not the gateway's key"))
    assert reply.status_code == 403, reply.text


def test_forward_posted_to_another_request_is_400(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/chain/flow/other-id/forward",
                         data=_message().encode(b"k"))
    assert reply.status_code == 400
    assert "other-id" in reply.text


def test_a_request_survives_every_malformed_route_nearby(
    gateway: GatewayProcess, gates: Path
) -> None:
    # nothing a client sends around a running request disturbs it
    request_id = start_held(gateway, gates, "mal")
    for method, path, kwargs in [
        ("POST", f"/function/chain/flow/{request_id}/forward", {"data": b"garbage"}),
        ("POST", f"/function/chain/flow/{request_id}/forward",
         {"data": _message(request_id).encode(b"wrong")}),
        ("GET", f"/function/chain/flow/{request_id}/pause", {}),
        ("POST", "/function/chain", {"headers": {"X-Faas-Flow-Reqid": request_id}}),
    ]:
        assert requests.request(method, gateway.url + path, timeout=30, **kwargs).status_code \
            >= 400
    assert gateway.get(f"/function/chain?state={request_id}").text == "RUNNING"
    (gates / "mal-1").touch()
    assert finished(gateway, "chain", request_id)["output"] == "mal-1-2-3"


def test_execute_starts_a_request_with_the_id_in_the_path(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/fanout/flow/exec-1/execute", data=b"e",
                         headers={"X-Faas-Flow-Wait": "30"})
    assert (reply.status_code, reply.text) == (200, "b=eab;c=eac")
    assert reply.headers["X-Faas-Flow-Reqid"] == "exec-1"


def test_request_list_with_a_wrong_method_is_405(gateway: GatewayProcess) -> None:
    assert gateway.post("/function/fanout/flow").status_code == 405


def test_system_function_describes_one_function(gateway: GatewayProcess) -> None:
    doc = gateway.get("/system/function/hello").json()
    assert (doc["name"], doc["envProcess"]) == ("hello", "faasflow")
    assert gateway.get("/system/function/nope").status_code == 404


def test_system_info_and_queue_answer_json(gateway: GatewayProcess) -> None:
    assert gateway.get("/system/info").json()["provider"]["provider"] == "faasflow"
    assert set(gateway.get("/system/queue").json()) == {"pending", "recovered", "dead"}
