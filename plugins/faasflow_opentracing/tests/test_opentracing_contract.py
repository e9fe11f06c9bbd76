"""faasflow's Tracer conformance suite, run against this backend over OpenTracing's own
in-memory tracer."""

from __future__ import annotations

import pytest
from faasflow_opentracing import OpenTracingTracer

from faasflow import Tracer
from faasflow.settings import Settings
from faasflow.testing import TracerContract, assert_backend_registered


class TestOpenTracingTracerContract(TracerContract):
    @pytest.fixture(autouse=True)
    def _nothing_swallowed(self):
        yield
        # "does not raise" must come from handling the events, not from hiding errors
        assert isinstance(self.backend, OpenTracingTracer)
        assert self.backend.errors == 0

    def make_tracer(self) -> Tracer:
        backend = assert_backend_registered("tracer", "opentracing").backend
        settings = Settings.from_env({"FAASFLOW_OPENTRACING_FACTORY": "factories:mock"})
        tracer: Tracer = backend.factory(settings.options_for(backend))
        return tracer
