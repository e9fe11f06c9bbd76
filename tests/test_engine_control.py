"""Pause, resume, stop and state (faasflow-behaviour.md §5 scenarios 24-26, fixed semantics)."""

from __future__ import annotations

import threading

import pytest
from engine_harness import Harness

from faasflow.errors import RequestNotActive, RequestNotFound


def chain(ran: list[str], gate: threading.Event | None = None):
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: (ran.append("n1"), d)[1])

        def n2(d: bytes) -> bytes:
            ran.append("n2")
            if gate is not None:
                gate.wait(10)
            return d

        dag.node("n2").modify(n2).modify(lambda d: (ran.append("n2b"), d)[1])
        dag.node("n3").modify(lambda d: (ran.append("n3"), d)[1])
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")

    return define


def test_pause_holds_the_next_iteration_until_resume_runs_it_once() -> None:
    ran: list[str] = []
    h = Harness(chain(ran))
    rid = h.start(b"").request_id
    h.engine.pause(rid)
    assert h.engine.state(rid) == "PAUSED"
    assert h.engine.record(rid).status == "paused"
    h.drain()  # n2's iteration arrives while paused: it is held, not run
    assert ran == ["n1"]
    assert h.invoker.queue == type(h.invoker.queue)()
    h.engine.resume(rid)
    assert h.engine.state(rid) == "RUNNING"
    h.drain()
    assert ran == ["n1", "n2", "n2b", "n3"]
    with pytest.raises(RequestNotActive, match="success"):
        h.engine.resume(rid)  # the request ended: nothing to resume, nothing re-run
    h.drain()
    assert ran.count("n3") == 1
    h.assert_clean(rid)


def test_pause_during_a_running_node_lets_it_finish_then_holds_its_successor() -> None:
    ran: list[str] = []
    gate = threading.Event()
    h = Harness(chain(ran, gate))
    rid = h.start(b"").request_id
    (to_n2,) = h.invoker.queue
    h.invoker.queue.clear()
    worker = threading.Thread(target=h.deliver, args=(to_n2,))
    worker.start()
    while "n2" not in ran:
        threading.Event().wait(0.001)
    h.engine.pause(rid)
    gate.set()
    worker.join(10)
    h.drain()
    assert ran == ["n1", "n2", "n2b"]
    h.engine.resume(rid)
    h.drain()
    assert ran == ["n1", "n2", "n2b", "n3"]


def test_pause_of_unknown_or_paused_request_names_the_id() -> None:
    ran: list[str] = []
    h = Harness(chain(ran))
    with pytest.raises(RequestNotFound, match="failed to pause request unknown"):
        h.engine.pause("unknown")
    rid = h.start(b"").request_id
    h.engine.pause(rid)
    with pytest.raises(RequestNotActive, match=rid):
        h.engine.pause(rid)
    h.engine.resume(rid)
    with pytest.raises(RequestNotActive, match="resume"):
        h.engine.resume(rid)


def test_stop_ends_the_request_at_once_without_hooks() -> None:
    ran: list[str] = []
    events: list[str] = []
    gate = threading.Event()

    def define(flow, context):
        chain(ran, gate)(flow, context)
        flow.on_failure(lambda e: events.append("F"))
        flow.finally_(lambda s: events.append(s))

    h = Harness(define)
    rid = h.start(b"").request_id
    (to_n2,) = h.invoker.queue
    h.invoker.queue.clear()
    worker = threading.Thread(target=h.deliver, args=(to_n2,))
    worker.start()
    while "n2" not in ran:
        threading.Event().wait(0.001)
    h.engine.stop(rid)
    assert h.engine.state(rid) == "FINISHED"
    gate.set()
    worker.join(10)
    h.drain()
    assert ran == ["n1", "n2"]  # n2's second operation and n3 never ran
    assert events == []
    assert h.engine.record(rid).status == "stopped"
    h.assert_clean(rid)


def test_stop_of_unknown_request_is_an_error_naming_it() -> None:
    h = Harness(chain([]))
    with pytest.raises(RequestNotFound, match="nope"):
        h.engine.stop("nope")


def test_iteration_arriving_after_stop_is_refused_and_leaves_nothing() -> None:
    ran: list[str] = []
    h = Harness(chain(ran))
    rid = h.start(b"").request_id
    h.engine.stop(rid)
    with pytest.raises(RequestNotActive, match="flow is not running"):
        h.drain()
    assert ran == ["n1"]
    h.assert_clean(rid)


def test_resume_is_exactly_once_under_concurrent_resumes() -> None:
    ran: list[str] = []
    h = Harness(chain(ran))
    rid = h.start(b"").request_id
    h.engine.pause(rid)
    h.drain()
    errors: list[BaseException] = []

    def resume() -> None:
        try:
            h.engine.resume(rid)
        except RequestNotActive as exc:
            errors.append(exc)

    threads = [threading.Thread(target=resume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 7
    h.drain()
    assert ran.count("n2") == 1
    assert ran.count("n3") == 1
