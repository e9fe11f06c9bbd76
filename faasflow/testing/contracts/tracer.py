"""The contract every Tracer backend passes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from faasflow.interfaces import Tracer
from faasflow.testing.contracts._common import WAIT, run_threads, unique


class TracerContract:
    """Behaviour every :class:`~faasflow.Tracer` backend must show: no event raises, handles
    of concurrent iterations do not interfere, ``flush`` can be called any number of times."""

    #: Concurrent iterations in the thread test.
    workers: ClassVar[int] = 4

    flow_name: str
    request_id: str
    workdir: Path
    backend: Tracer
    tracer: Tracer
    """The backend scoped to one iteration of ``request_id``."""

    def make_tracer(self) -> Tracer:
        """Return a new Tracer backend object; the subclass implements this."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_tracer(self)")

    @pytest.fixture(autouse=True)
    def _faasflow_tracer(self, tmp_path: Path) -> Iterator[None]:
        self.workdir = tmp_path
        self.flow_name = unique("contract")
        self.request_id = unique("req")
        self.backend = self.make_tracer()
        try:
            self.tracer = self.backend.scoped(self.flow_name, self.request_id)
            yield
        finally:
            self.backend.close()

    def run_iteration(self, tracer: Tracer, node: str = "node-1", *, fail: bool = False) -> None:
        """The events the engine sends for one node with one function call."""
        tracer.node_start(node, {"request": tracer.request_id, "node": node, "attempt": 1})
        tracer.operation_start("function:echo", node, {"function": "echo"})
        headers: dict[str, str] = {}
        tracer.inject(headers)
        if fail:
            error = RuntimeError("function echo answered 500")
            tracer.operation_failure("function:echo", node, error)
            tracer.node_failure(node, error)
        else:
            tracer.operation_end("function:echo", node, {"http.status": 200, "retries": 0})
            tracer.node_end(node, {"request": tracer.request_id, "node": node})

    def test_successful_request_does_not_raise(self) -> None:
        self.tracer.request_start({"X-Request-Id": self.request_id})
        self.run_iteration(self.tracer)
        self.tracer.request_end({"status": "FINISHED"})
        self.tracer.flush()

    def test_failed_request_does_not_raise(self) -> None:
        self.tracer.request_start({})
        self.run_iteration(self.tracer, fail=True)
        self.tracer.request_failure(RuntimeError("node node-1 failed"))
        self.tracer.flush()

    def test_request_continues_from_injected_carrier(self) -> None:
        self.tracer.request_start({})
        carrier: dict[str, str] = {}
        self.tracer.inject(carrier)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in carrier.items())
        self.tracer.request_end({})
        self.tracer.flush()
        later = self.backend.scoped(self.flow_name, self.request_id)
        later.request_continue(carrier)
        self.run_iteration(later, "node-2")
        later.request_end({"status": "FINISHED"})
        later.flush()

    def test_inject_without_request_does_not_raise(self) -> None:
        carrier: dict[str, str] = {"Existing": "kept"}
        self.tracer.inject(carrier)
        assert carrier["Existing"] == "kept"

    def test_unusual_attributes_do_not_raise(self) -> None:
        self.tracer.request_start({})
        odd: dict[str, object] = {
            "none": None, "bytes": b"\xff", "list": [1, "a"], "float": 1.5, "unicode": "ключ",
        }
        self.tracer.node_start("node-1", odd)
        self.tracer.operation_start("modify", "node-1", odd)
        self.tracer.operation_end("modify", "node-1", odd)
        self.tracer.node_end("node-1", odd)
        self.tracer.request_end(odd)
        self.tracer.flush()

    def test_end_without_start_does_not_raise(self) -> None:
        self.tracer.operation_end("function:echo", "node-9", {})
        self.tracer.node_end("node-9", {})
        self.tracer.request_end({})
        self.tracer.flush()

    def test_flush_is_idempotent(self) -> None:
        self.tracer.flush()
        self.tracer.request_start({})
        self.run_iteration(self.tracer)
        self.tracer.request_end({})
        self.tracer.flush()
        self.tracer.flush()

    def test_concurrent_iterations_do_not_interfere(self) -> None:
        self.tracer.request_start({})
        carrier: dict[str, str] = {}
        self.tracer.inject(carrier)
        barrier = threading.Barrier(self.workers)

        def iteration(index: int) -> None:
            handle = self.backend.scoped(self.flow_name, self.request_id)
            barrier.wait(timeout=WAIT)
            handle.request_continue(carrier)
            self.run_iteration(handle, f"node-{index}", fail=index == 0)
            handle.request_end({})
            handle.flush()

        run_threads(iteration, self.workers)
        self.tracer.request_end({})
        self.tracer.flush()
