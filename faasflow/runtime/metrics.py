"""Prometheus metrics of the flow app and of the local gateway (prometheus_client).

Each :class:`FlowMetrics` and :class:`GatewayMetrics` owns a registry, so several apps in one
process (tests, ``faasflow run``) never collide on a metric name.

Several processes serving one flow (gunicorn workers, ``faasflow up`` replicas) each count what
they served. With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's own variable: a
directory every worker can write, emptied before they start) the flow's ``GET /metrics``
answers the sum over every process instead, from prometheus_client's multiprocess mode. The
gateway is one process and always answers its own registry.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from faasflow.engine.records import RequestRecord

__all__ = ["CONTENT_TYPE", "FlowMetrics", "GatewayMetrics", "QueueCollector"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Node and request durations: 5 ms to 5 minutes.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _node_of(execution_id: str) -> str:
    """The node's own id without the branch keys a foreach or condition put before it."""
    return execution_id.rsplit("--", 1)[-1]


class FlowMetrics:
    """Request and node metrics of the flows a process serves; a RecordBook watcher."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        directory = os.environ.get(MULTIPROC_DIR)
        self.multiprocess = bool(directory)
        if directory:
            os.makedirs(directory, exist_ok=True)  # prometheus_client writes there from now on
        r = self.registry
        self.started = Counter("faasflow_requests_started", "Requests started.", ["flow"],
                               registry=r)
        self.ended = Counter("faasflow_requests_ended", "Requests ended, by final status.",
                             ["flow", "status"], registry=r)
        self.duration = Histogram("faasflow_request_duration_seconds",
                                  "Start to end of ended requests.", ["flow", "status"],
                                  buckets=_BUCKETS, registry=r)
        self.node_duration = Histogram("faasflow_node_duration_seconds",
                                       "Duration of each node run, by flow and node.",
                                       ["flow", "node"], buckets=_BUCKETS, registry=r)
        self.node_retries = Counter("faasflow_node_retries",
                                    "Attempts of nodes beyond their first.", ["flow", "node"],
                                    registry=r)
        self.iterations_retried = Counter(
            "faasflow_iterations_retried",
            "Iterations delivered again (after a crash, a 503 or a lost answer).",
            ["flow", "node"], registry=r)

    def request_opened(self, flow: str, request_id: str) -> None:
        self.started.labels(flow).inc()

    def request_ended(self, record: RequestRecord) -> None:
        flow = record.flow
        self.ended.labels(flow, record.status).inc()
        if record.ended is not None:
            self.duration.labels(flow, record.status).observe(
                max(0.0, record.ended - record.created))
        for eid, run in record.nodes.items():
            node = _node_of(eid)
            self.node_duration.labels(flow, node).observe(max(0.0, run.end - run.start))
            if run.attempts > 1:
                self.node_retries.labels(flow, node).inc(run.attempts - 1)
            if run.deliveries > 1:
                self.iterations_retried.labels(flow, node).inc(run.deliveries - 1)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every process in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


class QueueCollector(Collector):
    """Depth and age of the gateway's queue of asynchronous calls, read at scrape time."""

    def __init__(self, pending: Callable[[], int], path: Callable[[], Path | None]) -> None:
        self._pending = pending
        self._path = path

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("faasflow_queue_depth",
                                  "Asynchronous calls waiting, delayed or being delivered.")
        depth.add_metric([], float(self._pending()))
        yield depth
        age = GaugeMetricFamily("faasflow_queue_oldest_age_seconds",
                                "Age of the oldest call in the queue (0 when it is empty).")
        age.add_metric([], self._oldest_age())
        yield age

    def _oldest_age(self) -> float:
        path = self._path()
        if path is None or not path.exists():
            return 0.0
        # its own read-only connection: a scrape never waits on the queue's lock
        with contextlib.suppress(sqlite3.Error), contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        ) as db:
            row = db.execute("SELECT MIN(enqueued) FROM jobs").fetchone()
            if row and row[0] is not None:
                return max(0.0, time.time() - float(row[0]))
        return 0.0


class GatewayMetrics:
    """The OpenFaaS gateway's own metric names, and the queue's depth and age."""

    def __init__(self, services: Callable[[], int], pending: Callable[[], int],
                 queue_path: Callable[[], Path | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocations = Counter("gateway_function_invocation",
                                   "Function calls through the gateway, by status code.",
                                   ["function_name", "code"], registry=r)
        self.seconds = Histogram("gateway_functions_seconds",
                                 "Time the gateway took to answer a function call.",
                                 ["function_name"], registry=r)
        self._services = services
        r.register(_ServiceCount(services))
        r.register(QueueCollector(pending, queue_path))

    def invoked(self, function: str, code: int, seconds: float) -> None:
        self.invocations.labels(function, str(code)).inc()
        self.seconds.labels(function).observe(max(0.0, seconds))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCount(Collector):
    def __init__(self, services: Callable[[], int]) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily("gateway_service_count", "Functions the gateway serves.")
        count.add_metric([], float(self._services()))
        yield count
