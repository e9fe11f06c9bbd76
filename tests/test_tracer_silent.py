"""A tracer that ignores every event (``none``) says so with ``Tracer.silent``, and the engine
then skips building and sending node events; any other tracer, a subclass of ``none``
included, still hears every node and operation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.default_plugins.tracers import NoTracer
from faasflow.engine import Backends, Engine
from faasflow.plugins import Registry
from faasflow.settings import Settings


class Counting(NoTracer):
    """A subclass of ``none`` that listens to node events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def scoped(self, flow_name: str, request_id: str) -> Counting:
        return self

    def node_start(self, node: str, attributes: Mapping[str, object]) -> None:
        self.events.append(("node_start", str(attributes["faasflow.node"])))

    def operation_end(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        self.events.append(("operation_end", node))


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(lambda d: d + b"a")
    dag.node("b").modify(lambda d: d + b"b")
    dag.edge("a", "b")


def run_with(tracer: NoTracer) -> bytes:
    settings = Settings(environ={})
    registry = Registry.shared(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "memory"),
        registry.create(Kind.DATA_STORE, settings, "memory"),
        tracer,
        registry.create(Kind.INVOKER, settings, "local"),
    )
    engine = Engine(Flow(define, name="silent"), settings, backends)
    try:
        record = engine.wait(engine.start(b">").request_id, timeout=30)
    finally:
        engine.close()
    assert record is not None and record.status == "success"
    return record.output or b""


def test_the_none_tracer_is_silent_and_the_flow_runs_the_same() -> None:
    assert NoTracer.silent is True
    assert run_with(NoTracer()) == b">ab"


def test_a_subclass_of_none_that_listens_is_not_silent_and_hears_every_node() -> None:
    tracer = Counting()
    assert tracer.silent is False
    assert run_with(tracer) == b">ab"
    assert [e for e in tracer.events if e[0] == "node_start"] == [
        ("node_start", "a"), ("node_start", "b")]
    assert len([e for e in tracer.events if e[0] == "operation_end"]) == 2
