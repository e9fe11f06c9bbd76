"""A poison iteration (its delivery kills the flow's worker every time) ends, after
``--max-attempts`` deliveries, as a failed request naming the cause, not as a request running
until its deadline."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import requests

from faasflow.runtime.process import GatewayProcess

FLOW = """
    import os

    def crash_on_poison(data):
        if b"poison" in data:
            os._exit(1)  # the worker dies mid-iteration, as a segfault or the OOM killer would
        return data

    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda data: data + b".a")
        for branch in ("p", "q"):  # branches are iterations of their own, through the queue
            dag.node(branch).modify(crash_on_poison)
            dag.edge("a", branch)
"""


def stack(tmp_path: Path) -> Path:
    (tmp_path / "poison").mkdir()
    (tmp_path / "poison" / "handler.py").write_text(textwrap.dedent(FLOW).lstrip())
    path = tmp_path / "stack.yml"
    path.write_text("functions:\n  poison:\n    lang: faasflow\n    handler: ./poison\n")
    return path


def wait_ended(gateway: GatewayProcess, request_id: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    doc: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            reply = requests.get(f"{gateway.url}/function/poison/flow/{request_id}", timeout=10)
            if reply.status_code == 200:
                doc = reply.json()
                if doc.get("status") not in ("running", "paused"):
                    return doc
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"request {request_id} did not end in {timeout:g}s: {doc}")


def only_request(gateway: GatewayProcess) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = requests.get(f"{gateway.url}/function/poison/flow", timeout=10)
        if reply.status_code == 200 and reply.json()["requests"]:  # 502 while the worker restarts
            return str(reply.json()["requests"][0]["id"])
        time.sleep(0.2)
    raise AssertionError("the request was never created")


def test_a_poison_iteration_ends_as_a_failed_request_naming_the_cause(tmp_path: Path) -> None:
    gateway = GatewayProcess(stack(tmp_path), data_dir=tmp_path / "data", processes=1,
                             extra=["--max-attempts", "3"]).start()
    try:
        reply = gateway.post("/async-function/poison", data=b"poison")
        assert reply.status_code == 202, reply.text
        doc = wait_ended(gateway, only_request(gateway), 90)
        assert doc["status"] == "failure"
        assert "delivery given up after 3 attempts" in str(doc["error"]), doc
        queue = gateway.get("/system/queue").json()
        assert queue["dead"] >= 1
    except BaseException:
        print(gateway.text[-8000:])
        raise
    finally:
        gateway.stop()
