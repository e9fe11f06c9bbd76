"""Drives a tracer handle with the events the engine sends, in the engine's order.

Used in this process by the tests and, as a script, in child processes: ``python
otel_driver.py '<job json>'`` builds the configured tracer from the environment through the
plugin registry (as a worker process would), runs one iteration and prints
``{"forward": <carrier>, "called": <headers the function received>}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from faasflow import FunctionError, Tracer


def node_attributes(request_id: str, node: str, branch: str = "", attempt: int = 1) -> dict:
    return {
        "faasflow.request_id": request_id,
        "faasflow.node": node.rsplit("_", 1)[-1],
        "faasflow.node.unique_id": node,
        "faasflow.branch": branch,
        "faasflow.attempt": attempt,
    }


def call_attributes(url: str, status: int, retries: int = 0, method: str = "POST") -> dict:
    return {
        "http.request.method": method,
        "url.full": url,
        "http.response.status_code": status,
        "faasflow.retries": retries,
        "faasflow.function": url.rsplit("/", 1)[-1],
    }


def run_node(
    tracer: Tracer,
    node: str,
    operations: Sequence[str] = ("echo",),
    *,
    branch: str = "",
    fail: str | None = None,
    call_url: str | None = None,
    status: int = 200,
) -> dict[str, str]:
    """One node: each operation starts, injects into its call headers, ends (or fails when its
    name is ``fail``). With ``call_url`` the operations really POST there with the injected
    headers. Returns the headers of the last call."""
    attrs = node_attributes(tracer.request_id, node, branch)
    tracer.node_start(node, attrs)
    headers: dict[str, str] = {}
    for op in operations:
        tracer.operation_start(op, node, {})
        headers = {}
        tracer.inject(headers)
        if op == fail:
            error = FunctionError(
                f"invalid return status 500 while connecting http://127.0.0.1:1/function/{op}",
                url=f"http://127.0.0.1:1/function/{op}", status=500,
            )
            tracer.operation_failure(op, node, error)
            tracer.node_failure(node, error)
            return headers
        if op == "modifier":
            tracer.operation_end(op, node, {})
            continue
        url = f"{call_url or 'http://127.0.0.1:8080'}/function/{op}"
        if call_url is not None:
            answer = requests.post(url, data=b"x", headers=headers, timeout=10)
            status = answer.status_code
            headers = answer.json()["headers"]
        tracer.operation_end(op, node, call_attributes(url, status))
    tracer.node_end(node, attrs)
    return headers


def forward(tracer: Tracer) -> dict[str, str]:
    """What the engine does before handing the next iteration on."""
    carrier: dict[str, str] = {}
    tracer.inject(carrier)
    return carrier


def main(job: Mapping[str, Any]) -> None:
    from faasflow.backends import Kind
    from faasflow.plugins import Registry
    from faasflow.settings import Settings

    settings = Settings.from_env()
    backend = Registry.from_settings(settings).create(Kind.TRACER, settings)
    handle = backend.scoped(job["flow"], job["request"])
    if job.get("first"):
        handle.request_start(job.get("carrier", {}))
    else:
        handle.request_continue(job["carrier"])
    called = run_node(
        handle, job["node"], job.get("operations", ["echo"]), fail=job.get("fail"),
        call_url=job.get("call_url"),
    )
    carrier = forward(handle)
    if job.get("fail"):
        handle.request_failure(RuntimeError(f"node {job['node']} failed"))
    elif job.get("last"):
        handle.request_end({"faasflow.status": "success"})
    handle.flush()
    backend.close()  # exports what is queued before the process ends
    print(json.dumps({"forward": carrier, "called": called}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
