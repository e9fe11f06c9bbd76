"""Registration, the factory option and the default global tracer, with OpenTracing's own
in-memory tracer (``opentracing.mocktracer``)."""

from __future__ import annotations

import logging

import factories
import opentracing
import pytest
from faasflow_opentracing import OpenTracingTracer
from opentracing.mocktracer import MockTracer
from ot_driver import forward, run_node

from faasflow import ConfigurationError
from faasflow.settings import Settings
from faasflow.testing import assert_backend_registered


def from_env(env: dict[str, str]) -> OpenTracingTracer:
    backend = assert_backend_registered("tracer", "opentracing").backend
    tracer = backend.factory(Settings.from_env(env).options_for(backend))
    assert isinstance(tracer, OpenTracingTracer)
    return tracer


def test_backend_is_found_through_its_entry_point() -> None:
    registered = assert_backend_registered("tracer", "opentracing")

    assert registered.distribution == "faasflow-opentracing"
    assert set(registered.backend.options) == {"factory", "service_name", "incoming"}


def test_spans_go_to_the_tracer_the_factory_returns() -> None:
    backend = from_env({"FAASFLOW_OPENTRACING_FACTORY": "factories:mock"})
    handle = backend.scoped("greet", "opt-1")
    handle.request_start({})
    run_node(handle, "0_1_a", ["echo"])
    carrier = forward(handle)
    handle.request_end({})

    spans = {s.operation_name: s for s in factories.TRACERS["greet"].finished_spans()}
    assert set(spans) == {"greet", "0_1_a", "echo"}
    assert spans["0_1_a"].parent_id == spans["greet"].context.span_id
    assert spans["echo"].parent_id == spans["0_1_a"].context.span_id
    assert spans["echo"].tags["span.kind"] == "client"
    assert spans["echo"].tags["http.status_code"] == 200
    assert spans["greet"].tags["span.kind"] == "server"
    assert carrier  # the mock tracer's own header format


def test_later_iteration_continues_from_the_tracers_headers() -> None:
    backend = from_env({"FAASFLOW_OPENTRACING_FACTORY": "factories:mock"})
    first = backend.scoped("chain", "opt-2")
    first.request_start({})
    run_node(first, "0_1_a")
    carrier = forward(first)
    first.flush()
    later = backend.scoped("chain", "opt-2")
    later.request_continue({k.title(): v for k, v in carrier.items()})  # header case varies
    run_node(later, "0_2_b")
    later.request_end({})

    spans = {s.operation_name: s for s in factories.TRACERS["chain"].finished_spans()}
    assert spans["0_2_b"].parent_id == spans["0_1_a"].context.span_id
    assert spans["0_2_b"].context.trace_id == spans["chain"].context.trace_id
    assert spans["0_2_b"].tags["span.kind"] == "consumer"


def test_factory_is_called_once_per_flow_with_the_service_name() -> None:
    factories.CALLS.clear()
    backend = from_env({"FAASFLOW_OPENTRACING_FACTORY": "factories:mock"})
    for rid in ("a", "b"):
        handle = backend.scoped("orders", rid)
        handle.request_start({})
        handle.request_end({})
    backend.scoped("billing", "c").request_start({})
    named = from_env({
        "FAASFLOW_OPENTRACING_FACTORY": "factories:mock",
        "FAASFLOW_OPENTRACING_SERVICE_NAME": "shop",
    })
    named.scoped("orders", "d").request_start({})

    assert factories.CALLS == ["orders", "billing", "shop"]


def test_default_is_the_global_opentracing_tracer() -> None:
    mock = MockTracer()
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(mock)
    try:
        handle = from_env({}).scoped("greet", "opt-3")
        handle.request_start({})
        run_node(handle, "0_1_a")
        handle.request_end({})
    finally:
        opentracing.set_global_tracer(previous)

    assert {s.operation_name for s in mock.finished_spans()} == {"greet", "0_1_a", "echo"}


def test_failure_sets_the_error_tag_and_logs_the_error() -> None:
    backend = from_env({"FAASFLOW_OPENTRACING_FACTORY": "factories:mock"})
    handle = backend.scoped("broken", "opt-4")
    handle.request_start({})
    run_node(handle, "0_1_a", ["resize"], fail="resize")
    handle.request_failure(RuntimeError("Node(0_1_a) failed"))

    spans = {s.operation_name: s for s in factories.TRACERS["broken"].finished_spans()}
    for name in ("broken", "0_1_a", "resize"):
        assert spans[name].tags["error"] is True
        (entry,) = spans[name].logs
        assert entry.key_values["event"] == "error"
    assert spans["0_1_a"].logs[0].key_values["error.kind"] == "FunctionError"
    assert "FunctionError: invalid return status 500" in spans["0_1_a"].logs[0].key_values["stack"]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("factories", "package.module:callable"),
        ("no_such_module_here:make", "cannot import 'no_such_module_here'"),
        ("factories:missing", "has no 'missing'"),
        ("factories:CALLS", "is not callable"),
    ],
)
def test_bad_factory_is_a_configuration_error(spec, named) -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_OPENTRACING_FACTORY") as caught:
        from_env({"FAASFLOW_OPENTRACING_FACTORY": spec})

    assert named in str(caught.value)


def test_bad_incoming_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_OPENTRACING_INCOMING"):
        from_env({"FAASFLOW_OPENTRACING_INCOMING": "adopt"})


def test_factory_returning_something_else_is_reported_not_raised(caplog) -> None:
    backend = from_env({"FAASFLOW_OPENTRACING_FACTORY": "factories:not_a_tracer"})
    handle = backend.scoped("greet", "opt-5")
    with caplog.at_level(logging.WARNING, "faasflow.tracer.opentracing"):
        handle.request_start({})
        handle.node_start("0_1_a", {})

    assert backend.errors == 2
    assert len(caplog.records) == 1  # once per iteration, not per event
    assert "not an opentracing.Tracer" in caplog.text
