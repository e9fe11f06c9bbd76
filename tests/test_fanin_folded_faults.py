"""The folded arrival under faults: every store call of a fan-in and a foreach request whose
branches bring small (kept in the member's key) and large (kept in the data store) payloads
fails in turn, raised or applied, and the request is redelivered to its end: it ends once,
with the aggregator's input complete, and no done node's function runs again (the one whose
attempt the fault interrupted may run twice, as in test_faults_systematic).

Each runs on memory (locked transactions), an etcd-like store (compare-and-swap only), a store
without multi-key transactions and sqlite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_faults_systematic as systematic
from faults_shapes import Case, Shape, fault_points, run_case

from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteDataStore, SqliteStateStore
from faasflow.engine.markers import INLINE
from faasflow.interfaces import DataStore, StateStore

LARGE = INLINE + 500


class _CasOnly(MemoryStateStore):
    locked_transactions = False


class _Listed(MemoryStateStore):
    atomic_transactions = False
    locked_transactions = False


def _grow(tag: str, size: int) -> Callable[[bytes], bytes]:
    return lambda data: data + tag.encode() * size


def _lengths(inputs: dict[str, bytes]) -> bytes:
    return b"|".join(b"%s=%d" % (k.encode(), len(inputs[k])) for k in sorted(inputs))


def fan_in(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("s").apply("fn-s")
    for node in ("l", "m", "r"):
        dag.node(node).apply(f"fn-{node}")
        dag.edge("s", node)
    dag.node("j", aggregator=_lengths).apply("fn-j")
    for node in ("l", "m", "r"):
        dag.edge(node, "j")


def foreach(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("s").apply("fn-s")
    branch = dag.foreach_branch(
        "F", lambda data: {"a": b"1", "b": b"%d" % LARGE, "c": b"0"}, aggregator=_lengths
    )
    branch.node("leaf").apply("fn-leaf")
    dag.node("e").apply("fn-e")
    dag.edge("s", "F")
    dag.edge("F", "e")


SHAPES = {
    shape.name: shape
    for shape in (
        Shape(
            "fan-in-mixed",
            fan_in,
            {
                "fn-s": _grow("s", 1),
                "fn-l": _grow("l", LARGE),
                "fn-m": _grow("m", 1),
                "fn-r": _grow("r", 0),
                "fn-j": _grow("j", 1),
            },
            b"x",
            "success",
            b"l=%d|m=3|r=2j" % (LARGE + 2),
        ),
        Shape(
            "foreach-mixed",
            foreach,
            {
                "fn-s": _grow("s", 1),
                "fn-leaf": lambda data: b"." * int(data),
                "fn-e": _grow("e", 1),
            },
            b"x",
            "success",
            b"a=1|b=%d|c=0e" % LARGE,
        ),
    )
}
KINDS: dict[str, Callable[[], StateStore]] = {
    "memory": MemoryStateStore,
    "cas": _CasOnly,
    "listed": _Listed,
}
MODES = ("raise", "applied")
_BASELINES: dict[str, Case] = {}


def _baseline(name: str) -> Case:
    if name not in _BASELINES:
        _BASELINES[name] = run_case(SHAPES[name], (MemoryStateStore(), MemoryDataStore()))
    return _BASELINES[name]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "k" not in metafunc.fixturenames:
        return
    params = []
    for name in SHAPES:
        total = _baseline(name).store_calls
        for kind in (*KINDS, "sqlite"):
            for phase, mode in enumerate(MODES):
                params += [
                    pytest.param(name, kind, mode, k, id=f"{name}-{kind}-{mode}-k{k:02d}")
                    for k in fault_points(total, None, phase / len(MODES))
                ]
    metafunc.parametrize(("shape_name", "kind", "mode", "k"), params)


@pytest.fixture(scope="module")
def sqlite_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StateStore, DataStore]]:
    base = tmp_path_factory.mktemp("folded-sqlite")
    states = SqliteStateStore.from_options({"path": str(base / "state.db")})
    data = SqliteDataStore.from_options({"path": str(base / "data.db")})
    yield states, data
    states.close()
    data.close()


def _stores(kind: str, request: pytest.FixtureRequest) -> tuple[StateStore, DataStore]:
    if kind == "sqlite":
        pair: tuple[StateStore, DataStore] = request.getfixturevalue("sqlite_files")
        return pair
    return KINDS[kind](), MemoryDataStore()


def test_clean_runs_end_with_every_input_complete() -> None:
    for name, shape in SHAPES.items():
        record = _baseline(name).record()
        assert record is not None and (record.status, record.output) == ("success", shape.output)


def test_a_fault_at_any_call_converges_with_each_function_once(
    shape_name: str, kind: str, mode: Any, k: int, request: pytest.FixtureRequest
) -> None:
    case = run_case(SHAPES[shape_name], _stores(kind, request), fail_at=k, mode=mode)
    try:
        systematic._assert_converged(case, _baseline(shape_name), k)
    finally:
        systematic._forget(case)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_concurrent_duplicated_shuffled_deliveries_run_every_node_once(
    shape_name: str, kind: str, seed: int
) -> None:
    shape = SHAPES[shape_name]
    case = run_case(
        shape,
        (KINDS[kind](), MemoryDataStore()),
        threads=4,
        duplicate=0.5,
        reorder=True,
        seed=seed,
    )
    record = case.record()
    assert record is not None
    assert (record.status, record.output) == (shape.status, shape.output), record.error
    assert case.functions.repeated(case.request_id) == {}
    assert case.states.scoped(case.flow, case.request_id).scan("") == {}
