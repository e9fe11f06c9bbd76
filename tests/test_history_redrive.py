"""Redrive, re-run and failure callbacks through a real flow server."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings

CALLS: Counter[str] = Counter()
BROKEN = {"c": True}


def counted(name: str) -> Any:
    def run(data: bytes) -> bytes:
        CALLS[name] += 1
        if name == "c" and BROKEN["c"]:
            raise RuntimeError("c is broken today")
        return data + name.encode()

    return run


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(counted("a"))
    dag.node("b").modify(counted("b"))
    dag.node("c").modify(counted("c"))
    dag.node("d", aggregator=lambda inputs: b"+".join(inputs[k] for k in sorted(inputs)))
    dag.node("d").modify(counted("d"))
    dag.edge("a", "b")
    dag.edge("a", "c")
    dag.edge("b", "d")
    dag.edge("c", "d")


def served(redrive: bool) -> Server:
    env = {"FAASFLOW_FLOW_NAME": "again", "FAASFLOW_REDRIVE": "true" if redrive else "false"}
    return serve(FlowApp(define, Settings.from_env(env))).start()


@pytest.fixture
def server() -> Iterator[Server]:
    CALLS.clear()
    BROKEN["c"] = True
    running = served(True)
    yield running
    running.close()


def start(server: Server, headers: dict[str, str] | None = None) -> str:
    reply = requests.post(server.url, data=b"in", timeout=10, headers=headers or {})
    assert reply.status_code in (200, 202, 500), reply.text
    return str(reply.headers["X-Faas-Flow-Reqid"])


def ended(server: Server, rid: str) -> dict[str, Any]:
    deadline = time.time() + 15
    while True:
        doc: dict[str, Any] = requests.get(f"{server.url}/flow/{rid}", timeout=10).json()
        if doc["status"] in ("success", "failure", "stopped") or time.time() > deadline:
            return doc
        time.sleep(0.02)


def test_redrive_after_a_failure_on_a_fan_in_runs_only_the_failed_branch(
    server: Server,
) -> None:
    rid = start(server)
    assert ended(server, rid)["status"] == "failure"
    assert CALLS == {"a": 1, "b": 1, "c": 1}
    BROKEN["c"] = False
    reply = requests.post(f"{server.url}/flow/{rid}/redrive", timeout=10)
    assert reply.status_code == 202, reply.text
    doc = ended(server, rid)
    assert doc["status"] == "success", doc
    assert doc["output"] == "inab+inacd"
    assert CALLS == {"a": 1, "b": 1, "c": 2, "d": 1}  # a and b were not run again
    assert {v["state"] for v in doc["states"].values()} == {"succeeded"}


def test_a_second_redrive_of_a_redriven_request_is_409(server: Server) -> None:
    rid = start(server)
    ended(server, rid)
    BROKEN["c"] = False
    assert requests.post(f"{server.url}/flow/{rid}/redrive", timeout=10).status_code == 202
    ended(server, rid)
    again = requests.post(f"{server.url}/flow/{rid}/redrive", timeout=10)
    assert again.status_code == 409
    assert "only a failed request can be redriven" in again.text


def test_redrive_of_an_unknown_request_is_404(server: Server) -> None:
    assert requests.post(f"{server.url}/flow/nosuch/redrive", timeout=10).status_code == 404


def test_redrive_without_kept_state_is_409_naming_the_setting() -> None:
    CALLS.clear()
    BROKEN["c"] = True
    plain = served(False)
    try:
        rid = start(plain)
        assert ended(plain, rid)["status"] == "failure"
        reply = requests.post(f"{plain.url}/flow/{rid}/redrive", timeout=10)
        rerun = requests.post(f"{plain.url}/flow/{rid}/rerun", timeout=10)
    finally:
        plain.close()
    assert reply.status_code == 409 and "FAASFLOW_REDRIVE=true" in reply.text
    assert rerun.status_code == 409 and "FAASFLOW_REDRIVE=true" in rerun.text


def test_rerun_starts_a_new_request_with_the_same_input(server: Server) -> None:
    rid = start(server)
    ended(server, rid)
    BROKEN["c"] = False
    reply = requests.post(f"{server.url}/flow/{rid}/rerun", timeout=10)
    assert reply.status_code == 202, reply.text
    new = reply.json()["request_id"]
    assert new != rid and reply.json()["rerun_of"] == rid
    doc = ended(server, new)
    assert (doc["status"], doc["output"]) == ("success", "inab+inacd")


def test_redrive_answers_405_to_get(server: Server) -> None:
    assert requests.get(f"{server.url}/flow/x/redrive", timeout=10).status_code == 405


class Receiver(http.server.BaseHTTPRequestHandler):
    got: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802  (the stdlib's name)
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        Receiver.got.append((self.headers["X-Faas-Flow-Status"], self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_failure_is_sent_to_the_callback_with_a_failure_status(server: Server) -> None:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Receiver.got.clear()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/done"
        rid = start(server, {"X-Faas-Flow-Callback-Url": url})
        ended(server, rid)
        deadline = time.time() + 10
        while not Receiver.got and time.time() < deadline:
            time.sleep(0.02)
    finally:
        receiver.shutdown()
        receiver.server_close()
    status, path, body = Receiver.got[0]
    assert (status, path) == ("failure", "/done")
    assert b"c is broken today" in body
