"""The folded chain step under faults: every store call of a small chain run by the local
invoker (each step's done marker going with its successor's claim, ``handing.chains``) fails in
turn, raised or applied, on memory and sqlite. The request ends once with the right output,
every node's function runs exactly once (nothing is killed here), every node of the record
succeeded, nothing is left in the stores nor in hand.

The systematic suite (test_faults_systematic) forwards every iteration through a queue (its
messages are encoded): it never takes this path. Two settings: the defaults (a store call is
retried for a few seconds inside the iteration), and no retry inside the iteration, where the
local delivery's attempts converge each failure (there the last node, which writes its done
marker as before, may run again when a fault interrupts its attempt before that write)."""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from faults_shapes import data_keys

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.default_plugins.invokers import LocalInvoker
from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteDataStore, SqliteStateStore
from faasflow.engine import Backends, Engine
from faasflow.engine.markers import INLINE
from faasflow.engine.records import RECORDS, RecordBook
from faasflow.interfaces import DataStore, StateStore
from faasflow.plugins import Registry
from faasflow.settings import Settings
from faasflow.testing.faults import FailingStore, Faults

#: b's output is kept in the data store (too large for its marker); c's goes to d by reference
#: (too large for the message)
SIZES = {"a": 1, "b": INLINE + 500, "c": 70_000, "d": 1}
NODES = tuple(SIZES)
EXPECTED = b">" + b"".join(name.encode() * size for name, size in SIZES.items())
SETTINGS = {
    "retry": Settings(environ={"FAASFLOW_LOCAL_WORKERS": "1"}),
    "no-retry": Settings(backend_retry=0.0, environ={"FAASFLOW_LOCAL_WORKERS": "1"}),
}
MODES = ("raise", "applied")


@attrs.define
class Run:
    engine: Engine
    faults: Faults
    states: StateStore
    data: DataStore
    request_id: str
    calls: collections.Counter[str]
    hooks: list[str]
    order: list[tuple[int, str]]
    """(store calls so far, node) of every function call: which node a fault interrupted."""
    store_calls: int
    injected: int


def _run(stores: tuple[StateStore, DataStore], settings: Settings, fail_at: int | None = None,
         mode: Any = "raise") -> Run:
    faults = Faults(fail_at=fail_at, mode=mode)
    calls: collections.Counter[str] = collections.Counter()
    order: list[tuple[int, str]] = []
    hooks: list[str] = []
    lock = threading.Lock()

    started = threading.Event()

    def step(name: str) -> Any:
        def fn(data: bytes) -> bytes:
            if name == "b":  # the start has answered: its store calls come first, always
                started.wait(30)
            with lock:
                calls[name] += 1
                order.append((faults.calls, name))
            return data + name.encode() * SIZES[name]

        return fn

    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for index, name in enumerate(NODES):
            dag.node(name).modify(step(name))
            if index:
                dag.edge(NODES[index - 1], name)
        flow.finally_(lambda status: hooks.append(status))

    name = f"chainfault-{uuid.uuid4().hex[:8]}"
    registry = Registry.from_settings(settings)
    invoker = LocalInvoker(workers=1)
    engine = Engine(Flow(define, name=name), settings, Backends(
        FailingStore.wrap(stores[0], faults), FailingStore.wrap(stores[1], faults),
        registry.create(Kind.TRACER, settings, "none"), invoker,
    ), name=name)
    rid = f"req-{uuid.uuid4().hex[:12]}"
    ended = engine.core.waiters.watch(rid)
    for _ in range(20):  # a client retries a start that failed
        try:
            engine.start(b">", request_id=rid)
            break
        except Exception:
            continue
    started.set()
    # its record, read past the failing stores (their call count stays the request's own):
    # an end made by a redelivery of the ender may not wake the waiters (``Engine.wait`` polls)
    book = RecordBook(stores[0].scoped(name, RECORDS), stores[1].scoped(name, RECORDS), 3600.0)
    for _ in range(6000):
        found = book.entry(rid)
        if ended.wait(0.01) or (found is not None and found[1]["status"] != "running"):
            break
    else:
        raise AssertionError("the request never ended")
    invoker.close(wait=True)  # the pool is idle: whatever the last iteration did is done
    made, injected = faults.calls, len(faults.injected)
    faults.reset()
    return Run(engine, faults, stores[0], stores[1], rid, calls, hooks, order, made, injected)


