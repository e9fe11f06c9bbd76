"""End to end on real backends: the engine's flow scenarios through the local gateway
(``faasflow up`` with several worker processes), driven over HTTP, with the backends chosen by
configuration alone:

- ``etcd+minio``: ``FAASFLOW_STATE_STORE=etcd FAASFLOW_DATA_STORE=minio`` on the etcd and the S3
  server (Ceph radosgw) of ``.ci/services``, set in the gateway's environment;
- ``consul-standin+minio``: ``FAASFLOW_STATE_STORE=consul`` on the Consul KV **stand-in** of
  plugins/faasflow_consul/tests (not a real Consul agent), with the same S3 data store, set in
  each flow's ``environment:`` in stack.yml.

``FAASFLOW_INLINE_LIMIT=0`` sends every edge's data through the bucket. Every scenario checks
the outputs, that the request's record reached both servers, and that no key of the request is
left in the state store or the bucket afterwards.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_backends import CONFIGS, Deployment, deployment, wait_for
from e2e_flows import FAILING_WIDTH, FAN_IN_WIDTH, HELD_BRANCHES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=CONFIGS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Deployment]:
    """One gateway per backend configuration, shared by the module's scenarios."""
    yield from deployment(request.param, tmp_path_factory.mktemp("e2e"))


def new_id(scenario: str) -> str:
    return f"{scenario}-{uuid.uuid4().hex[:12]}"


def test_chain_of_five_nodes_with_function_calls(stack: Deployment) -> None:
    rid = new_id("chain")
    answer = stack.run("chain", b"abc", rid)
    assert (answer.status_code, answer.text) == (200, "2-CBA-4-5"), stack.gateway.text[-2000:]
    stack.settle()
    record = stack.record("chain", rid)
    assert record["status"] == "success"
    assert len(record["nodes"]) == 5
    assert stack.names(rid) == ["chain-end"]
    stack.assert_clean_and_recorded("chain", rid)


def test_fan_in_joins_exactly_once_when_branches_complete_together(stack: Deployment) -> None:
    pids: set[int] = set()
    for round_ in range(3):
        rid = new_id(f"fanin{round_}")
        answer = stack.run("fanin", b"x", rid)
        expected = ",".join(f"x!{i}" for i in range(FAN_IN_WIDTH))
        assert (answer.status_code, answer.text) == (200, expected), stack.gateway.text[-2000:]
        stack.settle()
        names = Counter(stack.names(rid))
        # the branches passed a barrier together, so their completions raced on the counter
        assert names == {"branch": FAN_IN_WIDTH, "aggregate": 1, "join": 1, "finally": 1}
        stack.assert_clean_and_recorded("fanin", rid)
        pids |= {pid for event, pid, _ in stack.events(rid) if event == "branch"}
    assert len(pids) >= 2  # the racing completions came from different worker processes


def test_nested_foreach_five_by_five_aggregates_at_both_levels(stack: Deployment) -> None:
    rid = new_id("nested")
    answer = stack.run("nested", b"abcde|12345", rid)
    expected = "|".join("".join(f"{c.upper()}{d}" for d in "12345") for c in "abcde")
    assert (answer.status_code, answer.text) == (200, expected), stack.gateway.text[-2000:]
    stack.settle()
    events = stack.events(rid)
    leaves = [extra[0] for event, _, extra in events if event == "leaf"]
    assert sorted(leaves) == sorted(f"{c}{d}" for c in "abcde" for d in "12345")
    inner = [tuple(extra[0]) for event, _, extra in events if event == "inner"]
    assert sorted(inner) == [tuple("12345")] * 5
    assert [extra[0] for event, _, extra in events if event == "outer"] == [list("abcde")]
    # the 25 leaves were iterations handed between the gateway's worker processes
    assert len({pid for event, pid, _ in events if event == "leaf"}) >= 2
    stack.assert_clean_and_recorded("nested", rid)


def start_held(stack: Deployment, scenario: str) -> str:
    """Start the ``held`` flow; return its id once its ``hold`` node waits at the gate."""
    rid = new_id(scenario)
    stack.begin("held", b"x", rid)
    wait_for(lambda: "hold-entered" in stack.names(rid), f"{rid} to reach its gate")
    return rid


