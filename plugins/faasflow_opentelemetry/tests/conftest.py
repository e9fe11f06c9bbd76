from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from faasflow_opentelemetry import OpenTelemetryTracer

from faasflow.backends import Kind
from faasflow.plugins import Registry
from faasflow.settings import Settings
from faasflow.testing.otlp import OtlpReceiver

HERE = Path(__file__).parent
# the helper modules beside this file, whichever directory pytest was started from
sys.path.insert(0, str(HERE))


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    """The environment a worker would have: this tracer, pointed at the receiver."""
    return {
        "FAASFLOW_TRACER": "opentelemetry",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


@pytest.fixture
def make_tracer(otel_env: dict[str, str]) -> Iterator[Callable[..., OpenTelemetryTracer]]:
    """Build the configured tracer through the plugin registry, as the engine does; extra
    keyword arguments are more environment variables."""
    built: list[OpenTelemetryTracer] = []

    def make(**env: str) -> OpenTelemetryTracer:
        settings = Settings.from_env({**otel_env, **env})
        tracer = Registry.from_settings(settings).create(Kind.TRACER, settings)
        assert isinstance(tracer, OpenTelemetryTracer)
        built.append(tracer)
        return tracer

    yield make
    for tracer in built:
        tracer.close()


@pytest.fixture
def run_in_process(otel_env: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """Run one iteration in a new Python process (see otel_driver.py)."""

    def run(job: Mapping[str, Any], **env: str) -> dict[str, Any]:
        environ = {**os.environ, **otel_env, **env}
        done = subprocess.run(
            [sys.executable, str(HERE / "otel_driver.py"), json.dumps(job)],
            env=environ, capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run
