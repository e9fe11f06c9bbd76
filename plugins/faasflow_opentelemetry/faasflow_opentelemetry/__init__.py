"""faasflow-opentelemetry: the ``opentelemetry`` Tracer backend.

Select it with ``FAASFLOW_TRACER=opentelemetry``; spans go over OTLP/HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT`` and the standard ``OTEL_*`` variables configure the rest (see
:data:`faasflow_opentelemetry.config.ENV` and the README).
"""

from __future__ import annotations

from collections.abc import Iterator

from faasflow import Backend, hookimpl
from faasflow_opentelemetry.config import DESCRIPTIONS, ENV, Config
from faasflow_opentelemetry.pipeline import ExportStats
from faasflow_opentelemetry.tracer import OpenTelemetryTracer

__all__ = ["Config", "ExportStats", "OpenTelemetryTracer", "faasflow_tracers"]

__version__ = "0.1.0"


@hookimpl
def faasflow_tracers() -> Iterator[Backend]:
    """Declare the ``opentelemetry`` tracer."""
    yield Backend(
        name="opentelemetry",
        factory=OpenTelemetryTracer.from_options,
        summary="OpenTelemetry spans exported over OTLP/HTTP, W3C trace context propagation",
        env=ENV,
        options=DESCRIPTIONS,
    )
