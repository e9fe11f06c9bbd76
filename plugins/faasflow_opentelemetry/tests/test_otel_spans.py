"""The span tree of a request, as a real OTLP receiver gets it."""

from __future__ import annotations

import threading

import pytest
from otel_driver import call_attributes, forward, node_attributes, run_node

from faasflow.testing import LoopbackServer
from faasflow.testing.otlp import OtlpReceiver, ReceivedSpan


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans}


def test_first_iteration_has_root_request_span_with_node_and_operation_children(
    make_tracer, receiver: OtlpReceiver
) -> None:
    handle = make_tracer().scoped("greet", "req-1")
    handle.request_start({})
    run_node(handle, "0_1_hello", ["echo", "modifier"])
    handle.request_end({"faasflow.status": "success"})
    handle.flush()

    spans = by_name(receiver.wait_for(4))
    request, node = spans["greet"], spans["0_1_hello"]
    echo, modifier = spans["echo"], spans["modifier"]
    assert request.is_root
    assert request.kind == "server"
    assert request.attributes["faasflow.request_id"] == "req-1"
    assert request.attributes["faasflow.status"] == "success"
    assert node.parent_id == request.span_id
    assert node.kind == "internal"
    assert echo.parent_id == node.span_id
    assert modifier.parent_id == node.span_id
    assert {s.trace_id for s in spans.values()} == {request.trace_id}


def test_node_span_carries_request_node_branch_and_attempt(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "req-2")
    handle.request_start({})
    run_node(handle, "0_2_split", branch="b7")
    handle.request_end({})
    handle.flush()

    node = by_name(receiver.wait_for(3))["0_2_split"]
    assert node.attributes["faasflow.request_id"] == "req-2"
    assert node.attributes["faasflow.node"] == "split"
    assert node.attributes["faasflow.node.unique_id"] == "0_2_split"
    assert node.attributes["faasflow.branch"] == "b7"
    assert node.attributes["faasflow.attempt"] == 1
    assert node.attributes["faasflow.exec_id"] == "0_2_split"


def test_function_call_is_http_client_span_with_semantic_convention_attributes(
    make_tracer, receiver
) -> None:
    handle = make_tracer().scoped("greet", "req-3")
    handle.request_start({})
    handle.node_start("0_1_a", node_attributes("req-3", "0_1_a"))
    handle.operation_start("resize", "0_1_a", {})
    handle.inject({})
    handle.operation_end(
        "resize", "0_1_a", call_attributes("http://127.0.0.1:8080/function/resize", 200, 2)
    )
    handle.node_end("0_1_a", {})
    handle.request_end({})
    handle.flush()

    call = by_name(receiver.wait_for(3))["resize"]
    assert call.kind == "client"
    assert call.attributes["http.request.method"] == "POST"
    assert call.attributes["url.full"] == "http://127.0.0.1:8080/function/resize"
    assert call.attributes["http.response.status_code"] == 200
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["server.port"] == 8080
    assert call.attributes["faasflow.retries"] == 2
    assert call.attributes["http.request.resend_count"] == 2
    assert call.attributes["faasflow.function"] == "resize"
    assert call.attributes["faasflow.request_id"] == "req-3"
    assert call.status == "unset"


def test_operation_without_a_call_is_internal_span(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "req-4")
    handle.request_start({})
    run_node(handle, "0_1_a", ["modifier"])
    handle.request_end({})
    handle.flush()

    assert by_name(receiver.wait_for(3))["modifier"].kind == "internal"


def test_credentials_in_url_are_redacted(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "req-5")
    handle.request_start({})
    handle.node_start("0_1_a", {})
    handle.operation_start("http-req-x", "0_1_a", {})
    handle.operation_end(
        "http-req-x", "0_1_a", call_attributes("https://user:secret@127.0.0.1/x", 200)
    )
    handle.node_end("0_1_a", {})
    handle.request_end({})
    handle.flush()

    call = by_name(receiver.wait_for(3))["http-req-x"]
    assert call.attributes["url.full"] == "https://REDACTED:REDACTED@127.0.0.1/x"
    assert call.attributes["server.port"] == 443


