"""One result type: faasflow.run, Engine.start and GET /flow/<id> all give a faasflow.Result."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from engine_harness import Harness

import faasflow
from faasflow.engine import StartResult
from faasflow.engine.records import RequestRecord
from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings


class Boom(ValueError):
    pass


def explode(_: bytes) -> bytes:
    raise Boom("no such order")


def chain(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(lambda d: d + b"-a")
    dag.node("b").modify(lambda d: d if not context.query.get("fail") else explode(d))
    dag.edge("a", "b")


def test_run_returns_a_result_with_a_status_enum() -> None:
    result = faasflow.run(chain, b"in")
    assert isinstance(result, faasflow.Result)
    assert result.status is faasflow.Status.SUCCESS
    assert result.status == "success"  # a str enum: old comparisons keep working
    assert (result.ok, result.output, result.text, result.error) == (True, b"in-a", "in-a", None)
    assert result.raise_for_status() is result
    assert result.exception is None


def test_the_result_of_a_run_carries_the_record_details() -> None:
    result = faasflow.run(chain, b"in")
    assert result.created is not None and result.ended is not None
    assert result.ended >= result.created
    assert {k.rsplit("_", 1)[-1] for k in result.nodes} == {"a", "b"}


def test_a_failed_run_has_an_exception_naming_the_node_with_the_original_cause() -> None:
    result = faasflow.run(chain, b"in", query="fail=1")
    assert result.status is faasflow.Status.FAILURE
    assert not result.ok
    exc = result.exception
    assert isinstance(exc, faasflow.FlowFailure)
    assert exc.node.endswith("b")
    assert exc.request_id == result.request_id
    assert isinstance(exc.__cause__, Boom)
    assert "no such order" in str(exc)


def test_raise_for_status_raises_the_flow_failure() -> None:
    result = faasflow.run(chain, b"in", query="fail=1")
    with pytest.raises(faasflow.FlowFailure) as caught:
        result.raise_for_status()
    assert isinstance(caught.value.__cause__, Boom)


def test_a_failed_sync_flow_keeps_its_cause() -> None:
    def single(flow: Any, context: Any) -> None:
        flow.sync_node().modify(explode)

    result = faasflow.run(single, b"x")
    assert result.status is faasflow.Status.FAILURE
    assert isinstance(result.exception, faasflow.FlowFailure)
    assert isinstance(result.exception.__cause__, Boom)


def test_result_json_parses_the_output() -> None:
    def define(flow: Any, context: Any) -> None:
        flow.dag(codec=faasflow.JSON).node("n").modify(lambda d: {"got": d["id"]})

    assert faasflow.run(define, {"id": 42}).json() == {"got": 42}


def test_status_is_serialised_as_its_lower_case_value() -> None:
    assert json.dumps({"s": faasflow.Status.PAUSED}) == '{"s": "paused"}'
    assert str(faasflow.Status.RUNNING) == f"{faasflow.Status.RUNNING}" == "running"


def test_the_old_result_names_are_aliases_of_result() -> None:
    assert faasflow.RunResult is faasflow.Result
    assert StartResult is faasflow.Result


def test_engine_start_returns_a_running_result_for_a_request_still_going() -> None:
    harness = Harness(chain)
    started = harness.start(b"in")
    assert isinstance(started, faasflow.Result)
    assert started.status is faasflow.Status.RUNNING
    assert not started.done and started.exception is None
    harness.drain()
    record = harness.engine.record(started.request_id)
    assert record is not None
    assert faasflow.Result.from_record(record).output == b"in-a"


@pytest.fixture
def server() -> Iterator[Server]:
    served = serve(FlowApp(chain, Settings.from_env({"FAASFLOW_FLOW_NAME": "res"}))).start()
    yield served
    served.close()


def record_of(server: Server, query: str = "") -> dict[str, Any]:
    rid = requests.post(f"{server.url}/{query}", data=b"in", timeout=10).headers[
        "X-Faas-Flow-Reqid"]
    deadline = time.time() + 15
    while True:
        doc: dict[str, Any] = requests.get(f"{server.url}/flow/{rid}", timeout=10).json()
        if doc["status"] in ("success", "failure") or time.time() > deadline:
            return doc
        time.sleep(0.02)


def test_a_record_over_http_parses_into_the_same_result_shape(server: Server) -> None:
    doc = record_of(server)
    result = faasflow.Result.from_json(doc)
    assert (result.status, result.output, result.flow) == (faasflow.Status.SUCCESS, b"in-a",
                                                           "res")
    record = RequestRecord.from_json(doc)
    assert faasflow.Result.from_record(record) == result


def test_a_failed_record_over_http_raises_naming_the_failed_node(server: Server) -> None:
    result = faasflow.Result.from_json(record_of(server, "?fail=1"))
    assert result.status is faasflow.Status.FAILURE
    with pytest.raises(faasflow.FlowFailure) as caught:
        result.raise_for_status()
    assert caught.value.node.endswith("b")
    assert caught.value.__cause__ is None  # the original exception stayed in the server
