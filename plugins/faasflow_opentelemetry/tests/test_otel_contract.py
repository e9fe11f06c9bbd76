"""faasflow's Tracer conformance suite, run against this backend."""

from __future__ import annotations

import pytest
from faasflow_opentelemetry import OpenTelemetryTracer

from faasflow import Tracer
from faasflow.settings import Settings
from faasflow.testing import TracerContract, assert_backend_registered
from faasflow.testing.otlp import OtlpReceiver


class TestOpenTelemetryTracerContract(TracerContract):
    receiver: OtlpReceiver

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _receiver(cls):
        with OtlpReceiver() as receiver:
            cls.receiver = receiver
            yield

    @pytest.fixture(autouse=True)
    def _nothing_swallowed(self):
        yield
        # "does not raise" must come from handling the events, not from hiding errors
        assert isinstance(self.backend, OpenTelemetryTracer)
        assert self.backend.stats().errors == 0

    def make_tracer(self) -> Tracer:
        backend = assert_backend_registered("tracer", "opentelemetry").backend
        settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.endpoint})
        tracer: Tracer = backend.factory(settings.options_for(backend))
        return tracer
