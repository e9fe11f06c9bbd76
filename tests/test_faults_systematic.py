"""Fail the k-th store call of a request, for every k, and check the request still ends once.

For each shape (tests/faults_shapes.py) a clean run on the memory stores counts the store calls
the request makes (N). Then for every k in 1..N and each mode -- ``raise`` (the call fails
before it reaches the store) and ``applied`` (the write lands, then the caller sees an error,
as an etcd timeout that was applied) -- the request runs again with call k failing, and these
must hold:

- the request ends exactly once: one record, in the shape's terminal status, hooks once;
- with the right output;
- no second request was created (no other request namespace was ever touched);
- every function of a done node was called once. The one exception, at-least-once by design:
  the function of the node whose attempt the fault interrupted (the last function called
  before call k) may run twice, because the fault may fall between the call and the node's
  done marker;
- nothing of the request is left in the state or the data store.

Two deliveries: ``redelivery`` -- the engine does not retry store calls itself
(``backend_retry=0``) and a queue redelivers every delivery that answers 5xx (OpenFaaS Pro), so
every failure point is converged by redelivery alone; and ``ce`` -- the default settings (the
iteration retries a failing store call for a few seconds) behind a queue that never redelivers
(OpenFaaS CE's queue-worker), on memory; and ``dup`` -- redelivery that also delivers half the
iterations twice, in a shuffled order, on memory. The redelivery runs on memory and sqlite at
every k, and so does it on etcd (the server ``.ci/services`` starts) and the Consul stand-in
(about 40 s each); ``FAASFLOW_FAULTS_POINTS_ETCD`` / ``FAASFLOW_FAULTS_POINTS_CONSUL`` = N
samples N points per shape and mode instead, spread over the whole request and different for
each mode (``all``, the default, runs every k). Test ids name shape, backend (``-ce``/``-dup``
for the other deliveries), mode and k. Last, each shape runs without faults from four threads at
once with duplicated, shuffled deliveries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults_shapes import DEFAULTS, SHAPES, Case, Shape, data_keys, fault_points, run_case

from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteDataStore, SqliteStateStore
from faasflow.interfaces import DataStore, StateStore

BACKENDS = ("memory", "sqlite", "etcd", "consul")
MODES = ("raise", "applied")


def _points(backend: str, default: str) -> int | None:
    raw = os.environ.get(f"FAASFLOW_FAULTS_POINTS_{backend.upper()}", default)
    return None if raw == "all" else int(raw)


POINTS = {
    "memory": None,
    "sqlite": None,
    "etcd": _points("etcd", "all"),
    "consul": _points("consul", "all"),
}


def _strip(case: Case) -> dict[tuple[str, str], int]:
    """Function calls of the case's request keyed by node (request id taken off the key)."""
    prefix = case.request_id + "/"
    calls = case.functions.calls(case.request_id)
    return {(key.removeprefix(prefix), fn): n for (key, fn), n in calls.items()}


class _Baseline:
    """What a clean run of each shape does, measured once on the memory stores."""

    def __init__(self) -> None:
        self._cases: dict[str, Case] = {}

    def __getitem__(self, shape: str) -> Case:
        if shape not in self._cases:
            self._cases[shape] = run_case(SHAPES[shape], (MemoryStateStore(), MemoryDataStore()))
        return self._cases[shape]


BASELINE = _Baseline()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ != "test_request_converges_after_a_fault_at_call_k":
        return
    params = []
    for name in SHAPES:
        try:
            total = BASELINE[name].store_calls
        except Exception as exc:  # the clean run itself failed: one case that shows why
            params.append(
                pytest.param(name, "memory", "redelivery", "raise", 0, id=f"{name}-clean-{exc}")
            )
            continue
        runs = [(backend, "redelivery") for backend in BACKENDS]
        runs += [("memory", "ce"), ("memory", "dup")]
        for backend, delivery in runs:
            label = backend if delivery == "redelivery" else f"{backend}-{delivery}"
            for phase, mode in enumerate(MODES):
                for k in fault_points(total, POINTS[backend], phase / len(MODES)):
                    params.append(
                        pytest.param(
                            name, backend, delivery, mode, k, id=f"{name}-{label}-{mode}-k{k:02d}"
                        )
                    )
    metafunc.parametrize(("shape_name", "backend", "delivery", "mode", "k"), params)


# -- the stores ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StateStore, DataStore]]:
    base = tmp_path_factory.mktemp("faults-sqlite")
    states = SqliteStateStore.from_options({"path": str(base / "state.db")})
    data = SqliteDataStore.from_options({"path": str(base / "data.db")})
    yield states, data
    states.close()
    data.close()


@pytest.fixture(scope="module")
def etcd_store() -> Iterator[StateStore]:
    endpoints = os.environ.get("ETCD_ENDPOINTS")
    if not endpoints:
        pytest.skip("no etcd: run `bash .ci/services up` and source its env file")
    from faasflow_etcd.store import EtcdStateStore

    store = EtcdStateStore.from_options({"endpoints": endpoints})
    yield store
    store.close()


