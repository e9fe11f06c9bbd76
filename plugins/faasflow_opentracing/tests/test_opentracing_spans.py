"""Spans through a real OpenTracing tracer (OpenTelemetry's shim), received over OTLP."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "opentelemetry.shim.opentracing_shim",
    reason="the OpenTracing tracer of these tests is OpenTelemetry's shim: "
    "pip install 'faasflow-opentracing[test]'",
)

import threading  # noqa: E402

from ot_driver import forward, run_node  # noqa: E402

from faasflow.testing import LoopbackServer  # noqa: E402
from faasflow.testing.otlp import ReceivedSpan  # noqa: E402


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans}


def test_request_node_and_operation_spans_form_one_tree(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "ot-1")
    handle.request_start({})
    run_node(handle, "0_1_hello", ["echo"])
    handle.request_end({"faasflow.status": "success"})
    handle.flush()

    spans = by_name(receiver.wait_for(3))
    request, node, call = spans["greet"], spans["0_1_hello"], spans["echo"]
    assert request.is_root
    assert node.parent_id == request.span_id
    assert call.parent_id == node.span_id
    assert len(receiver.traces()) == 1
    assert request.attributes["span.kind"] == "server"
    assert request.attributes["faasflow.status"] == "success"
    assert node.attributes["faasflow.node"] == "hello"
    assert node.attributes["component"] == "faasflow"


def test_function_calls_carry_opentracing_http_tags(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "ot-2")
    handle.request_start({})
    handle.node_start("0_1_a", {})
    handle.operation_start("resize", "0_1_a", {})
    handle.operation_end("resize", "0_1_a", {
        "http.request.method": "POST", "url.full": "http://u:p@127.0.0.1:8080/function/resize",
        "http.response.status_code": 502, "faasflow.retries": 1,
    })
    handle.node_end("0_1_a", {})
    handle.request_end({})
    handle.flush()

    call = by_name(receiver.wait_for(3))["resize"]
    assert call.attributes["span.kind"] == "client"
    assert call.attributes["http.method"] == "POST"
    assert call.attributes["http.url"] == "http://REDACTED:REDACTED@127.0.0.1:8080/function/resize"
    assert call.attributes["http.status_code"] == 502
    assert call.attributes["error"] is True
    assert call.attributes["faasflow.retries"] == 1


def test_failed_node_is_tagged_error_with_an_error_log(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "ot-3")
    handle.request_start({})
    run_node(handle, "0_1_a", ["resize"], fail="resize")
    handle.request_failure(RuntimeError("Node(0_1_a) failed"))
    handle.flush()

    spans = by_name(receiver.wait_for(3))
    for name in ("greet", "0_1_a", "resize"):
        assert spans[name].attributes["error"] is True, name
        (event,) = spans[name].events
        assert event.name == "error"
        assert event.attributes["event"] == "error"
    assert spans["0_1_a"].events[0].attributes["error.kind"] == "FunctionError"
    assert "invalid return status 500" in spans["0_1_a"].events[0].attributes["message"]
    assert spans["greet"].events[0].attributes["message"] == "Node(0_1_a) failed"
    assert spans["resize"].attributes["http.status_code"] == 500


def test_iterations_chain_through_the_tracers_own_headers(make_tracer, receiver) -> None:
    backend = make_tracer()
    first = backend.scoped("chain", "ot-4")
    first.request_start({})
    run_node(first, "0_1_a")
    carrier = forward(first)
    first.flush()
    later = backend.scoped("chain", "ot-4")
    later.request_continue(carrier)
    run_node(later, "0_2_b")
    later.request_end({})
    later.flush()

    spans = by_name(receiver.wait_for(5))
    assert "traceparent" in carrier  # the shim's format is W3C trace context
    assert len(receiver.traces()) == 1
    assert spans["0_2_b"].parent_id == spans["0_1_a"].span_id
    assert spans["0_2_b"].attributes["span.kind"] == "consumer"


def test_iterations_in_separate_processes_form_one_trace(run_in_process, receiver) -> None:
    job = {"flow": "chain", "request": "ot-5"}
    first = run_in_process({**job, "first": True, "node": "0_1_a"})
    second = run_in_process({**job, "carrier": first["forward"], "node": "0_2_b"})
    run_in_process({**job, "carrier": second["forward"], "node": "0_3_c"})

    spans = by_name(receiver.wait_for(7))
    assert len(receiver.traces()) == 1
    assert spans["0_2_b"].parent_id == spans["0_1_a"].span_id
    assert spans["0_3_c"].parent_id == spans["0_2_b"].span_id
    assert spans["0_3_c"].service_name == "chain"


def test_function_receives_the_context_of_its_operation_span(run_in_process, receiver) -> None:
    gateway = LoopbackServer()
    try:
        done = run_in_process({
            "flow": "greet", "request": "ot-6", "first": True, "node": "0_1_a",
            "operations": ["inspect"], "call_url": gateway.url,
        })
    finally:
        gateway.close()

    call = by_name(receiver.wait_for(3))["inspect"]
    assert done["called"]["traceparent"].split("-")[1:3] == [call.trace_id, call.span_id]


def test_request_span_continues_a_context_sent_by_the_caller(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "ot-7")
    handle.request_start({"TraceParent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    handle.request_end({})
    handle.flush()

    request = receiver.wait_for(1)[0]
    assert (request.trace_id, request.parent_id) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    )


def test_concurrent_requests_keep_their_own_traces(make_tracer, receiver) -> None:
    backend = make_tracer()
    count = 6
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        barrier.wait(timeout=10)
        first = backend.scoped("par", f"p{index}")
        first.request_start({})
        run_node(first, "0_1_a")
        carrier = forward(first)
        first.flush()
        later = backend.scoped("par", f"p{index}")
        later.request_continue(carrier)
        run_node(later, "0_2_b")
        later.request_end({})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    receiver.wait_for(count * 5)
    traces = receiver.traces()
    assert len(traces) == count
    for spans in traces.values():
        named = by_name(spans)
        assert named["0_2_b"].parent_id == named["0_1_a"].span_id
        assert len({s.attributes["faasflow.request_id"] for s in spans}) == 1

