"""A flow run by the engine with FAASFLOW_STATE_STORE=etcd: selected by configuration alone,
coordinated through the real etcd of .ci/services, and clean afterwards."""

from __future__ import annotations

import uuid
from typing import Any

import pyetcd
import pytest
from etcd_server import shared_endpoints

import faasflow
from faasflow.settings import Settings


def fan_in(width: int) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("start").modify(lambda d: d + b"!")
        dag.node("join", aggregator=lambda inputs: b",".join(sorted(inputs.values())))
        for i in range(width):
            dag.node(f"b{i}").modify(lambda d, i=i: d + str(i % 10).encode())
            dag.edge("start", f"b{i}")
            dag.edge(f"b{i}", "join")

    return define


@pytest.mark.integration
def test_fan_in_flow_runs_on_etcd_and_leaves_no_key_of_the_request() -> None:
    endpoints = shared_endpoints()
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env(
        {"FAASFLOW_STATE_STORE": "etcd", "FAASFLOW_ETCD_ENDPOINTS": endpoints}
    )
    host, port = endpoints.split(",")[0].rsplit(":", 1)
    raw = pyetcd.client(host, int(port))
    try:
        result = faasflow.run(faasflow.Flow(fan_in(12), name=name), b"x", settings=settings)
        assert result.status == "success", result.error
        assert result.output == b",".join(sorted(f"x!{i % 10}".encode() for i in range(12)))
        assert list(raw.get_prefix(f"faasflow/{name}/{result.request_id}/")) == []
    finally:
        raw.delete_prefix(f"faasflow/{name}/")  # the request records the engine keeps
        raw.close()
