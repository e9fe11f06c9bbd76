"""Captured inputs and outputs (FAASFLOW_CAPTURE) in ``GET /flow/<id>?payloads=true``."""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(lambda d: d + b"-secret-a")
    dag.node("b").modify(lambda d: d * 100 if context.query.get("big") else d)
    dag.node("c").modify(lambda d: d if not context.query.get("fail") else 1 / 0)
    dag.edge("a", "b")
    dag.edge("b", "c")


def hide(kind: str, node: str | None, data: bytes) -> bytes:
    return data.replace(b"secret", b"******")


def served(**env: str) -> Server:
    module = types.ModuleType("capture_hooks_for_tests")
    module.hide = hide  # type: ignore[attr-defined]
    sys.modules["capture_hooks_for_tests"] = module
    settings = Settings.from_env({"FAASFLOW_FLOW_NAME": "cap", **env})
    return serve(FlowApp(define, settings)).start()


@pytest.fixture
def everything() -> Iterator[Server]:
    server = served(FAASFLOW_CAPTURE="all", FAASFLOW_CAPTURE_LIMIT="64")
    yield server
    server.close()


def finished(server: Server, rid: str) -> dict[str, Any]:
    deadline = time.time() + 15
    while True:
        doc: dict[str, Any] = requests.get(f"{server.url}/flow/{rid}?payloads=true",
                                           timeout=10).json()
        if doc["status"] in ("success", "failure") or time.time() > deadline:
            return doc
        time.sleep(0.02)


def start(server: Server, query: str = "") -> str:
    reply = requests.post(f"{server.url}/{query}", data=b"in", timeout=10)
    return str(reply.headers["X-Faas-Flow-Reqid"])


def test_capture_all_keeps_the_request_input_and_every_nodes_input_and_output(
    everything: Server,
) -> None:
    doc = finished(everything, start(everything))
    payloads = doc["payloads"]
    assert payloads["request"]["data"] == "in"
    nodes = {k.rsplit("_", 1)[-1]: v for k, v in payloads["nodes"].items()}
    assert nodes["a"]["input"]["data"] == "in"
    assert nodes["a"]["output"]["data"] == "in-secret-a"
    assert nodes["c"]["output"]["data"] == "in-secret-a"


def test_a_payload_is_cut_at_the_capture_limit(everything: Server) -> None:
    doc = finished(everything, start(everything, "?big=1"))
    out = next(v for k, v in doc["payloads"]["nodes"].items() if k.endswith("_b"))["output"]
    assert (len(out["data"]), out["size"], out["truncated"]) == (64, 1100, True)


def test_the_redaction_hook_runs_before_anything_is_stored() -> None:
    server = served(FAASFLOW_CAPTURE="all",
                    FAASFLOW_CAPTURE_REDACT="capture_hooks_for_tests:hide")
    try:
        doc = finished(server, start(server))
    finally:
        server.close()
    assert "secret" not in str(doc["payloads"])
    assert "in-******-a" in str(doc["payloads"])


def test_capture_errors_keeps_only_the_failed_nodes_input() -> None:
    server = served(FAASFLOW_CAPTURE="errors")
    try:
        doc = finished(server, start(server, "?fail=1"))
    finally:
        server.close()
    assert doc["status"] == "failure"
    nodes = doc["payloads"]["nodes"]
    assert list(nodes) == [k for k in nodes if k.endswith("_c")] and len(nodes) == 1
    assert nodes[next(iter(nodes))] == {"input": {"data": "in-secret-a", "encoding": "utf-8",
                                                  "size": 11, "truncated": False}}


def test_capture_none_keeps_nothing() -> None:
    server = served()
    try:
        doc = finished(server, start(server))
    finally:
        server.close()
    assert doc["payloads"] == {"capture": "none", "request": None, "nodes": {}}


def test_a_bad_payloads_value_is_400(everything: Server) -> None:
    reply = requests.get(f"{everything.url}/flow/x?payloads=yes", timeout=10)
    assert reply.status_code == 400 and "use true or false" in reply.text
