"""Fixture logic shared by the StateStore, DataStore and request-index contracts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import pytest

from faasflow.interfaces import DataStore, StateStore
from faasflow.testing.contracts._common import WAIT, run_threads, unique
from faasflow.testing.contracts._workers import TASKS, ChildSpec, run_processes

S = TypeVar("S", StateStore, DataStore)


class _StoreContract(Generic[S]):
    """Fixture logic shared by the two store contracts."""

    #: The backend is visible to several processes at once (False for in-process stores).
    supports_processes: ClassVar[bool] = True
    #: Threads (and processes) in the concurrency tests.
    workers: ClassVar[int] = 4
    #: Increments each worker makes in the counter tests.
    increments_per_worker: ClassVar[int] = 5
    #: Largest value the backend accepts, in bytes; None for no limit.
    max_value_bytes: ClassVar[int | None] = None
    #: Instance attributes copied into child processes before ``make_store`` runs there.
    process_attributes: ClassVar[tuple[str, ...]] = ("workdir", "flow_name", "request_id")

    workdir: Path
    """A fresh directory for this test; file-based stores keep their files in it."""
    flow_name: str
    request_id: str
    backend: S
    """The object ``make_store`` returned (shared by every handle)."""
    store: S
    """The backend scoped to ``flow_name`` / ``request_id``."""

    def make_store(self) -> S:
        """Return a new backend object; the subclass implements this."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(self)")

    @pytest.fixture(autouse=True)
    def _faasflow_store(self, tmp_path: Path) -> Iterator[None]:
        self.workdir = tmp_path
        self.flow_name = unique("contract")
        self.request_id = unique("req")
        self._handles: list[S] = []
        self.backend = self.make_store()
        try:
            self.store = self.scoped(self.request_id)
            yield
        finally:
            try:
                for handle in self._handles:
                    handle.cleanup()
            finally:
                self.backend.close()

    def scoped(self, request_id: str | None = None, flow_name: str | None = None) -> S:
        """Another handle on the same backend (a new request unless ``request_id`` is given);
        its namespace is cleaned up after the test."""
        handle = self.backend.scoped(flow_name or self.flow_name, request_id or unique("req"))
        handle.init()
        self._handles.append(handle)
        return handle

    def value_size(self, wanted: int) -> int:
        """``wanted`` bytes, capped by ``max_value_bytes``."""
        return wanted if self.max_value_bytes is None else min(wanted, self.max_value_bytes)

    def run_in_processes(self, task: str, *args: Any) -> list[Any]:
        """Run ``task`` in ``workers`` spawned processes, started together; return their
        results in worker order."""
        if not self.supports_processes:
            pytest.skip(f"{type(self).__name__} is not shared between processes")
        spec = ChildSpec.of(self)
        return run_processes(spec, task, args, self.workers)

    def run_in_threads(self, task: str, *args: Any) -> list[Any]:
        """Run ``task`` in ``workers`` threads on the same request, started together: each
        on its own scoped handle, or all on one when the backend says its handles are
        shareable (``handles_shareable``), as the engine then uses them."""
        if self.backend.handles_shareable:
            handles = [self.store] * self.workers
        else:
            handles = [
                self.backend.scoped(self.flow_name, self.request_id)
                for _ in range(self.workers)
            ]
        barrier = threading.Barrier(self.workers)
        fn = TASKS[task]

        def work(index: int) -> Any:
            barrier.wait(timeout=WAIT)
            return fn(handles[index], index, *args)

        return run_threads(work, self.workers)
