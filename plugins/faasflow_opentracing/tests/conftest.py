from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from faasflow_opentracing import OpenTracingTracer

from faasflow.backends import Kind
from faasflow.plugins import Registry
from faasflow.settings import Settings
from faasflow.testing.otlp import OtlpReceiver

HERE = Path(__file__).parent
# the helper modules beside this file, whichever directory pytest was started from
sys.path.insert(0, str(HERE))


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A real OTLP receiver, which the shim tracers of shim_factory export to."""
    import shim_factory

    with OtlpReceiver() as running:
        monkeypatch.setenv("SHIM_OTLP_ENDPOINT", running.endpoint)
        yield running
        shim_factory.shutdown()


@pytest.fixture
def ot_env() -> dict[str, str]:
    return {
        "FAASFLOW_TRACER": "opentracing",
        "FAASFLOW_OPENTRACING_FACTORY": "shim_factory:make",
    }


@pytest.fixture
def make_tracer(receiver: OtlpReceiver, ot_env) -> Callable[..., OpenTracingTracer]:
    def make(**env: str) -> OpenTracingTracer:
        settings = Settings.from_env({**ot_env, **env})
        tracer = Registry.from_settings(settings).create(Kind.TRACER, settings)
        assert isinstance(tracer, OpenTracingTracer)
        return tracer

    return make


@pytest.fixture
def run_in_process(receiver: OtlpReceiver, ot_env) -> Callable[..., dict[str, Any]]:
    def run(job: Mapping[str, Any]) -> dict[str, Any]:
        environ = {
            **os.environ, **ot_env, "SHIM_OTLP_ENDPOINT": receiver.endpoint,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        done = subprocess.run(
            [sys.executable, str(HERE / "ot_driver.py"), json.dumps(job)],
            env=environ, capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run
