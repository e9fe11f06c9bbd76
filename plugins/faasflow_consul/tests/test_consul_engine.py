"""A flow run by the engine with FAASFLOW_STATE_STORE=consul, against the KV stand-in (not a
real agent), and clean afterwards."""

from __future__ import annotations

from typing import Any

from consul_standin import ConsulStandIn

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


def test_fan_in_flow_runs_on_consul_and_leaves_no_key_of_the_request(
    standin: ConsulStandIn,
) -> None:
    settings = Settings.from_env(
        {"FAASFLOW_STATE_STORE": "consul", "FAASFLOW_CONSUL_ADDRESS": standin.address}
    )
    result = faasflow.run(faasflow.Flow(fan_in(12), name="e2e"), b"x", settings=settings)
    assert result.status == "success", result.error
    assert result.output == b",".join(sorted(f"x!{i % 10}".encode() for i in range(12)))
    assert standin.list_keys(f"faasflow/e2e/{result.request_id}/") == []
    assert standin.list_keys("faasflow/e2e/")  # only the request records remain
