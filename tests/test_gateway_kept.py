"""Iterations kept on the worker through a real ``faasflow up``: a chain's hand-ons skip the
gateway's HTTP route but are still counted as the flow's invocations; the opt-out sends every
one through the gateway; the rows the workers held are gone once the chain ended.

Whether a hand-on went over HTTP shows in the gateway's metrics: ``gateway_functions_seconds``
times only the calls the gateway answered itself, ``gateway_function_invocation_total`` counts
those and the kept ones."""

from __future__ import annotations

import os
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from faasflow.runtime.process import GatewayProcess

STEPS = 12

CHAIN = f"""
    def define(flow, context):
        dag = flow.dag()
        for i in range({STEPS}):
            dag.node(f"n{{i}}").modify(lambda data, i=i: data + f".{{i}}".encode())
            if i:
                dag.edge(f"n{{i - 1}}", f"n{{i}}")
"""


BRANCHES = 20

FAN = f"""
    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda data: data)
        dag.node("j", aggregator=lambda inputs: str(len(inputs)).encode()).modify(
            lambda data: data)
        for i in range({BRANCHES}):
            dag.node(f"b{{i}}").modify(lambda data: data)
            dag.edge("a", f"b{{i}}")
            dag.edge(f"b{{i}}", "j")
"""


def _stack(tmp_path: Path) -> Path:
    for name, source in (("chain", CHAIN), ("fan", FAN)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    path = tmp_path / "stack.yml"
    path.write_text("functions:\n  chain:\n    lang: faasflow\n    handler: ./chain\n"
                    "  fan:\n    lang: faasflow\n    handler: ./fan\n")
    return path


def _gateway(tmp_path: Path, **extra: str) -> Iterator[GatewayProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    env.update(extra)
    with GatewayProcess(_stack(tmp_path), data_dir=tmp_path / "data", env=env) as gateway:
        yield gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    yield from _gateway(tmp_path)


@pytest.fixture
def gateway_opted_out(tmp_path: Path) -> Iterator[GatewayProcess]:
    yield from _gateway(tmp_path, FAASFLOW_SAME_WORKER_ITERATIONS="0")


def run_chain(gateway: GatewayProcess) -> None:
    reply = requests.post(f"{gateway.url}/function/chain", data=b"x", timeout=60,
                          headers={"X-Faas-Flow-Wait": "30"})
    assert reply.status_code == 200, reply.text
    assert reply.content == b"x" + b"".join(f".{i}".encode() for i in range(STEPS))


def metric(gateway: GatewayProcess, name: str, function: str = "chain") -> float:
    page = requests.get(f"{gateway.url}/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(page)
               for s in family.samples
               if s.name == name and s.labels.get("function_name") == function)


def invocations_when_settled(gateway: GatewayProcess, at_least: float) -> float:
    """The flow's invocation count once the workers' batched reports arrived."""
    deadline = time.monotonic() + 10
    count = metric(gateway, "gateway_function_invocation_total")
    while count < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        count = metric(gateway, "gateway_function_invocation_total")
    return count


def test_kept_hand_ons_do_not_go_through_the_gateways_route(gateway: GatewayProcess) -> None:
    run_chain(gateway)
    # the start, and at most the few hand-ons a busy runner or a burst's end sent round
    assert metric(gateway, "gateway_functions_seconds_count") < STEPS / 2


def test_kept_hand_ons_are_counted_as_invocations_of_the_flow(gateway: GatewayProcess) -> None:
    run_chain(gateway)
    assert invocations_when_settled(gateway, STEPS) == STEPS  # the start and STEPS - 1 hand-ons


def test_with_the_opt_out_every_hand_on_goes_through_the_gateway(
    gateway_opted_out: GatewayProcess,
) -> None:
    run_chain(gateway_opted_out)
    assert invocations_when_settled(gateway_opted_out, STEPS) == STEPS
    assert metric(gateway_opted_out, "gateway_functions_seconds_count") == STEPS


def test_no_row_stays_held_after_a_kept_chain(gateway: GatewayProcess, tmp_path: Path) -> None:
    run_chain(gateway)
    deadline = time.monotonic() + 10
    while True:
        db = sqlite3.connect(tmp_path / "data" / "queue.db")
        try:
            held = db.execute("SELECT COUNT(*) FROM jobs WHERE holder IS NOT NULL").fetchone()[0]
        finally:
            db.close()
        pending = requests.get(f"{gateway.url}/system/queue", timeout=10).json()["pending"]
        if (held, pending) == (0, 0) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (held, pending) == (0, 0)


def test_fan_out_branches_are_queued_by_the_worker_without_the_gateways_route(
    gateway: GatewayProcess,
) -> None:
    reply = requests.post(f"{gateway.url}/function/fan", data=b"x", timeout=60,
                          headers={"X-Faas-Flow-Wait": "30"})
    assert reply.status_code == 200, reply.text
    assert reply.content == str(BRANCHES).encode()
    # the start only: every branch (and the aggregator's hand-on) skipped the HTTP route
    assert metric(gateway, "gateway_functions_seconds_count", "fan") == 1
