"""What a failure keeps: the function's status and the start of its answer, the traceback of
the user's code, in the record and the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from faasflow import Flow
from faasflow.engine import Engine
from faasflow.interfaces import Response
from faasflow.settings import Settings


def answer_500(_: bytes) -> Response:
    return Response(500, b"database is down\n" + b"x" * 10_000)


def broken_modifier(data: bytes) -> bytes:
    return bytes(data + 1)  # type: ignore[operator]  # the user's bug, on this line


def broken_aggregator(results: dict[str, bytes]) -> bytes:
    raise KeyError("missing-branch")


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    kind = context.query.get("kind")
    if kind == "status":
        dag.node("a").apply("answer-500")
    elif kind == "modifier":
        dag.node("a").modify(broken_modifier)
    else:
        each = dag.foreach_branch("a", lambda d: {"1": d, "2": d}, aggregator=broken_aggregator)
        each.node("n").modify(lambda d: d)
    dag.node("b").modify(lambda d: d)
    dag.edge("a", "b")


def run(kind: str) -> dict[str, Any]:
    engine = Engine.from_settings(Flow(define, name="failing"),
                                  Settings.from_env({}).with_backends(invoker="local"),
                                  functions={"answer-500": answer_500})
    try:
        started = engine.start(b"in", query=f"kind={kind}")
        record = engine.wait(started.request_id, 20)
        assert record is not None and record.status == "failure"
        doc: dict[str, Any] = record.to_json()
        return doc
    finally:
        engine.close()


def test_a_failing_function_keeps_its_status_and_the_first_4_kib_of_its_answer() -> None:
    failure = run("status")["failure"]
    assert failure["status"] == 500
    assert failure["body"].startswith("database is down\n")
    assert len(failure["body"]) == 4096
    assert failure["body_truncated"] is True


def test_an_exception_in_a_modifier_keeps_the_users_file_and_line() -> None:
    failure = run("modifier")["failure"]
    trace = failure["traceback"]
    assert f'{__file__}", line' in trace
    assert "in broken_modifier" in trace and "the user's bug, on this line" in trace
    assert trace.splitlines()[-1].startswith("TypeError:")
    assert "faasflow/engine" not in trace  # trimmed to the user's frames


def test_an_exception_in_an_aggregator_keeps_its_traceback() -> None:
    doc = run("aggregator")
    assert "in broken_aggregator" in doc["failure"]["traceback"]
    assert doc["failure"]["traceback"].endswith("KeyError: 'missing-branch'")


def test_the_failure_log_names_the_users_line_and_holds_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="faasflow.engine"):
        run("modifier")
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"(at {__file__}:22 in broken_modifier)" in warning
    assert any(r.levelno == logging.INFO and "in broken_modifier" in r.getMessage()
               and "Traceback" in r.getMessage() for r in caplog.records)
