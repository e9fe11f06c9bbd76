"""Flows and a worker for the multi-process race tests (importable by spawned children).

Every worker process runs its own Engine on the same sqlite StateStore and DataStore files;
iterations travel between processes through a multiprocessing queue, the way OpenFaaS's queue
worker hands them to any replica of the flow function.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.interfaces import Invoker, Response
from faasflow.plugins import Registry
from faasflow.settings import Settings

KEY = b"race-test-key"


def journal(path: str, line: str) -> None:
    """Append one line atomically (O_APPEND): which node ran, in which process."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def fan_in_flow(log_path: str) -> Flow:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("n1")
        for name in ("a", "b", "c", "d"):
            dag.node(name).modify(lambda d, name=name: d + name.encode())
            dag.edge("n1", name)
            dag.edge(name, "join")
        dag.node("join", aggregator=lambda d: b"".join(d[k] for k in sorted(d))).modify(
            lambda d: (journal(log_path, f"join {os.getpid()} {d.decode()}"), d)[1]
        )
        flow.finally_(lambda state: journal(log_path, f"finally {state}"))

    return Flow(define, name="races")


def foreach_flow(log_path: str) -> Flow:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("n1")
        sub = dag.foreach_branch(
            "F",
            lambda d: {str(i): str(i).encode() for i in range(int(d))},
            aggregator=lambda r: str(sum(int(v) for v in r.values())).encode(),
        )
        sub.node("x").modify(lambda d: (journal(log_path, f"x {d.decode()}"), d + b"0")[1])
        dag.node("end").modify(lambda d: (journal(log_path, f"end {d.decode()}"), d)[1])
        dag.edge("n1", "F")
        dag.edge("F", "end")
        flow.finally_(lambda state: journal(log_path, f"finally {state}"))

    return Flow(define, name="races")


FLOWS = {"fan_in": fan_in_flow, "foreach": foreach_flow}


class QueueInvoker(Invoker):
    """Hands iterations to whichever worker process takes them from a shared queue."""

    in_process = True

    def __init__(self, queue: Any, duplicate: bool = False) -> None:
        self.queue = queue
        self.duplicate = duplicate

    def call(self, function: str, data: bytes, **kwargs: Any) -> Response:
        raise AssertionError("no functions in race flows")

    def request(self, method: str, url: str, data: bytes, **kwargs: Any) -> Response:
        raise AssertionError("no HTTP in race flows")

    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        self.queue.put(message)
        if self.duplicate:  # at-least-once queues deliver some messages twice
            self.queue.put(message)


def make_engine(kind: str, directory: str, log_path: str, queue: Any, duplicate: bool) -> Engine:
    settings = Settings(
        hmac_secret=KEY,
        environ={
            "FAASFLOW_SQLITE_PATH": os.path.join(directory, "state.db"),
        },
    )
    registry = Registry.from_settings(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "sqlite"),
        registry.create(Kind.DATA_STORE, settings, "sqlite"),
        registry.create(Kind.TRACER, settings, "none"),
        QueueInvoker(queue, duplicate),
    )
    return Engine(FLOWS[kind](log_path), settings, backends)


def worker(kind: str, directory: str, log_path: str, queue: Any, duplicate: bool) -> None:
    """Run iterations from ``queue`` until it yields None."""
    engine = make_engine(kind, directory, log_path, queue, duplicate)
    while True:
        body = queue.get()
        if body is None:
            return
        try:
            engine.forward(body)
        except Exception as exc:  # refused duplicates after the end are expected
            journal(log_path, f"refused {type(exc).__name__}")