@pytest.fixture(scope="module")
def consul_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateStore]:
    import sys

    here = Path(__file__).parent.parent / "plugins" / "faasflow_consul" / "tests"
    sys.path.insert(0, str(here))
    try:
        from consul_standin import ConsulStandIn
    finally:
        sys.path.remove(str(here))
    from faasflow_consul.store import ConsulStateStore

    standin = ConsulStandIn(tmp_path_factory.mktemp("faults-consul"), keep_state=False)
    standin.start()
    store = ConsulStateStore.from_options({"address": standin.address})
    yield store
    store.close()
    standin.stop()


@pytest.fixture
def stores(backend: str, request: pytest.FixtureRequest) -> tuple[StateStore, DataStore]:
    if backend == "memory":
        return MemoryStateStore(), MemoryDataStore()
    if backend == "sqlite":
        pair: tuple[StateStore, DataStore] = request.getfixturevalue("sqlite_files")
        return pair
    fixture = {"etcd": "etcd_store", "consul": "consul_store"}[backend]
    return request.getfixturevalue(fixture), MemoryDataStore()


# -- the suite ----------------------------------------------------------------------------------


def _assert_converged(case: Case, baseline: Case, k: int) -> None:
    shape: Shape = case.shape
    queue = case.queue
    assert case.faults.injected, f"call {k} never happened: nothing was injected"
    assert not queue.abandoned, f"deliveries that never succeeded: {queue.failures[-1:]}"
    record = case.record()
    assert record is not None, "the request has no record"
    assert record.status == shape.status, f"ended {record.status}: {record.error}"
    if shape.output is not None:
        assert record.output == shape.output
    assert [r.request_id for r in case.engine.requests()] == [case.request_id], (
        "more than one request was recorded"
    )
    assert case.namespaces() == {case.request_id}, "another request's namespace was written"
    assert case.hooks == baseline.hooks, "hooks ran a different number of times"

    calls = _strip(case)
    allowed = case.functions.last_before(k)
    allowed_node = None if allowed is None else (
        allowed[0].removeprefix(case.request_id + "/"), allowed[1]
    )
    repeated = {
        node: n for node, n in calls.items() if n > 1 and not (node == allowed_node and n == 2)
    }
    assert repeated == {}, f"functions of done nodes ran again (allowed: {allowed_node})"
    assert not shape.never_called & {fn for _, fn in calls}, "a successor of the stop ran"
    if shape.status == "success":
        assert set(calls) == set(_strip(baseline)), "a different set of node functions ran"

    namespace = f"faasflow/{case.flow}/{case.request_id}/"
    assert case.states.scoped(case.flow, case.request_id).scan("") == {}, "state left behind"
    assert data_keys(case.data, namespace) == [], "data left behind"


def test_clean_runs_end_as_each_shape_should() -> None:
    for name, shape in SHAPES.items():
        case = BASELINE[name]
        record = case.record()
        assert record is not None, name
        assert record.status == shape.status, (name, record.error)
        if shape.output is not None:
            assert record.output == shape.output, name
        assert all(n == 1 for n in case.functions.calls(case.request_id).values()), name


def test_request_converges_after_a_fault_at_call_k(
    shape_name: str,
    backend: str,
    delivery: str,
    mode: Any,
    k: int,
    stores: tuple[StateStore, DataStore],
) -> None:
    baseline = BASELINE[shape_name]
    if delivery == "ce":
        case = run_case(
            SHAPES[shape_name], stores, fail_at=k, mode=mode, redeliver=False, settings=DEFAULTS
        )
        assert not case.queue.dropped, "a delivery failed and CE's queue dropped it"
    elif delivery == "dup":
        case = run_case(
            SHAPES[shape_name], stores, fail_at=k, mode=mode, duplicate=0.5, reorder=True, seed=k
        )
    else:
        case = run_case(SHAPES[shape_name], stores, fail_at=k, mode=mode)
    try:
        _assert_converged(case, baseline, k)
    finally:
        _forget(case)


def _forget(case: Case) -> None:
    """Drop the case's records and anything it left, so the shared servers stay small."""
    from faasflow.engine.records import RECORDS

    for request in (RECORDS, *case.namespaces()):
        case.states.scoped(case.flow, request).cleanup()
        case.data.scoped(case.flow, request).cleanup()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape_name", [n for n in SHAPES if SHAPES[n].script == "plain"])
def test_concurrent_duplicated_shuffled_deliveries_run_every_node_once(
    shape_name: str, seed: int
) -> None:
    shape = SHAPES[shape_name]
    case = run_case(
        shape,
        (MemoryStateStore(), MemoryDataStore()),
        threads=4,
        duplicate=0.5,
        reorder=True,
        seed=seed,
    )
    record = case.record()
    assert record is not None
    assert (record.status, record.output) == (shape.status, shape.output), record.error
    assert case.functions.repeated(case.request_id) == {}
    assert case.hooks == BASELINE[shape_name].hooks
    assert case.states.scoped(case.flow, case.request_id).scan("") == {}
    assert data_keys(case.data, f"faasflow/{case.flow}/{case.request_id}/") == []
