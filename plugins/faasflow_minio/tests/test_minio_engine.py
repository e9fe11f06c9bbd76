"""A flow run by the engine with FAASFLOW_DATA_STORE=minio: every edge's data through the real
S3 server of .ci/services (inline limit 0), and nothing of the request left afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from s3_servers import raw_client, shared_options

import faasflow
from faasflow.settings import Settings


def chain_then_fan_in(width: int) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("first").modify(lambda d: d + b"1")
        dag.node("start").modify(lambda d: d + b"!")
        dag.edge("first", "start")
        dag.node("join", aggregator=lambda inputs: b",".join(sorted(inputs.values())))
        for i in range(width):
            dag.node(f"b{i}").modify(lambda d, i=i: d + str(i % 10).encode())
            dag.edge("start", f"b{i}")
            dag.edge(f"b{i}", "join")

    return define


@pytest.mark.integration
def test_flow_data_travels_through_s3_and_no_object_of_the_request_remains(
    fresh_bucket: str,
) -> None:
    options = shared_options(bucket=fresh_bucket)
    environ = {
        "FAASFLOW_DATA_STORE": "minio",
        "FAASFLOW_INLINE_LIMIT": "0",
        **{f"FAASFLOW_MINIO_{k.upper()}": v for k, v in options.items()},
    }
    flow = faasflow.Flow(chain_then_fan_in(8), name="e2e")
    result = faasflow.run(flow, b"x", settings=Settings.from_env(environ))
    assert result.status == "success", result.error
    assert result.output == b",".join(sorted(f"x1!{i}".encode() for i in range(8)))
    client = raw_client(options)
    left = [
        o.object_name
        for o in client.list_objects(
            fresh_bucket, prefix=f"faasflow/e2e/{result.request_id}/", recursive=True
        )
    ]
    assert left == []
