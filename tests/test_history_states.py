"""Every node of a request shows its state in ``GET /flow/<id>``: running, held, failed,
skipped and foreach counts, through a real flow server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings

GATE = threading.Event()


def gated(data: bytes) -> bytes:
    GATE.wait(20)
    return data + b"b"


def slow_failure(data: bytes) -> bytes:
    time.sleep(0.3)
    raise ValueError("refused")


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    kind = context.query.get("kind")
    if kind == "fail":
        dag.node("a").modify(lambda d: d + b"a")
        dag.node("b").modify(slow_failure)
        dag.node("c").modify(lambda d: d)
    elif kind == "cond":
        branches = dag.conditional_branch(
            "a", ["small", "large"], lambda d: ["small"],
            aggregator=lambda results: b"".join(results.values()),
        )
        branches["small"].node("s").modify(lambda d: d + b"s")
        branches["large"].node("l").modify(lambda d: d + b"l")
        dag.node("b").modify(lambda d: d)
        dag.node("c").modify(lambda d: d)
    elif kind == "each":
        each = dag.foreach_branch(
            "a", lambda d: {str(i): bytes([c]) for i, c in enumerate(d)},
            aggregator=lambda results: b"".join(results.values()),
        )
        each.node("sq").modify(lambda d: gated(d) if d == b"z" else d)
        dag.node("b").modify(lambda d: d)
        dag.node("c").modify(lambda d: d)
    else:
        dag.node("a").modify(lambda d: d + b"a")
        dag.node("b").modify(gated)
        dag.node("c").modify(lambda d: d + b"c")
    dag.edge("a", "b")
    dag.edge("b", "c")


@pytest.fixture
def server() -> Iterator[Server]:
    GATE.clear()
    running = serve(FlowApp(define, Settings.from_env({"FAASFLOW_FLOW_NAME": "states"}))).start()
    yield running
    GATE.set()
    running.close()


def start(server: Server, query: str = "") -> str:
    reply = requests.post(f"{server.url}/{query}", data=b"xyz", timeout=10)
    assert reply.status_code in (200, 202), reply.text
    return str(reply.headers["X-Faas-Flow-Reqid"])


def record(server: Server, rid: str) -> dict[str, Any]:
    reply = requests.get(f"{server.url}/flow/{rid}", timeout=10)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def until(server: Server, rid: str, check: Any) -> dict[str, Any]:
    deadline = time.time() + 15
    while True:
        doc = record(server, rid)
        if check(doc) or time.time() > deadline:
            return doc
        time.sleep(0.02)


def states_of(doc: dict[str, Any]) -> dict[str, str]:
    return {k.rsplit("_", 1)[-1]: v["state"] for k, v in doc["states"].items()}


def test_a_running_request_shows_its_running_node_with_attempt_and_start(
    server: Server,
) -> None:
    before = time.time()
    rid = start(server)
    doc = until(server, rid, lambda d: states_of(d).get("b") == "running")
    assert states_of(doc) == {"a": "succeeded", "b": "running", "c": "pending"}
    running = next(v for k, v in doc["states"].items() if k.endswith("_b"))
    assert running["attempt"] == 1
    assert before <= running["start"] <= time.time()
    GATE.set()
    doc = until(server, rid, lambda d: d["status"] == "success")
    assert states_of(doc) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}


def test_a_paused_request_shows_the_node_it_holds(server: Server) -> None:
    rid = start(server)
    until(server, rid, lambda d: states_of(d).get("b") == "running")
    assert requests.post(f"{server.url}/flow/{rid}/pause", timeout=10).status_code == 200
    GATE.set()
    doc = until(server, rid, lambda d: states_of(d).get("c") == "held")
    assert doc["status"] == "paused"
    assert states_of(doc) == {"a": "succeeded", "b": "succeeded", "c": "held"}
    assert requests.post(f"{server.url}/flow/{rid}/resume", timeout=10).status_code == 200
    doc = until(server, rid, lambda d: d["status"] == "success")
    assert states_of(doc)["c"] == "succeeded"


def test_a_failed_node_keeps_its_real_start_end_and_attempt(server: Server) -> None:
    rid = start(server, "?kind=fail")
    doc = until(server, rid, lambda d: d["status"] == "failure")
    assert states_of(doc) == {"a": "succeeded", "b": "failed", "c": "pending"}
    failed = next(v for k, v in doc["nodes"].items() if k.endswith("_b"))
    assert failed["state"] == "failed"
    assert failed["duration_ms"] >= 250  # the modifier slept 0.3 s before raising
    assert failed["attempts"] == 1
    shown = next(v for k, v in doc["states"].items() if k.endswith("_b"))
    assert shown["end"] - shown["start"] >= 0.25


def test_a_branch_the_condition_did_not_take_is_skipped(server: Server) -> None:
    rid = start(server, "?kind=cond")
    doc = until(server, rid, lambda d: d["status"] == "success")
    assert states_of(doc) == {"a": "succeeded", "s": "succeeded", "l": "skipped",
                              "b": "succeeded", "c": "succeeded"}


def test_a_foreach_node_counts_its_branches_per_state(server: Server) -> None:
    rid = start(server, "?kind=each")
    doc = until(server, rid, lambda d: "running" in str(d["states"]))
    sq = next(v for k, v in doc["states"].items() if k.endswith("_sq"))
    assert sq["state"] == "running"
    assert sq["counts"] == {"succeeded": 2, "running": 1}
    GATE.set()
    doc = until(server, rid, lambda d: d["status"] == "success")
    sq = next(v for k, v in doc["states"].items() if k.endswith("_sq"))
    assert sq == {"state": "succeeded", "counts": {"succeeded": 3}}
