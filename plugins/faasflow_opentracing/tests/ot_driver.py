"""Runs one iteration through the configured tracer, in the engine's event order.

In-process helpers for the tests, and a script for child processes: ``python ot_driver.py
'<job json>'`` builds the tracer through the plugin registry from the environment and prints
``{"forward": <carrier>, "called": <headers the function received>}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from faasflow import FunctionError, Tracer


def run_node(
    tracer: Tracer,
    node: str,
    operations: Sequence[str] = ("echo",),
    *,
    fail: str | None = None,
    call_url: str | None = None,
) -> dict[str, str]:
    attrs = {
        "faasflow.request_id": tracer.request_id,
        "faasflow.node": node.rsplit("_", 1)[-1],
        "faasflow.node.unique_id": node,
        "faasflow.branch": "",
        "faasflow.attempt": 1,
    }
    tracer.node_start(node, attrs)
    received: dict[str, str] = {}
    for op in operations:
        tracer.operation_start(op, node, {})
        headers: dict[str, str] = {}
        tracer.inject(headers)
        url = f"{call_url or 'http://127.0.0.1:8080'}/function/{op}"
        if op == fail:
            error = FunctionError(f"invalid return status 500 while connecting {url}",
                                  url=url, status=500)
            tracer.operation_failure(op, node, error)
            tracer.node_failure(node, error)
            return received
        status = 200
        if call_url is not None:
            answer = requests.post(url, data=b"x", headers=headers, timeout=10)
            status, received = answer.status_code, answer.json()["headers"]
        tracer.operation_end(op, node, {
            "http.request.method": "POST", "url.full": url,
            "http.response.status_code": status, "faasflow.retries": 0,
        })
    tracer.node_end(node, attrs)
    return received


def forward(tracer: Tracer) -> dict[str, str]:
    carrier: dict[str, str] = {}
    tracer.inject(carrier)
    return carrier


def main(job: Mapping[str, Any]) -> None:
    import shim_factory

    from faasflow.backends import Kind
    from faasflow.plugins import Registry
    from faasflow.settings import Settings

    settings = Settings.from_env()
    backend = Registry.from_settings(settings).create(Kind.TRACER, settings)
    handle = backend.scoped(job["flow"], job["request"])
    if job.get("first"):
        handle.request_start({})
    else:
        handle.request_continue(job["carrier"])
    called = run_node(handle, job["node"], job.get("operations", ["echo"]),
                      fail=job.get("fail"), call_url=job.get("call_url"))
    carrier = forward(handle)
    if job.get("fail"):
        handle.request_failure(RuntimeError(f"node {job['node']} failed"))
    else:
        handle.request_end({})
    handle.flush()
    shim_factory.shutdown()  # exports what is queued
    print(json.dumps({"forward": carrier, "called": called}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
