"""The embedded run API: faasflow.run() runs a flow to its end in this process."""

from __future__ import annotations

import threading

import pytest
from engine_harness import Harness

import faasflow
from faasflow.settings import Settings


def parallel(barrier: threading.Barrier):
    def define(flow, context):
        dag = flow.dag()
        dag.node("start")
        # each branch waits for the other: this only finishes if both run at the same time
        dag.node("left").modify(lambda d: (barrier.wait(10), d + b"L")[1])
        dag.node("right").modify(lambda d: (barrier.wait(10), d + b"R")[1])
        dag.node("join", aggregator=lambda d: d["left"] + b"+" + d["right"])
        dag.edge("start", "left")
        dag.edge("start", "right")
        dag.edge("left", "join")
        dag.edge("right", "join")

    return define


def test_run_returns_the_final_output_of_a_dag() -> None:
    result = faasflow.run(parallel(threading.Barrier(2)), b"x")
    assert isinstance(result, faasflow.RunResult)
    assert (result.status, result.output, result.error) == ("success", b"xL+xR", None)
    assert result.ok


def test_parallel_branches_really_run_in_parallel() -> None:
    barrier = threading.Barrier(2)
    assert faasflow.run(parallel(barrier), b"").ok
    assert not barrier.broken


def test_run_calls_registered_python_functions() -> None:
    def define(flow, context):
        dag = flow.dag()
        dag.node("a").apply("upper")
        dag.node("b").apply("exclaim")
        dag.edge("a", "b")

    result = faasflow.run(
        define, "hi", functions={"upper": lambda d: d.upper(), "exclaim": lambda d: d + b"!"}
    )
    assert result.output == b"HI!"


def test_run_accepts_a_compiled_flow_and_query_mapping() -> None:
    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda d: ",".join(context.query.getlist("k")))
        dag.node("b")
        dag.edge("a", "b")

    flow = faasflow.Flow(define, name="q")
    assert faasflow.run(flow, query={"k": ["1", "2"]}).output == b"1,2"


def test_run_reports_a_failure_with_its_node() -> None:
    def define(flow, context):
        dag = flow.dag()
        dag.node("a")
        dag.node("b").modify(lambda d: 1 / 0)
        dag.edge("a", "b")

    result = faasflow.run(define, b"")
    assert result.status == "failure"
    assert "Node(0_2_b)" in result.error
    assert "ZeroDivisionError" in result.error


def test_run_stops_a_request_that_outlives_its_timeout_without_waiting_for_it() -> None:
    release = threading.Event()
    node_returned = threading.Event()

    def slow(d: bytes) -> bytes:
        release.wait(30)
        node_returned.set()
        return d

    def define(flow, context):
        dag = flow.dag()
        dag.node("a")
        dag.node("b").modify(slow)
        dag.node("c")
        dag.edge("a", "b")
        dag.edge("b", "c")

    try:
        result = faasflow.run(define, b"", timeout=0.2)
        # run() came back while the node is still blocked: it did not wait for it
        assert not node_returned.is_set()
    finally:
        release.set()
    assert result.status == "stopped"
    assert "did not finish within 0.2s" in result.error


def test_large_payloads_travel_through_the_data_store() -> None:
    big = bytes(range(256)) * 1024  # 256 KiB, above a 1 KiB inline limit
    h = Harness(_chain_of(3), settings=Settings(hmac_secret=b"k", inline_limit=1024))
    rid = h.start(big).request_id
    assert h.invoker.forwards[0].message.data is None
    assert h.invoker.forwards[0].message.data_ref is not None
    h.drain()
    record = h.engine.record(rid)
    assert record.output == big
    h.assert_clean(rid)


def test_small_payloads_travel_inline_without_store_writes() -> None:
    h = Harness(_chain_of(3))
    rid = h.start(b"small").request_id
    assert h.invoker.forwards[0].message.data == b"small"
    h.drain()
    assert h.data.writes == 0
    assert h.engine.record(rid).output == b"small"


def _chain_of(n: int):
    def define(flow, context):
        dag = flow.dag()
        for i in range(n):
            dag.node(f"n{i}")
            if i:
                dag.edge(f"n{i - 1}", f"n{i}")

    return define


def test_request_fails_clearly_when_the_definition_changes_under_it() -> None:
    version = {"n": 2}

    def define(flow, context):
        dag = flow.dag()
        for i in range(version["n"]):
            dag.node(f"n{i}")
            if i:
                dag.edge(f"n{i - 1}", f"n{i}")

    h = Harness(define)
    rid = h.start(b"").request_id
    # a redeploy: a new process compiles a different definition of the same flow
    version["n"] = 3
    new = type(h.engine)(
        faasflow.Flow(define, name="testflow"), h.settings, h.engine.backends, name="testflow"
    )
    item = h.invoker.queue.popleft()
    new.forward(item.body)
    record = h.engine.record(rid)
    assert record.status == "failure"
    assert "definition of flow 'testflow' changed" in record.error


def test_deadline_fails_a_request_that_runs_past_it() -> None:
    h = Harness(_chain_of(3))
    rid = h.start(b"", timeout=0.001).request_id
    threading.Event().wait(0.01)
    h.drain()
    record = h.engine.record(rid)
    assert record.status == "failure"
    assert "deadline" in record.error


def test_records_are_listed_and_forgotten_after_retention() -> None:
    h = Harness(_chain_of(2), settings=Settings(hmac_secret=b"k", record_retention=0))
    rid = h.start(b"").request_id
    assert [r.request_id for r in h.engine.requests()] == [rid]
    assert h.engine.requests()[0].status == "running"
    h.drain()
    assert h.engine.record(rid).status == "success"
    assert h.engine.sweep(now=10**12) == 1
    assert h.engine.record(rid) is None
    assert h.engine.requests() == []


def test_sweep_fails_a_stalled_request_past_its_deadline() -> None:
    h = Harness(_chain_of(3))
    rid = h.start(b"", timeout=5).request_id
    h.invoker.queue.clear()  # the next iteration was lost
    assert h.engine.sweep(now=10**12) == 1
    record = h.engine.record(rid)
    assert record.status == "failure"
    h.assert_clean(rid)


def test_wait_returns_none_while_running_and_the_record_after() -> None:
    h = Harness(_chain_of(2))
    rid = h.start(b"v").request_id
    assert h.engine.wait(rid, timeout=0.01) is None
    h.drain()
    assert h.engine.wait(rid, timeout=1).output == b"v"


def test_wait_for_unknown_request_is_an_error() -> None:
    h = Harness(_chain_of(2))
    with pytest.raises(faasflow.RequestNotFound):
        h.engine.wait("nope", timeout=0.1)
