"""What every iteration of a request sets up alike, made once per request (``setups.Setups``),
the query it shares, and the local invoker's pool taken without a look under its lock."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.context import Query
from faasflow.default_plugins.invokers import LocalInvoker
from faasflow.default_plugins.memory import MemoryDataStore
from faasflow.engine import Backends, Engine
from faasflow.engine.setups import Setups
from faasflow.plugins import Registry
from faasflow.settings import Settings


def _engine(define: Any, *, tracer: str = "none", data: str = "memory", state: str = "memory",
            **kw: Any) -> Engine:
    settings = Settings(**kw)
    registry = Registry.from_settings(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, state),
        registry.create(Kind.DATA_STORE, settings, data),
        registry.create(Kind.TRACER, settings, tracer),
        registry.create(Kind.INVOKER, settings, "local"),
    )
    return Engine(Flow(define, name="setups"), settings, backends)


def _one(flow: Any, context: Any) -> None:
    flow.dag().node("a").modify(lambda d: d)


def _per_request(flow: Any, context: Any) -> None:
    # the graph depends on the request: one node per query value
    name = context.query.get("node", "a")
    flow.dag().node(name).modify(lambda d: d)


@pytest.fixture
def engine() -> Any:
    made = _engine(_one)
    yield made
    made.close()


def test_the_iterations_of_a_request_share_one_set_up(engine: Engine) -> None:
    setups = Setups(engine.core)
    first = setups.of("r1", "")
    assert setups.of("r1", "") is first
    assert first.graph is engine.flow.graph("", "r1")
    assert first.control is engine.core.control("r1")
    assert first.tracer is engine.core.tracer  # "none" keeps nothing of an iteration
    assert first.parsed.raw == ""
    assert setups.of("r2", "") is not first


def test_a_message_with_another_query_makes_another_set_up() -> None:
    engine = _engine(_per_request)
    try:
        setups = Setups(engine.core)
        b = setups.of("r1", "node=b")
        c = setups.of("r1", "node=c")
        assert c is not b and c.query == "node=c" and c.parsed.get("node") == "c"
        assert set(c.graph.nodes) != set(b.graph.nodes)
        assert c.graph is engine.flow.graph("node=c", "r1")
    finally:
        engine.close()


def test_a_request_id_used_again_after_its_end_gets_a_new_set_up(engine: Engine) -> None:
    setups = Setups(engine.core)
    first = setups.of("r1", "")
    setups.forget("r1")
    setups.forget("r1")  # twice, or for a request never seen: nothing to do
    setups.forget("never")
    again = setups.of("r1", "")
    assert again is not first
    assert again.graph is first.graph  # what it is made of is the same
    assert setups.of("r1", "") is again


def test_past_the_bound_the_oldest_request_goes_first(engine: Engine) -> None:
    setups = Setups(engine.core, size=2)
    r1, r2 = setups.of("r1", ""), setups.of("r2", "")
    assert setups.of("r1", "") is r1  # a request already kept takes no place of another
    r3 = setups.of("r3", "")
    assert setups.of("r2", "") is r2 and setups.of("r3", "") is r3
    assert setups.of("r1", "") is not r1


def test_a_tracer_that_keeps_an_iteration_is_scoped_per_iteration() -> None:
    engine = _engine(_one, tracer="log")
    try:
        setup = Setups(engine.core).of("r1", "")
        assert setup.tracer is None
    finally:
        engine.close()


class _HandlePerIteration(MemoryDataStore):
    """A store whose handles keep something of their own (none of the built-in ones do)."""

    handles_shareable = False


def test_a_core_whose_handles_are_made_per_iteration_keeps_no_set_up() -> None:
    settings = Settings()
    registry = Registry.from_settings(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "memory"),
        _HandlePerIteration(),
        registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    )
    engine = Engine(Flow(_one, name="setups"), settings, backends)
    try:
        assert engine.core.control("r1") is not engine.core.control("r1")
        setups = Setups(engine.core)
        assert setups.of("r1", "") is not setups.of("r1", "")
    finally:
        engine.close()


def test_durable_stores_share_one_set_of_handles_per_request(tmp_path: Any) -> None:
    engine = _engine(_one, data="filesystem", environ={
        "FAASFLOW_FILESYSTEM_PATH": str(tmp_path / "data"),
        "FAASFLOW_SQLITE_PATH": str(tmp_path / "state.db"),
    }, state="sqlite")
    try:
        assert engine.core.control("r1") is engine.core.control("r1")
        assert engine.core.control("r1") is not engine.core.control("r2")
        setups = Setups(engine.core)
        assert setups.of("r1", "") is setups.of("r1", "")
    finally:
        engine.close()


def test_threads_asking_at_once_all_get_a_set_up_of_their_request(engine: Engine) -> None:
    setups = Setups(engine.core, size=8)
    got: dict[str, set[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def ask(worker: int) -> None:
        try:
            start.wait(5)
            for turn in range(300):
                rid = f"r{(worker + turn) % 12}"
                setup = setups.of(rid, "")
                assert setup.control.request_id == rid
                got.setdefault(rid, set()).add(id(setup))
                if turn % 7 == 0:
                    setups.forget(rid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert sorted(got) == sorted(f"r{n}" for n in range(12))


def test_a_shared_query_hands_out_copies_of_its_values() -> None:
    query = Query("?a=1&a=2")
    assert query.raw == "a=1&a=2"
    query["a"].append("3")
    query.getlist("a").append("4")
    assert query["a"] == ["1", "2"] and query.get("a") == "1"
    assert Query("??b=1").raw == "b=1" and Query("").raw == ""


def test_an_invoker_with_an_empty_queue_takes_its_pool_without_its_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoker = LocalInvoker(workers=1)
    opened: list[str] = []
    real = LocalInvoker._open

    def spy(self: LocalInvoker, rid: str) -> Any:
        opened.append(rid)
        return real(self, rid)

    monkeypatch.setattr(LocalInvoker, "_open", spy)
    done = threading.Semaphore(0)
    hand = invoker.hand_on(lambda *_: done.release(), "f")
    try:
        for n in range(3):
            hand(f"r{n}", "m", None)
            assert done.acquire(timeout=10)  # the queue is empty again
    finally:
        invoker.close()
    assert opened == ["r0"]
