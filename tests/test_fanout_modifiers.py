"""A fan-out of modifier branches on a tracer that ignores events: each branch runs its modifier
without a call object and shows its request to the context, as any node does."""

from __future__ import annotations

from typing import Any

from faasflow import Context, Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.plugins import Registry
from faasflow.settings import Settings

SETTINGS = Settings(environ={"FAASFLOW_LOCAL_WORKERS": "4"})


def _engine(define: Any) -> Engine:
    registry = Registry.from_settings(SETTINGS)
    backends = Backends(
        registry.create(Kind.STATE_STORE, SETTINGS, "memory"),
        registry.create(Kind.DATA_STORE, SETTINGS, "memory"),
        registry.create(Kind.TRACER, SETTINGS, "none"),
        registry.create(Kind.INVOKER, SETTINGS, "local"),
    )
    return Engine(Flow(define, name="fan"), SETTINGS, backends)


def _fan(step: Any, branches: int = 4) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("start").modify(lambda data: data)
        dag.node("join", aggregator=lambda found: b",".join(found[k] for k in sorted(found)))
        for index in range(branches):
            dag.node(f"b{index}").modify(step)
            dag.edge("start", f"b{index}")
            dag.edge(f"b{index}", "join")

    return define


def _run(engine: Engine, data: bytes) -> Any:
    try:
        started = engine.start(data)
        record = engine.wait(started.request_id, timeout=30)
        assert record is not None
        return started.request_id, record
    finally:
        engine.close()


def test_branch_modifiers_see_their_request_and_node_and_may_return_text() -> None:
    def step(data: bytes) -> str:
        context = Context()
        return f"{context.request_id}:{context.node}:{data.decode()}"

    rid, record = _run(_engine(_fan(step)), b"in")
    assert record.status == "success"
    parts = record.output.decode().split(",")
    assert len(parts) == 4
    for index, part in enumerate(parts):  # the node is its execution id: its unique id here
        request, node, data = part.split(":")
        assert (request, data) == (rid, "in") and node.endswith(f"_b{index}")


def test_a_failing_branch_modifier_fails_the_request_naming_its_node() -> None:
    def step(data: bytes) -> bytes:
        if Context().node.endswith("_b2"):
            raise ValueError("boom")
        return data

    _, record = _run(_engine(_fan(step)), b"in")
    assert record.status == "failure"
    assert record.error is not None
    assert "_b2), Operation (modifier) failed: ValueError: boom" in record.error


def test_a_branch_modifier_returning_no_bytes_nor_text_is_a_clear_failure() -> None:
    _, record = _run(_engine(_fan(lambda data: 42)), b"in")
    assert record.status == "failure"
    assert record.error is not None
    assert "Operation (modifier) failed" in record.error and "returned int 42" in record.error
