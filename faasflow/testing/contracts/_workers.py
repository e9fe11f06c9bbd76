"""The tasks the store contracts' concurrency tests run, in threads and in spawned child
processes, and the machinery that rebuilds a test's backend in a child."""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import queue
import random
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.interfaces import DataStore, StateStore
from faasflow.testing.contracts._common import WAIT

if TYPE_CHECKING:
    from faasflow.testing.contracts._stores import _StoreContract


def payload(index: int, size: int) -> bytes:
    return bytes([index % 256]) * size


def _task_create(store: StateStore, index: int, key: str) -> bool:
    return store.create(key, f"worker-{index}")


def _task_cas_increment(store: StateStore, index: int, key: str, times: int) -> int:
    conflicts = 0
    for _ in range(times):
        while True:
            try:
                old = store.get(key)
            except KeyNotFound:
                if store.create(key, "1"):
                    break
                continue
            try:
                store.update(key, old, str(int(old) + 1))
                break
            except (CompareFailed, KeyNotFound):
                conflicts += 1
                time.sleep(random.uniform(0, 0.002))
    return conflicts


def _task_transaction(store: StateStore, index: int) -> bool:
    # two keys moved together, a third created and one deleted: a torn write shows as a != b
    return store.transaction(
        {"a": "0", "b": "0", f"won--{index}": None},
        {"a": f"worker-{index}", "b": f"worker-{index}", f"won--{index}": "1"},
        ["c"],
    )


def _task_increment(store: StateStore, index: int, key: str, times: int) -> list[int]:
    return [store.increment(key) for _ in range(times)]


def _task_locked_add(store: StateStore, index: int, key: str, times: int) -> list[int]:
    """Add ``times`` members to the counted set ``key`` as the engine records fan-in
    arrivals: the counter and the member's position read and written in one locked step."""
    positions: list[int] = []
    for n in range(times):
        member = f"{key}@worker-{index}-{n}"

        def decide(values: Mapping[str, str | None], member: str = member) -> dict[str, str]:
            count = int(values[key] or 0) + 1
            positions.append(count)  # a call repeated after a lost answer would show twice
            return {key: str(count), member: str(count)}

        store.locked_transaction([key, member], decide)
    return positions


def _task_write(store: DataStore, index: int, size: int) -> None:
    store.set(f"worker-{index}", payload(index, size))


def _task_overwrite(store: DataStore, index: int, size: int) -> None:
    for _ in range(3):
        store.set("shared", payload(index, size))


TASKS: dict[str, Callable[..., Any]] = {
    "create": _task_create,
    "cas_increment": _task_cas_increment,
    "increment": _task_increment,
    "transaction": _task_transaction,
    "locked_add": _task_locked_add,
    "write": _task_write,
    "overwrite": _task_overwrite,
}


@attrs.frozen
class ChildSpec:
    """How a spawned child rebuilds the test's backend."""

    module: str
    file: str | None
    qualname: str
    attributes: Mapping[str, Any]

    @classmethod
    def of(cls, contract: _StoreContract[Any]) -> ChildSpec:
        test_class = type(contract)
        module = sys.modules[test_class.__module__]
        names = type(contract).process_attributes
        return cls(
            module=test_class.__module__,
            file=getattr(module, "__file__", None),
            qualname=test_class.__qualname__,
            attributes={name: getattr(contract, name) for name in names},
        )

    def build(self) -> Any:
        module = self._import()
        target: Any = module
        for part in self.qualname.split("."):
            target = getattr(target, part)
        instance = target()
        for name, value in self.attributes.items():
            setattr(instance, name, value)
        backend = instance.make_store()
        return backend.scoped(self.attributes["flow_name"], self.attributes["request_id"])

    def _import(self) -> ModuleType:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            module = None
        if module is not None:
            return module
        if self.file is None:
            raise ImportError(
                f"cannot import test module {self.module!r} in a child process; put its "
                "directory on sys.path (pytest's default rootdir/prepend import mode does)"
            )
        spec = importlib.util.spec_from_file_location(self.module, self.file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load test module from {self.file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module] = module
        spec.loader.exec_module(module)
        return module


def child_main(job: tuple[ChildSpec, str, tuple[Any, ...], int], go: Any, results: Any) -> None:
    spec, task, args, index = job
    try:
        store = spec.build()
    except BaseException:
        results.put(("error", index, traceback.format_exc()))
        return
    try:
        results.put(("ready", index, None))
        if not go.wait(WAIT):
            results.put(("error", index, "the parent never gave the start signal"))
            return
        results.put(("done", index, TASKS[task](store, index, *args)))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))
    finally:
        store.close()


def run_processes(spec: ChildSpec, task: str, args: tuple[Any, ...], count: int) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    messages = ctx.Queue()
    children = [
        ctx.Process(target=child_main, args=((spec, task, args, i), go, messages), daemon=True)
        for i in range(count)
    ]
    for child in children:
        child.start()
    try:
        results: list[Any] = [None] * count

        def collect(kind: str) -> None:
            pending = set(range(count))
            deadline = time.monotonic() + WAIT
            while pending:
                try:
                    status, index, value = messages.get(
                        timeout=max(0.1, deadline - time.monotonic())
                    )
                except queue.Empty:
                    pytest.fail(
                        f"worker processes {sorted(pending)} did not report {kind!r} "
                        f"within {WAIT:.0f} s"
                    )
                if status == "error":
                    pytest.fail(f"worker process {index} failed:\n{value}")
                if status == kind:
                    pending.discard(index)
                    results[index] = value

        collect("ready")
        go.set()
        collect("done")
        return results
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.terminate()
                child.join(5)
        messages.close()
        messages.join_thread()
