"""The sweep outside `faasflow up`'s own timer: `POST /flow/sweep` and `faasflow sweep`, run as
real processes against a real gateway, and the opportunistic sweep of a serving engine."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import Harness
from test_gateway import write_stack

from faasflow.runtime.process import GatewayProcess
from faasflow.settings import Settings


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("sweep-stack")
    gates = root / "gates"
    gates.mkdir()
    with GatewayProcess(write_stack(root, gates), data_dir=root / "data") as process:
        yield process


def test_post_flow_sweep_answers_how_many_requests_it_acted_on(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/fanout/flow/sweep", data=b"")
    assert reply.status_code == 200
    assert reply.json() == {"swept": 0}


def test_get_flow_sweep_is_still_the_record_route(gateway: GatewayProcess) -> None:
    reply = gateway.get("/function/fanout/flow/sweep")
    assert reply.status_code == 404  # no request has the id "sweep"


def test_the_sweep_command_prints_what_it_did(gateway: GatewayProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faasflow", "sweep", "fanout", "-g", gateway.url],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (result.returncode, result.stdout) == (0, "swept fanout: acted on 0 requests\n")


def test_the_sweep_command_exits_4_when_the_gateway_is_down(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faasflow", "sweep", "fanout", "-g", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert result.returncode == 4


def test_a_serving_engine_sweeps_by_itself_once_per_interval() -> None:
    settings = Settings(hmac_secret=b"test-key", sweep_interval=0.05)
    calls: collections.Counter[str] = collections.Counter()

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: (calls.update(["n1"]), d)[1])
        dag.node("n2")
        dag.edge("n1", "n2")

    h = Harness(define, settings=settings)
    stale = h.start(b"", timeout=0.01).request_id
    h.invoker.queue.clear()  # its next iteration is lost: only the deadline can end it
    time.sleep(0.06)
    fresh = h.start(b"").request_id
    h.drain()  # fresh's next iteration arrives: a background sweep starts
    for _ in range(100):
        if h.engine.record(stale).status != "running":
            break
        time.sleep(0.02)
    assert h.engine.record(stale).status == "failure"  # past its deadline, nobody polled it
    assert h.engine.record(fresh).status == "success"
    assert not h.engine.maybe_sweep()  # the next one waits for the interval
