"""Stopping ``faasflow up`` gracefully: running calls finish, queued ones survive, no request
is failed by a clean stop, and a second Ctrl-C stops at once; and how ``--timeout`` applies."""

from __future__ import annotations

import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from test_gateway import wait_for

from faasflow.runtime.process import GatewayProcess

SLOW = """
    import time

    def handle(event, context):
        time.sleep(1.0)
        return b"done " + event.body
"""
GATE = """
    import os
    import pathlib
    import time

    def handle(event, context):
        gates = pathlib.Path(os.environ["GATE_DIR"])
        name = event.body.decode()
        (gates / (name + ".entered")).touch()
        while not (gates / name).exists():
            time.sleep(0.02)
        return name + "-2"
"""
HELD = """
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda data: data + b"-1")
        dag.node("n2").apply("gate")
        dag.node("n3").modify(lambda data: data + b"-3")
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")
"""
TWICE = """
    def define(flow, context):
        dag = flow.dag()
        dag.node("a").apply("slow")
        dag.node("b").apply("slow")
        dag.edge("a", "b")
"""


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    (tmp_path / "gates").mkdir()
    for name, source in {"slow": SLOW, "gate": GATE, "held": HELD, "twice": TWICE}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    path = tmp_path / "stack.yml"
    path.write_text(textwrap.dedent(f"""
        functions:
          slow: {{lang: python3-http, handler: ./slow}}
          gate:
            lang: python3-http
            handler: ./gate
            environment: {{GATE_DIR: {tmp_path / "gates"}}}
          held: {{lang: faasflow, handler: ./held}}
          twice: {{lang: faasflow, handler: ./twice}}
    """).lstrip())
    return path


def interrupt(gateway: GatewayProcess) -> None:
    gateway.interrupt()


def exit_status(gateway: GatewayProcess, timeout: float) -> int:
    assert gateway.process is not None
    status = gateway.process.wait(timeout)
    gateway.stop()
    return status


def test_calls_running_at_ctrl_c_finish_and_the_gateway_exits_0(stack: Path) -> None:
    gateway = GatewayProcess(stack, data_dir=stack.parent / "data").start()
    with ThreadPoolExecutor(5) as pool:
        calls = [pool.submit(requests.post, gateway.url + "/function/slow", data=str(i),
                             timeout=30) for i in range(5)]
        time.sleep(0.4)  # every call is inside the function now
        interrupt(gateway)
        answers = [call.result() for call in calls]
    assert [(a.status_code, a.text) for a in answers] == [(200, f"done {i}") for i in range(5)]
    assert exit_status(gateway, 10) == 0
    assert "stopping: running calls get 5s" in gateway.text


def test_a_request_running_at_ctrl_c_completes_after_the_next_start(stack: Path) -> None:
    data, gates = stack.parent / "data", stack.parent / "gates"
    first = GatewayProcess(stack, data_dir=data).start()
    reply = first.post("/function/held", data=b"r")
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    wait_for(lambda: (gates / "r-1.entered").exists(), what="n2 in its function")
    interrupt(first)
    time.sleep(0.3)
    (gates / "r-1").touch()  # n2's function returns during the grace
    assert exit_status(first, 10) == 0
    with GatewayProcess(stack, data_dir=data) as second:
        def ended() -> dict[str, object] | None:
            doc = second.get(f"/function/held/flow/{request_id}").json()
            return doc if doc["status"] not in ("running", "paused") else None

        record = wait_for(ended, what="the request to end")
    assert record["status"] == "success", record
    assert record["output"] == "r-1-2-3"


def test_a_second_ctrl_c_stops_at_once_and_keeps_queued_calls(stack: Path) -> None:
    data = stack.parent / "data"
    first = GatewayProcess(stack, data_dir=data, extra=["--grace", "60",
                                                        "--concurrency", "1"]).start()
    for name in ("q1", "q2"):
        assert first.post("/async-function/gate", data=name).status_code == 202
    wait_for(lambda: (stack.parent / "gates" / "q1.entered").exists(), what="q1 to start")
    interrupt(first)
    time.sleep(0.5)
    started = time.monotonic()
    interrupt(first)
    assert exit_status(first, 10) == 0
    assert time.monotonic() - started < 5
    with GatewayProcess(stack, data_dir=data) as second:
        assert "resuming 2 queued asynchronous calls" in second.text
        for name in ("q1", "q2"):
            (stack.parent / "gates" / name).touch()
        wait_for(lambda: second.get("/system/queue").json()["pending"] == 0,
                 what="both calls delivered")


def test_a_call_past_the_timeout_is_504_naming_the_option(stack: Path) -> None:
    with GatewayProcess(stack, data_dir=stack.parent / "data",
                        extra=["--timeout", "0.3"]) as gateway:
        reply = gateway.post("/function/slow", data=b"x")
        assert reply.status_code == 504
        assert "--timeout" in reply.text


def test_a_flow_wait_longer_than_the_timeout_is_the_flows_to_answer(stack: Path) -> None:
    with GatewayProcess(stack, data_dir=stack.parent / "data",
                        extra=["--timeout", "1.5"]) as gateway:
        reply = gateway.post("/function/twice", data=b"x", headers={"X-Faas-Flow-Wait": "20"})
        assert (reply.status_code, reply.content) == (200, b"done done x")
