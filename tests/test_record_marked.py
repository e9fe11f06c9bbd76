"""A successful request's record keeps its markers undecoded (``engine.marked``): its runs and
states, read in memory, from the stored body or served as JSON, are exactly those the markers
give when decoded one by one, and the stored body stays JSON whatever a marker holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import faasflow
from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.engine.endings import node_runs
from faasflow.engine.marked import MarkedRuns, MarkedStates, Marks
from faasflow.engine.nodestates import node_states
from faasflow.engine.records import RequestRecord
from faasflow.plugins import Registry
from faasflow.settings import Settings


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    kind = context.query.get("kind")
    if kind == "chain":
        dag.node("a").modify(lambda d: d + b"a")
        dag.node("b").modify(lambda d: d + b"b")
        dag.edge("a", "b")
    elif kind == "cond":  # a branch not taken: its node is skipped
        branches = dag.conditional_branch(
            "pick", ["small", "large"], lambda d: ["small"],
            aggregator=lambda found: b"".join(found.values()),
        )
        branches["small"].node("s").modify(lambda d: d + b"s")
        branches["large"].node("l").modify(lambda d: d + b"l")
    elif kind == "each":  # many instances of one node: counts
        each = dag.foreach_branch(
            "each", lambda d: {str(i): bytes([c]) for i, c in enumerate(d)},
            aggregator=lambda found: b"".join(v for _, v in sorted(found.items())),
        )
        each.node("up").modify(lambda d: d.upper())
        dag.node("end").modify(lambda d: d + b"!")
        dag.edge("each", "end")
    else:  # a nested foreach inside a sub-DAG
        sub = faasflow.Dag()
        outer = sub.foreach_branch("outer", lambda d: {"x": d, "y": d},
                                   aggregator=lambda found: b"+".join(sorted(found.values())))
        outer.node("leaf").modify(lambda d: d + b".")
        dag.sub_dag("inner", sub)
        dag.node("last").modify(lambda d: d)
        dag.edge("inner", "last")


@pytest.fixture
def engine(tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[Engine]:
    stores = request.param
    env = {"FAASFLOW_SQLITE_PATH": str(tmp_path / "state.db"),
           "FAASFLOW_FILESYSTEM_PATH": str(tmp_path / "data")}
    settings = Settings(environ=env)
    registry = Registry.shared(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, stores),
        registry.create(Kind.DATA_STORE, settings,
                        "filesystem" if stores == "sqlite" else "memory"),
        registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    )
    engine = Engine(Flow(define, name="marked"), settings, backends)
    try:
        yield engine
    finally:
        engine.close()


def ended(engine: Engine, kind: str, data: bytes = b"ab") -> RequestRecord:
    started = engine.start(data, query=f"kind={kind}")
    record = engine.wait(started.request_id, timeout=60)
    assert record is not None and record.status == "success", record
    return record


KINDS = ["chain", "cond", "each", "subdag"]


@pytest.mark.parametrize("engine", ["memory", "sqlite"], indirect=True)
@pytest.mark.parametrize("kind", KINDS)
def test_runs_and_states_are_those_of_the_markers_decoded_one_by_one(
    engine: Engine, kind: str
) -> None:
    record = ended(engine, kind)
    assert isinstance(record.nodes, MarkedRuns) and isinstance(record.states, MarkedStates)
    docs = record.nodes.marks.docs()
    graph = engine.core.flow.graph(f"kind={kind}", record.request_id)
    expected_states = node_states(graph, docs, ended="success")
    assert list(record.states.items()) == list(expected_states.items())
    assert dict(record.nodes) == node_runs(None, docs)  # type: ignore[arg-type]
    assert record.nodes  # the test has something to compare


@pytest.mark.parametrize("engine", ["memory", "sqlite"], indirect=True)
@pytest.mark.parametrize("kind", KINDS)
def test_the_stored_record_reads_back_as_the_one_in_memory(engine: Engine, kind: str) -> None:
    record = ended(engine, kind)
    body = engine.core.records.data.get("rec--" + record.request_id)
    doc = json.loads(body)
    assert "marks" in doc and "nodes" not in doc  # markers kept, not runs
    loaded = RequestRecord.from_json(doc)
    assert loaded.to_json() == record.to_json()
    assert loaded.stored() == body  # saved again (after a crash): the same bytes


def state_of(served: dict[str, Any], node: str) -> dict[str, Any]:
    (found,) = [v for k, v in served["states"].items() if k.endswith("_" + node)]
    return found  # type: ignore[no-any-return]


@pytest.mark.parametrize("engine", ["memory"], indirect=True)
def test_the_served_record_shows_skipped_branches_and_foreach_counts(engine: Engine) -> None:
    served = ended(engine, "cond").to_json()
    assert state_of(served, "l") == {"state": "skipped"}
    assert state_of(served, "s") == {"state": "succeeded"}
    each = ended(engine, "each", b"abc").to_json()
    assert state_of(each, "up") == {"state": "succeeded", "counts": {"succeeded": 3}}
    assert each["output"] == "ABC!"
    assert len(each["nodes"]) == 5  # each, up in 3 branches, end
    assert {run["state"] for run in each["nodes"].values()} == {"succeeded"}


def test_a_value_that_is_no_marker_is_left_out_and_the_body_stays_json() -> None:
    good = '{"p":"handed","start":1.0,"end":2.0,"attempts":1,"deliveries":1}'
    odd = {"b": "not json", "c": '["p"]', "d": "{x}", "e": '{"q":1}',
           "f": '{"p":"done"}'}  # the last is a marker without its times: no run
    marks = Marks({"a": good, **odd}, ["a", "b", "c", "d", "e", "f", "g"], ["end"])
    record = RequestRecord("r1", "f", "success", 1.0, 2.0, b"out", None,
                           MarkedRuns(marks), None, MarkedStates(marks))
    doc = json.loads(record.stored())
    loaded = RequestRecord.from_json(doc)
    assert list(loaded.nodes) == ["a"]
    assert loaded.nodes["a"].end == 2.0
    assert loaded.states["a"] == {"state": "succeeded"}
    assert loaded.states["f"] == {"state": "succeeded"}
    assert {loaded.states[n]["state"] for n in "bcdeg"} == {"skipped"}
    assert loaded.to_json() == record.to_json()
