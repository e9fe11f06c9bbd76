"""Iterations of one request in separate worker processes still form one trace."""

from __future__ import annotations

from faasflow.testing import LoopbackServer
from faasflow.testing.otlp import OtlpReceiver


def test_iterations_in_three_processes_form_one_waterfall(
    run_in_process, receiver: OtlpReceiver
) -> None:
    job = {"flow": "chain", "request": "proc-1"}
    first = run_in_process({**job, "first": True, "node": "0_1_a"})
    second = run_in_process({**job, "carrier": first["forward"], "node": "0_2_b"})
    run_in_process({**job, "carrier": second["forward"], "node": "0_3_c", "last": True})

    spans = {s.name: s for s in receiver.wait_for(7)}
    assert len(receiver.traces()) == 1
    assert [s.name for s in receiver.spans if s.is_root] == ["chain"]
    assert spans["0_1_a"].parent_id == spans["chain"].span_id
    assert spans["0_2_b"].parent_id == spans["0_1_a"].span_id
    assert spans["0_3_c"].parent_id == spans["0_2_b"].span_id
    for node in ("0_1_a", "0_2_b", "0_3_c"):
        assert spans[node].service_name == "chain"


def test_function_called_from_a_worker_process_receives_the_trace_context(
    run_in_process, receiver: OtlpReceiver
) -> None:
    gateway = LoopbackServer()
    try:
        done = run_in_process({
            "flow": "greet", "request": "proc-2", "first": True, "node": "0_1_a",
            "operations": ["inspect"], "call_url": gateway.url, "last": True,
        })
    finally:
        gateway.close()

    spans = {s.name: s for s in receiver.wait_for(3)}
    traceparent = done["called"]["traceparent"]
    assert traceparent.split("-")[1:3] == [spans["inspect"].trace_id, spans["inspect"].span_id]
    assert spans["inspect"].parent_id == spans["0_1_a"].span_id


def test_failure_in_a_later_process_marks_its_node_and_the_call(
    run_in_process, receiver: OtlpReceiver
) -> None:
    job = {"flow": "chain", "request": "proc-3"}
    first = run_in_process({**job, "first": True, "node": "0_1_a"})
    run_in_process({
        **job, "carrier": first["forward"], "node": "0_2_b", "operations": ["resize"],
        "fail": "resize",
    })

    spans = {s.name: s for s in receiver.wait_for(6)}
    assert len(receiver.traces()) == 1
    assert spans["0_2_b"].status == "error"
    assert spans["resize"].status == "error"
    assert spans["request failure"].status == "error"
    assert spans["request failure"].status_message == "RuntimeError: node 0_2_b failed"
