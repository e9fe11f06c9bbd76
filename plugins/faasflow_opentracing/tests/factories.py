"""Tracer factories built on what the ``opentracing`` package ships (no OpenTelemetry)."""

from __future__ import annotations

from opentracing.mocktracer import MockTracer

CALLS: list[str] = []
TRACERS: dict[str, MockTracer] = {}


def mock(service_name: str) -> MockTracer:
    """OpenTracing's in-memory reference tracer, one per service name."""
    CALLS.append(service_name)
    tracer = TRACERS[service_name] = MockTracer()
    return tracer


def not_a_tracer() -> object:
    return object()