def test_failed_node_has_error_status_exception_event_and_error_type(
    make_tracer, receiver
) -> None:
    handle = make_tracer().scoped("greet", "req-6")
    handle.request_start({})
    run_node(handle, "0_1_a", ["resize"], fail="resize")
    handle.request_failure(RuntimeError("Node(0_1_a), Operation (resize) failed"))
    handle.flush()

    spans = by_name(receiver.wait_for(3))
    for name in ("greet", "0_1_a", "resize"):
        assert spans[name].status == "error", name
        assert [e.name for e in spans[name].events] == ["exception"]
    node = spans["0_1_a"]
    assert "invalid return status 500" in node.status_message
    assert node.attributes["error.type"] == "faasflow.errors.FunctionError"
    assert node.events[0].attributes["exception.type"] == "faasflow.errors.FunctionError"
    call = spans["resize"]
    assert call.kind == "client"  # a failed function call is still an HTTP client span
    assert call.attributes["http.response.status_code"] == 500
    assert spans["greet"].status_message == (
        "RuntimeError: Node(0_1_a), Operation (resize) failed"
    )


def test_error_status_code_marks_client_span_as_error(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("greet", "req-7")
    handle.request_start({})
    # an on_failure handler recovered: the operation ends, the node succeeds
    run_node(handle, "0_1_a", ["flaky"], status=503)
    handle.request_end({})
    handle.flush()

    spans = by_name(receiver.wait_for(3))
    assert spans["flaky"].status == "error"
    assert spans["flaky"].attributes["error.type"] == "503"
    assert spans["0_1_a"].status == "unset"


def test_later_iterations_chain_under_the_forwarding_node(make_tracer, receiver) -> None:
    backend = make_tracer()
    first = backend.scoped("chain", "req-8")
    first.request_start({})
    run_node(first, "0_1_a")
    carrier = forward(first)
    first.request_end({})
    first.flush()
    second = backend.scoped("chain", "req-8")
    second.request_continue(carrier)
    run_node(second, "0_2_b")
    carrier = forward(second)
    second.flush()
    third = backend.scoped("chain", "req-8")
    third.request_continue(carrier)
    run_node(third, "0_3_c")
    third.request_end({"faasflow.status": "success"})
    third.flush()

    spans = by_name(receiver.wait_for(7))
    assert len(receiver.traces()) == 1
    assert spans["0_2_b"].parent_id == spans["0_1_a"].span_id
    assert spans["0_3_c"].parent_id == spans["0_2_b"].span_id
    assert spans["0_2_b"].kind == "consumer"
    assert [s.name for s in receiver.spans if s.is_root] == ["chain"]


def test_forward_carrier_is_w3c_traceparent_of_the_node(make_tracer, receiver) -> None:
    handle = make_tracer().scoped("chain", "req-9")
    handle.request_start({})
    run_node(handle, "0_1_a")
    carrier = forward(handle)
    handle.request_end({})
    handle.flush()

    node = by_name(receiver.wait_for(3))["0_1_a"]
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", node.trace_id, node.span_id)
    assert int(flags, 16) & 1  # sampled


def test_function_receives_traceparent_naming_the_operation_span(
    make_tracer, receiver
) -> None:
    gateway = LoopbackServer()
    try:
        handle = make_tracer().scoped("greet", "req-10")
        handle.request_start({})
        received = run_node(handle, "0_1_a", ["inspect"], call_url=gateway.url)
        handle.request_end({})
        handle.flush()
    finally:
        gateway.close()

    call = by_name(receiver.wait_for(3))["inspect"]
    assert received["traceparent"].split("-")[1:3] == [call.trace_id, call.span_id]
    assert call.kind == "client"


def test_request_span_joins_a_trace_sent_by_the_caller(make_tracer, receiver) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    handle = make_tracer().scoped("greet", "req-11")
    handle.request_start({"Traceparent": caller})  # header names are case-insensitive
    handle.request_end({})
    handle.flush()

    request = receiver.wait_for(1)[0]
    assert request.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert request.parent_id == "b7ad6b7169203331"


def test_incoming_link_starts_a_new_trace_linked_to_the_caller(make_tracer, receiver) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    handle = make_tracer(OTEL_BSP_SCHEDULE_DELAY="100", FAASFLOW_OPENTELEMETRY_INCOMING="link")
    handle = handle.scoped("greet", "req-12")
    handle.request_start({"traceparent": caller})
    handle.request_end({})
    handle.flush()

    request = receiver.wait_for(1)[0]
    assert request.is_root
    assert request.trace_id != "0af7651916cd43dd8448eb211c80319c"
    assert request.links == (("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),)


def test_failure_in_later_iteration_outside_a_node_gets_an_error_span(
    make_tracer, receiver
) -> None:
    backend = make_tracer()
    first = backend.scoped("chain", "req-13")
    first.request_start({})
    run_node(first, "0_1_a")
    carrier = forward(first)
    first.flush()
    later = backend.scoped("chain", "req-13")
    later.request_continue(carrier)
    later.request_failure(RuntimeError("aggregator raised"))
    later.flush()

    spans = by_name(receiver.wait_for(4))
    failure = spans["request failure"]
    assert failure.status == "error"
    assert failure.status_message == "RuntimeError: aggregator raised"
    assert failure.parent_id == spans["0_1_a"].span_id
    assert failure.trace_id == spans["chain"].trace_id


def test_request_span_ends_with_the_iteration_even_without_request_end(
    make_tracer, receiver
) -> None:
    handle = make_tracer().scoped("chain", "req-14")
    handle.request_start({})
    run_node(handle, "0_1_a")
    forward(handle)
    handle.flush()  # the engine's last call of an iteration that handed work on

    spans = by_name(receiver.wait_for(3))
    assert spans["chain"].is_root
    assert spans["chain"].end_ns >= spans["0_1_a"].end_ns


def test_spans_left_open_by_a_failing_iteration_are_ended_as_errors(
    make_tracer, receiver
) -> None:
    handle = make_tracer().scoped("chain", "req-15")
    handle.request_start({})
    handle.node_start("0_2_each", node_attributes("req-15", "0_2_each"))
    handle.request_failure(RuntimeError("foreach raised"))
    handle.flush()

    spans = by_name(receiver.wait_for(2))
    assert spans["0_2_each"].status == "error"
    assert spans["0_2_each"].parent_id == spans["chain"].span_id


def test_service_name_is_the_flow_name_unless_configured(make_tracer, receiver) -> None:
    default = make_tracer()
    handle = default.scoped("orders", "r1")
    handle.request_start({})
    handle.request_end({})
    handle.flush()
    named = make_tracer(OTEL_SERVICE_NAME="shop", OTEL_RESOURCE_ATTRIBUTES="team=core,x=%20y")
    handle = named.scoped("orders", "r2")
    handle.request_start({})
    handle.request_end({})
    handle.flush()

    spans = receiver.wait_for(2)
    services = {s.attributes["faasflow.request_id"]: s for s in spans}
    assert services["r1"].service_name == "orders"
    assert services["r2"].service_name == "shop"
    assert services["r2"].resource["team"] == "core"
    assert services["r2"].resource["x"] == " y"
    assert services["r2"].scope == "faasflow"


def test_concurrent_requests_in_threads_each_form_their_own_trace(
    make_tracer, receiver
) -> None:
    backend = make_tracer()
    requests = 8
    barrier = threading.Barrier(requests)

    def one_request(index: int) -> None:
        rid = f"par-{index}"
        barrier.wait(timeout=10)
        first = backend.scoped("par", rid)
        first.request_start({})
        run_node(first, "0_1_a")
        carrier = forward(first)
        first.request_end({})
        first.flush()
        later = backend.scoped("par", rid)
        later.request_continue(carrier)
        run_node(later, "0_2_b")
        later.request_end({})
        later.flush()

    threads = [threading.Thread(target=one_request, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    receiver.wait_for(requests * 5)
    traces = receiver.traces()
    assert len(traces) == requests
    for spans in traces.values():
        named = by_name(spans)
        rid = named["par"].attributes["faasflow.request_id"]
        assert {s.attributes["faasflow.request_id"] for s in spans} == {rid}
        assert named["0_2_b"].parent_id == named["0_1_a"].span_id
        assert named["0_1_a"].parent_id == named["par"].span_id


@pytest.mark.parametrize("sampler", ["always_off", "parentbased_always_off"])
def test_unsampled_requests_export_nothing_but_still_propagate(
    make_tracer, receiver, sampler
) -> None:
    handle = make_tracer(OTEL_TRACES_SAMPLER=sampler).scoped("greet", "req-16")
    handle.request_start({})
    run_node(handle, "0_1_a")
    carrier = forward(handle)
    handle.request_end({})
    handle.flush()
    handle.close()

    assert receiver.spans == []
    assert carrier["traceparent"].endswith(("-00", "-02"))  # not sampled


def test_disabled_sdk_exports_and_injects_nothing(make_tracer, receiver) -> None:
    handle = make_tracer(OTEL_SDK_DISABLED="true").scoped("greet", "req-17")
    handle.request_start({})
    run_node(handle, "0_1_a")
    carrier = forward(handle)
    handle.request_end({})
    handle.flush()
    handle.close()

    assert receiver.spans == []
    assert carrier == {}
