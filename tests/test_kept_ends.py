"""Ends of requests told across a gateway's workers (faasflow/runtime/kept.py): a worker reports
each end of a request of its flows on its pipe to the gateway, and an ``ended`` line the
gateway sends wakes a thread of that worker waiting for the request (a start with
``X-Faas-Flow-Wait`` otherwise polls the records when the end was in another process)."""

from __future__ import annotations

import json
import os
import select
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.runtime.app import FlowApp
from faasflow.runtime.kept import SameWorkerIterations
from faasflow.runtime.server import serve
from faasflow.runtime.worker import FunctionsApp
from faasflow.settings import Settings


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(lambda d: d + b".a")
    dag.node("b").modify(lambda d: d + b".b")
    dag.edge("a", "b")


@pytest.fixture
def app(tmp_path: Path) -> FlowApp:
    # the stores of `faasflow up`: its workers share them
    return FlowApp(define, Settings.from_env({
        "FAASFLOW_FLOW_NAME": "ends",
        "FAASFLOW_STATE_STORE": "sqlite",
        "FAASFLOW_DATA_STORE": "sqlite",
        "FAASFLOW_SQLITE_PATH": str(tmp_path / "state.db"),
    }))


@pytest.fixture
def kept(app: FlowApp, tmp_path: Path) -> Iterator[SameWorkerIterations]:
    shortcut = SameWorkerIterations(FunctionsApp({"ends": app}), ["ends"],
                                    tmp_path / "queue.db", "shared-0:test", "127.0.0.1:1")
    yield shortcut
    shortcut.close()


def test_a_requests_end_is_reported_on_the_workers_pipe(kept: SameWorkerIterations) -> None:
    read, write = os.pipe()
    with os.fdopen(read, "rb") as pipe, os.fdopen(write, "w") as stream:
        kept.reports_to(stream)
        server = serve(kept.wrap(kept.app), "127.0.0.1", 0).start()
        try:
            reply = requests.post(f"{server.url}/ends/", data=b"x", timeout=10,
                                  headers={"X-Faas-Flow-Wait": "10"})
        finally:
            server.close()
        assert reply.content == b"x.a.b"
        ready, _, _ = select.select([pipe], [], [], 10)  # the end is reported after the reply
        assert ready, "no report of the request's end"
        line = json.loads(pipe.readline())
    assert line == {"ended": reply.headers["X-Faas-Flow-Reqid"], "flow": "ends"}


def test_an_ended_line_wakes_a_thread_waiting_for_that_request(
    app: FlowApp, kept: SameWorkerIterations,
) -> None:
    waiters = app.engine("ends").core.waiters
    waiting, other = waiters.watch("r1"), waiters.watch("r2")
    kept.ended("ends", "r1")
    assert waiting.is_set()
    assert not other.is_set()


def test_an_ended_line_of_a_flow_not_served_here_is_ignored(kept: SameWorkerIterations) -> None:
    kept.ended("elsewhere", "r1")  # no error: the gateway tells every worker of the pool
