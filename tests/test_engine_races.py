"""Races run for real: concurrent fan-in completions, duplicate deliveries, and control actions
racing running nodes, on threads and on several processes sharing sqlite stores."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
import race_flows
from engine_harness import Harness

from faasflow.errors import RequestNotActive


def fan_in(counter: list[str]):
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.node("n2").modify(lambda d: d + b"2")
        dag.node("n3").modify(lambda d: d + b"3")
        dag.node("n4", aggregator=lambda d: d["n2"] + d["n3"]).modify(
            lambda d: (counter.append(d.decode()), d)[1]
        )
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")
        dag.edge("n2", "n4")
        dag.edge("n3", "n4")

    return define


def deliver_together(h: Harness, items, allowed: tuple[type[BaseException], ...] = ()) -> None:
    barrier = threading.Barrier(len(items))
    errors: list[BaseException] = []

    def go(item) -> None:
        barrier.wait()
        try:
            h.deliver(item)
        except allowed:
            pass
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_concurrent_fan_in_completions_run_the_join_exactly_once(
    store, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runs: list[str] = []
    h = Harness(fan_in(runs), state_store=store, data_store=store)
    for i in range(50):
        rid = h.start(f"{i}".encode()).request_id
        to_n2, to_n3 = h.invoker.queue
        h.invoker.queue.clear()
        deliver_together(h, [to_n2, to_n3])
        h.drain()
        assert runs.count(f"{i}2{i}3") == 1, runs
        assert h.engine.record(rid).status == "success"
    assert len(runs) == 50


def test_duplicate_deliveries_do_not_run_successors_twice() -> None:
    runs: list[str] = []
    finals: list[str] = []

    def define(flow, context):
        fan_in(runs)(flow, context)
        flow.finally_(finals.append)

    h = Harness(define)
    rid = h.start(b"x").request_id
    while h.invoker.queue:
        item = h.invoker.queue.popleft()
        # the same message twice, at the same instant; a copy arriving after the end is refused
        deliver_together(h, [item, item], allowed=(RequestNotActive,))
    # n1 handed n2 and n3 on once each. Two copies with one call id are indistinguishable
    # from a redelivery of a crashed attempt, so the second copy of n2 (or n3) may re-do the
    # hand-on and forward n4 again: that copy of n4 is a duplicate, the request ends once
    forwarded = [f.message.node for f in h.invoker.forwards]
    assert forwarded[:2] == ["0_2_n2", "0_3_n3"]
    assert set(forwarded[2:]) == {"0_4_n4"}
    assert set(runs) == {"x2x3"}  # a duplicate may run n4's operation again, never its end
    assert finals == ["success"]
    assert h.engine.record(rid).status == "success"
    h.assert_clean(rid)


def test_stop_racing_parallel_branches_leaves_no_state_and_runs_no_hooks() -> None:
    events: list[str] = []
    for _ in range(20):
        runs: list[str] = []

        def define(flow, context, runs=runs):
            fan_in(runs)(flow, context)
            flow.on_failure(lambda e: events.append("F"))
            flow.finally_(lambda s: events.append(s))

        h = Harness(define)
        rid = h.start(b"x").request_id
        items = list(h.invoker.queue)
        h.invoker.queue.clear()
        barrier = threading.Barrier(len(items) + 1)

        def stop() -> None:
            barrier.wait()
            h.engine.stop(rid)

        def go(item) -> None:
            barrier.wait()
            try:
                h.deliver(item)
            except Exception:  # noqa: BLE001 - refused after the stop: expected
                pass

        threads = [threading.Thread(target=stop)] + [
            threading.Thread(target=go, args=(i,)) for i in items
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        try:
            h.drain()
        except Exception:  # noqa: BLE001 - refused after the stop: expected
            pass
        h.assert_clean(rid)
        assert h.engine.record(rid).status == "stopped"
    assert events == []


def run_in_processes(
    kind: str, data: bytes, tmp_path, *, workers: int = 3, duplicate: bool = False
) -> tuple[str, list[str]]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    log_path = str(tmp_path / "journal.log")
    procs = [
        ctx.Process(
            target=race_flows.worker, args=(kind, str(tmp_path), log_path, queue, duplicate)
        )
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        engine = race_flows.make_engine(kind, str(tmp_path), log_path, queue, duplicate)
        rid = engine.start(data).request_id
        record = engine.wait(rid, timeout=60)
        assert record is not None, "request did not finish in 60 s"
        assert record.status == "success", record.error
    finally:
        for _ in procs:
            queue.put(None)
        for p in procs:
            p.join(30)
    with open(log_path) as f:
        return rid, f.read().splitlines()


@pytest.mark.slow
def test_fan_in_across_processes_joins_exactly_once(tmp_path) -> None:
    _, lines = run_in_processes("fan_in", b"x", tmp_path, workers=3)
    joins = [line for line in lines if line.startswith("join")]
    assert len(joins) == 1
    assert lines.count("finally success") == 1
    assert joins[0].endswith("xaxbxcxd")


@pytest.mark.slow
def test_foreach_across_processes_with_duplicate_deliveries(tmp_path) -> None:
    _, lines = run_in_processes("foreach", b"20", tmp_path, workers=3, duplicate=True)
    ends = {line for line in lines if line.startswith("end")}
    assert ends == {f"end {sum(i * 10 for i in range(20))}"}
    assert lines.count("finally success") == 1
    branches = {line for line in lines if line.startswith("x ")}
    assert branches == {f"x {i}" for i in range(20)}