@pytest.fixture(scope="module")
def sqlite_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StateStore, DataStore]]:
    base = tmp_path_factory.mktemp("chain-folded-sqlite")
    states = SqliteStateStore.from_options({"path": str(base / "state.db")})
    data = SqliteDataStore.from_options({"path": str(base / "data.db")})
    yield states, data
    states.close()
    data.close()


def _stores(backend: str, request: pytest.FixtureRequest) -> tuple[StateStore, DataStore]:
    if backend == "sqlite":
        pair: tuple[StateStore, DataStore] = request.getfixturevalue("sqlite_files")
        return pair
    return MemoryStateStore(), MemoryDataStore()


_TOTALS: dict[str, int] = {}


def _total(setting: str) -> int:
    """How many store calls a clean request makes (on memory; sqlite makes the same ones)."""
    if setting not in _TOTALS:
        _TOTALS[setting] = _run((MemoryStateStore(), MemoryDataStore()),
                                SETTINGS[setting]).store_calls
    return _TOTALS[setting]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "k" not in metafunc.fixturenames:
        return
    params = []
    for setting in SETTINGS:
        total = _total(setting)
        for backend in ("memory", "sqlite"):
            params += [
                pytest.param(setting, backend, mode, k, id=f"{setting}-{backend}-{mode}-k{k:02d}")
                for mode in MODES for k in range(1, total + 1)
            ]
    metafunc.parametrize(("setting", "backend", "mode", "k"), params)


def test_a_clean_run_folds_every_step_and_ends_with_the_output() -> None:
    for settings in SETTINGS.values():
        run = _run((MemoryStateStore(), MemoryDataStore()), settings)
        record = run.engine.record(run.request_id)
        assert record is not None and record.status == "success" and record.output == EXPECTED
        assert dict(run.calls) == dict.fromkeys(NODES, 1)
        assert run.engine.core.pending == {}


def test_a_chain_converges_after_a_fault_at_store_call_k(
    setting: str, backend: str, mode: Any, k: int, request: pytest.FixtureRequest
) -> None:
    run = _run(_stores(backend, request), SETTINGS[setting], fail_at=k, mode=mode)
    engine, rid = run.engine, run.request_id
    assert run.injected == 1, f"call {k} never happened"
    record = engine.record(rid)
    assert record is not None, "the request has no record"
    assert (record.status, record.error) == ("success", None)
    assert record.output == EXPECTED
    assert [r.request_id for r in engine.requests()] == [rid], "more than one request"
    assert run.hooks == ["success"], "the request did not end exactly once"
    repeated = {node: n for node, n in run.calls.items() if n != 1}
    if setting == "no-retry":
        # the last node writes its done marker (it has no successor): interrupted before that
        # write, its function may run again. A folded node stores nothing between its function
        # and its hand-on, so a fault never leaves its function to run twice.
        before = [node for calls, node in run.order if calls < k]
        last = NODES[-1] if before and before[-1] == NODES[-1] else None
        repeated = {node: n for node, n in repeated.items() if not (node == last and n == 2)}
    assert repeated == {}, f"functions ran other than once: {dict(run.calls)}"
    assert set(run.calls) == set(NODES)
    assert {s["state"] for s in record.states.values()} == {"succeeded"}
    assert sorted(record.nodes) == [f"0_{i}_{n}" for i, n in enumerate(NODES, 1)]
    assert engine.core.pending == {}, "a hand-over left in hand"
    assert run.states.scoped(engine.name, rid).scan("") == {}, "state left behind"
    assert data_keys(run.data, f"faasflow/{engine.name}/{rid}/") == [], "data left behind"