def test_pause_holds_iterations_and_resume_runs_each_exactly_once(stack: Deployment) -> None:
    rid = start_held(stack, "pause")
    answer = stack.control("held", rid, "pause")
    assert answer.status_code == 200, answer.text
    assert stack.state("held", rid) == "PAUSED"
    stack.open_gate(rid)
    # the hold node finishes; the three iterations it hands on are held in the stores
    stack.wait_held("held", rid, 3)
    stack.settle()
    assert len((stack.request_state("held", rid) or {})["parked"]) == 3
    assert "branch" not in stack.names(rid)
    assert stack.record("held", rid)["status"] == "paused"
    held = [key for key in stack.data_objects("held", rid) if "/parked--" in key]
    assert len(held) == 3, stack.data_objects("held", rid)  # the messages are in the bucket

    answer = stack.control("held", rid, "resume")
    assert answer.status_code == 200, answer.text
    record = stack.finished("held", rid)
    assert (record["status"], record["output"]) == ("success", "xaxbxc")
    stack.settle()
    events = stack.events(rid)
    assert sorted(extra[0] for event, _, extra in events if event == "branch") == sorted(
        HELD_BRANCHES
    )
    assert Counter(stack.names(rid)) == {
        "hold-entered": 1, "hold-left": 1, "branch": 3, "end": 1, "finally": 1,
    }
    stack.assert_clean_and_recorded("held", rid)


def test_resume_racing_arriving_iterations_runs_each_exactly_once(stack: Deployment) -> None:
    for round_ in range(3):
        rid = start_held(stack, f"race{round_}")
        assert stack.control("held", rid, "pause").status_code == 200
        stack.open_gate(rid)
        # resume as soon as the first hand-off is held: the others arrive around the resume
        stack.wait_held("held", rid, 1)
        answer = stack.control("held", rid, "resume")
        assert answer.status_code == 200, answer.text
        record = stack.finished("held", rid)
        assert (record["status"], record["output"]) == ("success", "xaxbxc")
        stack.settle()
        assert Counter(stack.names(rid)) == {
            "hold-entered": 1, "hold-left": 1, "branch": 3, "end": 1, "finally": 1,
        }
        stack.assert_clean_and_recorded("held", rid)


def test_stop_runs_no_hooks_refuses_later_iterations_and_removes_state(
    stack: Deployment,
) -> None:
    rid = start_held(stack, "stop")
    answer = stack.control("held", rid, "stop")
    assert answer.status_code == 200, answer.text
    stack.open_gate(rid)  # the running node finishes; what it hands on is refused
    stack.settle()
    assert stack.names(rid) == ["hold-entered", "hold-left"]  # no branch, no hook
    assert stack.record("held", rid)["status"] == "stopped"
    stack.assert_clean_and_recorded("held", rid)


def test_stop_of_a_paused_request_drops_its_held_iterations(stack: Deployment) -> None:
    rid = start_held(stack, "pausestop")
    assert stack.control("held", rid, "pause").status_code == 200
    stack.open_gate(rid)
    stack.wait_held("held", rid, 3)
    stack.settle()
    answer = stack.control("held", rid, "stop")
    assert answer.status_code == 200, answer.text
    stack.settle()
    assert stack.record("held", rid)["status"] == "stopped"
    assert stack.names(rid) == ["hold-entered", "hold-left"]
    refused = stack.control("held", rid, "resume")
    # 404 today (the request-state is gone), where stopping it again answers 409: either way
    # a refusal naming the request
    assert 400 <= refused.status_code < 500, refused.text
    assert rid in refused.text
    stack.settle()
    assert stack.names(rid) == ["hold-entered", "hold-left"]  # nothing held was delivered
    stack.assert_clean_and_recorded("held", rid)


def test_twelve_concurrent_requests_stay_isolated(stack: Deployment) -> None:
    inputs = {new_id(f"mix{i}"): f"in{i:02d}".encode() for i in range(12)}

    def run(item: tuple[str, bytes]) -> tuple[int, str]:
        answer = stack.run("mix", item[1], item[0])
        return answer.status_code, answer.text

    with ThreadPoolExecutor(len(inputs)) as pool:
        results = dict(zip(inputs, pool.map(run, inputs.items())))
    for rid, body in inputs.items():
        text = body.decode()
        assert results[rid] == (200, f"{text.upper()}<|{text.upper()[::-1]}|{text}"), rid
    stack.settle()
    for rid in inputs:
        assert stack.record("mix", rid)["status"] == "success"
        stack.assert_clean_and_recorded("mix", rid)


def test_branches_failing_together_run_the_failure_hooks_once(stack: Deployment) -> None:
    rid = new_id("failing")
    answer = stack.run("failing", b"x", rid)
    assert answer.status_code == 500
    assert "failed on purpose" in answer.text
    stack.settle()
    names = Counter(stack.names(rid))
    assert names == {"exploding": FAILING_WIDTH, "on_failure": 1, "finally": 1}
    assert [e for e in stack.events(rid) if e[0] == "finally"][0][2] == ["failure"]
    record = stack.record("failing", rid)
    assert record["status"] == "failure"
    assert "failed on purpose" in record["error"]
    assert any(f"_f{i}" in record["error"] for i in range(FAILING_WIDTH)), record["error"]
    stack.assert_clean_and_recorded("failing", rid)
