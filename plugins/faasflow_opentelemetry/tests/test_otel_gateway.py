"""End to end: flows run by the local gateway (``faasflow up``) across worker processes with
FAASFLOW_TRACER=opentelemetry, their spans collected by a real OTLP receiver."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator

import pytest

from faasflow.runtime.process import GatewayProcess
from faasflow.testing.otlp import OtlpReceiver, ReceivedSpan

STACK = """\
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  nested:
    lang: faasflow
    handler: ./nested
  chain:
    lang: faasflow
    handler: ./chain
  broken:
    lang: faasflow
    handler: ./broken
  probe:
    lang: python3-http
    handler: ./probe
"""

HANDLERS = {
    # a foreach inside a foreach; every inner branch calls the probe function
    "nested": '''
        def define(flow, context):
            dag = flow.dag()
            dag.node("start").modify(lambda data: data)
            outer = dag.foreach_branch("outer", split, aggregator=join)
            inner = outer.foreach_branch("inner", split_letters, aggregator=join)
            inner.node("call").apply("probe")
            dag.edge("start", "outer")

        def split(data):
            return {word: word for word in data.decode().split()}

        def split_letters(data):
            return {letter: letter for letter in data.decode()}

        def join(results):
            return " ".join(results[key].decode() for key in sorted(results))
    ''',
    # three nodes, so three iterations handed from process to process
    "chain": '''
        def define(flow, context):
            dag = flow.dag()
            dag.node("first").apply("probe")
            dag.node("second").modify(lambda data: data)
            dag.node("third").apply("probe")
            dag.edge("first", "second")
            dag.edge("second", "third")
    ''',
    "broken": '''
        def define(flow, context):
            dag = flow.dag()
            dag.node("fine").modify(lambda data: data)
            dag.node("failing").modify(explode)
            dag.edge("fine", "failing")

        def explode(data):
            raise ValueError("the failing node failed on purpose")
    ''',
    # answers with the trace context it was called with
    "probe": '''
        def handle(event, context):
            return event.headers.get("traceparent") or "none"
    ''',
}


class Gateway(GatewayProcess):
    def _drain(self) -> None:
        # GatewayProcess leaves its stdout pipe open (a ResourceWarning under -W error): the
        # reader closes it once the gateway has exited.
        try:
            super()._drain()
        finally:
            assert self.process is not None
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """One receiver for the module's gateway; tests pick their spans by request id."""
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[GatewayProcess]:
    tmp_path = tmp_path_factory.mktemp("stack")
    (tmp_path / "stack.yml").write_text(STACK)
    for name, source in HANDLERS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(textwrap.dedent(source))
    env = {
        **os.environ,
        "FAASFLOW_TRACER": "opentelemetry",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with Gateway(
        tmp_path / "stack.yml", data_dir=tmp_path / "data", processes=3, env=env
    ) as running:
        yield running


def run(gateway: GatewayProcess, flow: str, body: str, request_id: str) -> dict:
    answer = gateway.post(
        f"/function/{flow}", data=body,
        headers={"X-Faas-Flow-Reqid": request_id, "X-Faas-Flow-Wait": "60"},
    )
    assert answer.status_code in (200, 500), answer.text
    return gateway.get(f"/function/{flow}/flow/{request_id}").json()


def trace_of(receiver: OtlpReceiver, request_id: str, count: int) -> list[ReceivedSpan]:
    def arrived(spans: list[ReceivedSpan]) -> bool:
        return sum(s.attributes.get("faasflow.request_id") == request_id for s in spans) >= count

    spans = receiver.wait_for(arrived, timeout=30)
    return [s for s in spans if s.attributes.get("faasflow.request_id") == request_id]


def test_nested_foreach_is_one_trace_with_node_and_operation_spans(gateway, receiver) -> None:
    record = run(gateway, "nested", "ab c", "nested-1")
    assert record["status"] == "success", record

    # request + start + outer + 2 outer branches' inner nodes + 3 calls (a, b, c) ...
    spans = trace_of(receiver, "nested-1", 1 + 2 + 1 + 2 + 3 * 2)
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    (request,) = [s for s in spans if s.is_root]
    assert request.name == "nested"
    assert request.service_name == "nested"
    for span in spans:
        if span is not request:
            assert span.parent_id in by_id, f"{span.name} has a parent outside the trace"
    calls = [s for s in spans if s.name == "probe"]
    assert len(calls) == 3
    for call in calls:
        node = by_id[call.parent_id]
        assert node.attributes["faasflow.node"] == "call"
        inner = by_id[node.parent_id]
        assert inner.attributes["faasflow.node"] == "inner"
        assert by_id[inner.parent_id].attributes["faasflow.node"] == "outer"
        assert call.kind == "client"
        assert call.attributes["http.response.status_code"] == 200
    branches = sorted(str(by_id[c.parent_id].attributes["faasflow.branch"]) for c in calls)
    assert branches == ["ab/a", "ab/b", "c/c"]


def test_iterations_in_worker_processes_chain_parent_to_child(gateway, receiver) -> None:
    record = run(gateway, "chain", "x", "chain-1")
    assert record["status"] == "success", record

    spans = trace_of(receiver, "chain-1", 1 + 3 + 2)
    nodes = {s.attributes["faasflow.node"]: s for s in spans if "faasflow.node" in s.attributes}
    request = next(s for s in spans if s.is_root)
    assert nodes["first"].parent_id == request.span_id
    assert nodes["second"].parent_id == nodes["first"].span_id
    assert nodes["third"].parent_id == nodes["second"].span_id
    assert len({s.trace_id for s in spans}) == 1


def test_called_function_received_the_operation_span_as_its_parent(gateway, receiver) -> None:
    record = run(gateway, "chain", "x", "chain-2")
    assert record["status"] == "success", record

    spans = trace_of(receiver, "chain-2", 1 + 3 + 2)
    by_id = {s.span_id: s for s in spans}
    (third_call,) = [
        s for s in spans
        if s.name == "probe" and by_id[s.parent_id].attributes["faasflow.node"] == "third"
    ]
    # the output of the flow is what the last probe call received in its traceparent header
    output = gateway.get("/function/chain/flow/chain-2").json()["output"]
    received = output if isinstance(output, str) else json.dumps(output)
    assert received.split("-")[1:3] == [third_call.trace_id, third_call.span_id]


def test_failed_node_span_has_error_status(gateway, receiver) -> None:
    record = run(gateway, "broken", "x", "broken-1")
    assert record["status"] == "failure", record

    spans = trace_of(receiver, "broken-1", 1 + 2 + 1)
    failing = next(s for s in spans if s.attributes.get("faasflow.node") == "failing")
    assert failing.status == "error"
    assert "the failing node failed on purpose" in failing.status_message
    fine = next(s for s in spans if s.attributes.get("faasflow.node") == "fine")
    assert fine.status == "unset"
    assert len({s.trace_id for s in spans}) == 1
