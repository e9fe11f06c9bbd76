"""faasflow-opentracing: the ``opentracing`` Tracer backend.

Select it with ``FAASFLOW_TRACER=opentracing`` and name a factory that returns your
``opentracing.Tracer`` with ``FAASFLOW_OPENTRACING_FACTORY=package.module:callable`` (default:
``opentracing.global_tracer()``).
"""

from __future__ import annotations

from collections.abc import Iterator

from faasflow import Backend, hookimpl
from faasflow_opentracing.tracer import OpenTracingTracer, load_factory

__all__ = ["OpenTracingTracer", "faasflow_tracers", "load_factory"]

__version__ = "0.1.0"


@hookimpl
def faasflow_tracers() -> Iterator[Backend]:
    """Declare the ``opentracing`` tracer."""
    yield Backend(
        name="opentracing",
        factory=OpenTracingTracer.from_options,
        summary="Spans through your OpenTracing tracer (Jaeger client, OpenTelemetry shim)",
        options={
            "factory": "'package.module:callable' returning an opentracing.Tracer; called once "
            "per flow, with the service name if it takes an argument "
            "(default: opentracing.global_tracer())",
            "service_name": "name passed to the factory (default: the flow name)",
            "incoming": "child (default: the request span continues a context in the request's "
            "headers) or ignore",
        },
    )
