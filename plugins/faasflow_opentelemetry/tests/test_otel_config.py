"""Options: the standard OTEL_* variables, FAASFLOW_OPENTELEMETRY_* overrides, clear errors."""

from __future__ import annotations

import pytest
from faasflow_opentelemetry import Config, OpenTelemetryTracer

from faasflow import ConfigurationError
from faasflow.settings import Settings
from faasflow.testing import assert_backend_registered


def config_from(env: dict[str, str]) -> Config:
    registered = assert_backend_registered("tracer", "opentelemetry")
    options = Settings.from_env(env).options_for(registered.backend)
    return Config.from_options(options)


def test_backend_is_found_through_its_entry_point() -> None:
    registered = assert_backend_registered("tracer", "opentelemetry")

    assert registered.distribution == "faasflow-opentelemetry"
    assert registered.backend.factory({}).__class__ is OpenTelemetryTracer
    assert "endpoint" in registered.backend.options


def test_defaults_follow_the_opentelemetry_specification() -> None:
    config = config_from({})

    assert config.traces_endpoint == "http://localhost:4318/v1/traces"
    assert config.sampler == "parentbased_always_on"
    assert config.propagators == ("tracecontext", "baggage")
    assert config.service_for("orders") == "orders"


def test_standard_variables_configure_the_exporter() -> None:
    config = config_from({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc,tenant=t%201",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "500",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64",
    })

    assert config.traces_endpoint == "http://collector:4318/v1/traces"
    assert config.headers == (("api-key", "abc"), ("tenant", "t 1"))
    assert config.timeout == 0.5
    assert (config.sampler, config.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert config.schedule_delay == 0.2
    assert config.max_export_batch_size == 64


def test_traces_specific_variables_win_over_the_general_ones() -> None:
    config = config_from({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom/path",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=general",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=traces",
    })

    assert config.traces_endpoint == "http://traces:4318/custom/path"
    assert config.headers == (("a", "traces"),)


def test_faasflow_variables_win_over_standard_ones() -> None:
    config = config_from({
        "OTEL_SERVICE_NAME": "from-otel",
        "FAASFLOW_OPENTELEMETRY_SERVICE_NAME": "from-faasflow",
    })

    assert config.service_for("orders") == "from-faasflow"


def test_service_name_from_resource_attributes() -> None:
    config = config_from({"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing,team=x"})

    assert config.service_for("orders") == "billing"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "sampler='sometimes'"),
        ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}, "gzip"),
        ({"FAASFLOW_OPENTELEMETRY_INCOMING": "adopt"}, "FAASFLOW_OPENTELEMETRY_INCOMING"),
        ({"OTEL_SDK_DISABLED": "perhaps"}, "true or false"),
    ],
)
def test_bad_values_are_configuration_errors_naming_the_variable(env, named) -> None:
    with pytest.raises(ConfigurationError, match="opentelemetry tracer") as caught:
        config_from(env)

    assert named in str(caught.value)


def test_unknown_propagator_fails_at_start_up_listing_the_installed_ones() -> None:
    registered = assert_backend_registered("tracer", "opentelemetry")
    options = Settings.from_env({"OTEL_PROPAGATORS": "tracecontext,b3"}).options_for(
        registered.backend
    )

    with pytest.raises(ConfigurationError, match=r"'b3' is not installed; installed: .*trace"):
        registered.backend.factory(options)


def test_propagators_none_injects_nothing() -> None:
    tracer = OpenTelemetryTracer(config_from({"OTEL_PROPAGATORS": "none"})).scoped("o", "r")
    tracer.request_start({})
    carrier: dict[str, str] = {}
    tracer.inject(carrier)
    tracer.close()

    assert carrier == {}


GLOBAL_PROVIDER_SCRIPT = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from faasflow_opentelemetry import OpenTelemetryTracer
from otel_driver import forward, run_node

memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(provider)  # what opentelemetry-instrument would have done

handle = OpenTelemetryTracer.from_options({"provider": "global"}).scoped("greet", "g1")
handle.request_start({})
run_node(handle, "0_1_a", ["echo"])
carrier = forward(handle)
handle.request_end({})
spans = {s.name: s for s in memory.get_finished_spans()}
print(json.dumps({
    "names": sorted(spans),
    "echo_kind": spans["echo"].kind.name,
    "echo_parent": format(spans["echo"].parent.span_id, "016x"),
    "node": format(spans["0_1_a"].context.span_id, "016x"),
    "traceparent": carrier.get("traceparent", ""),
}))
"""


def test_global_provider_uses_the_applications_tracer_provider() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    # a separate process: the global provider can be set once per process
    done = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER_SCRIPT], cwd=Path(__file__).parent,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)

    assert got["names"] == ["0_1_a", "echo", "greet"]
    assert got["echo_kind"] == "CLIENT"
    assert got["echo_parent"] == got["node"]
    assert got["traceparent"].split("-")[2] == got["node"]
