"""faasflow's Tracer conformance suite, run against this backend over the shim."""

from __future__ import annotations

import pytest
import shim_factory
from faasflow_opentracing import OpenTracingTracer

from faasflow import Tracer
from faasflow.settings import Settings
from faasflow.testing import TracerContract, assert_backend_registered
from faasflow.testing.otlp import OtlpReceiver


class TestOpenTracingTracerContract(TracerContract):
    receiver: OtlpReceiver

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _receiver(cls):
        with OtlpReceiver() as receiver, pytest.MonkeyPatch.context() as patch:
            patch.setenv("SHIM_OTLP_ENDPOINT", receiver.endpoint)
            cls.receiver = receiver
            yield
            shim_factory.shutdown()

    @pytest.fixture(autouse=True)
    def _nothing_swallowed(self):
        yield
        assert isinstance(self.backend, OpenTracingTracer)
        assert self.backend.errors == 0

    def make_tracer(self) -> Tracer:
        backend = assert_backend_registered("tracer", "opentracing").backend
        settings = Settings.from_env({"FAASFLOW_OPENTRACING_FACTORY": "shim_factory:make"})
        tracer: Tracer = backend.factory(settings.options_for(backend))
        return tracer
