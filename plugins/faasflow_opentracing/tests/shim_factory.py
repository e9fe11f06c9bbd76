"""Tracer factories the tests name in FAASFLOW_OPENTRACING_FACTORY.

The concrete OpenTracing tracer is OpenTelemetry's OpenTracing shim over an SDK provider that
exports over OTLP/HTTP to ``SHIM_OTLP_ENDPOINT`` (read here, in the test's own code: the plugin
never reads the environment). jaeger-client would be the classic choice but is archived.
"""

from __future__ import annotations

import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.shim.opentracing_shim import TracerShim, create_tracer

PROVIDERS: list[TracerProvider] = []
CALLS: list[str] = []


def make(service_name: str) -> TracerShim:
    CALLS.append(service_name)
    provider = TracerProvider(resource=Resource({"service.name": service_name}))
    exporter = OTLPSpanExporter(
        endpoint=os.environ["SHIM_OTLP_ENDPOINT"] + "/v1/traces", timeout=2
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    PROVIDERS.append(provider)
    return create_tracer(provider)


def not_a_tracer() -> object:
    return object()


def shutdown() -> None:
    while PROVIDERS:
        PROVIDERS.pop().shutdown()
