"""End to end: a flow run by the local gateway (``faasflow up``) across worker processes with
FAASFLOW_TRACER=opentracing, the shim's spans collected by a real OTLP receiver."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "opentelemetry.shim.opentracing_shim",
    reason="the OpenTracing tracer of these tests is OpenTelemetry's shim: "
    "pip install 'faasflow-opentracing[test]'",
)

from faasflow.runtime.process import GatewayProcess  # noqa: E402
from faasflow.testing.otlp import OtlpReceiver  # noqa: E402

HERE = Path(__file__).parent

STACK = """\
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  chain:
    lang: faasflow
    handler: ./chain
  probe:
    lang: python3-http
    handler: ./probe
"""

CHAIN = '''
def define(flow, context):
    dag = flow.dag()
    dag.node("first").apply("probe")
    dag.node("second").modify(lambda data: data)
    dag.node("third").apply("probe")
    dag.edge("first", "second")
    dag.edge("second", "third")
'''

PROBE = '''
def handle(event, context):
    return event.headers.get("traceparent") or "none"
'''


class Gateway(GatewayProcess):
    def _drain(self) -> None:
        # GatewayProcess leaves its stdout pipe open (a ResourceWarning under -W error)
        try:
            super()._drain()
        finally:
            assert self.process is not None
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("stack")
    (root / "stack.yml").write_text(STACK)
    for name, source in (("chain", CHAIN), ("probe", PROBE)):
        (root / name).mkdir()
        (root / name / "handler.py").write_text(textwrap.dedent(source))
    env = {
        **os.environ,
        "FAASFLOW_TRACER": "opentracing",
        "FAASFLOW_OPENTRACING_FACTORY": "shim_factory:make",
        "SHIM_OTLP_ENDPOINT": receiver.endpoint,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    with Gateway(root / "stack.yml", data_dir=root / "data", processes=3, env=env) as running:
        yield running


def test_flow_across_worker_processes_is_one_trace_and_functions_get_its_context(
    gateway, receiver
) -> None:
    answer = gateway.post(
        "/function/chain", data="x",
        headers={"X-Faas-Flow-Reqid": "ot-e2e", "X-Faas-Flow-Wait": "60"},
    )
    assert answer.status_code == 200, answer.text
    record = gateway.get("/function/chain/flow/ot-e2e").json()
    assert record["status"] == "success", record

    def mine(spans):
        return [s for s in spans if s.attributes.get("faasflow.request_id") == "ot-e2e"]

    spans = mine(receiver.wait_for(lambda got: len(mine(got)) >= 6, timeout=30))
    assert len({s.trace_id for s in spans}) == 1
    nodes = {s.attributes["faasflow.node"]: s for s in spans if "faasflow.node" in s.attributes}
    (request,) = [s for s in spans if s.is_root]
    assert nodes["first"].parent_id == request.span_id
    assert nodes["second"].parent_id == nodes["first"].span_id
    assert nodes["third"].parent_id == nodes["second"].span_id
    (last_call,) = [s for s in spans if s.name == "probe" and s.parent_id == nodes["third"].span_id]
    assert record["output"].split("-")[1:3] == [last_call.trace_id, last_call.span_id]
