"""Faults between the steps of an iteration: every one converges, nothing runs twice.

Each test breaks one step for real (a store call that raises, a gateway that refuses, a message
delivered again) and checks the request still ends once, with the right output, and that no
done node's work ran again."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable

import attrs
import pytest
from engine_harness import Harness

from faasflow.errors import BackendError, RequestIdInUse, RequestNotActive
from faasflow.interfaces import StateStore
from faasflow.operations import Retry
from faasflow.settings import Settings

NO_RETRY = Settings(hmac_secret=b"test-key", backend_retry=0.0)


def chain(calls: collections.Counter[str]):
    def define(flow, context):
        dag = flow.dag()
        for name in ("n1", "n2", "n3"):
            dag.node(name).modify(lambda d, name=name: (calls.update([name]), d + name.encode())[1])
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")

    return define


def fan_in(calls: collections.Counter[str]):
    def count(name: str) -> Callable[[bytes], bytes]:
        return lambda d: (calls.update([name]), d + name.encode())[1]

    def define(flow, context):
        dag = flow.dag()
        dag.node("s").modify(count("s"))
        dag.node("a").modify(count("a"))
        dag.node("b").modify(count("b"))
        dag.node("j", aggregator=lambda r: (calls.update(["agg"]), r["a"] + b"+" + r["b"])[1])
        dag.edge("s", "a")
        dag.edge("s", "b")
        dag.edge("a", "j")
        dag.edge("b", "j")

    return define


class _FailOnce(StateStore):
    """A StateStore handle that raises BackendError on the first call matching ``when``."""

    def __init__(self, inner: StateStore, when: Callable[[str, str], bool], fired: list[str]):
        self.inner, self.when, self.fired = inner, when, fired
        self.atomic_transactions = inner.atomic_transactions  # type: ignore[misc]
        self.configure(inner.flow_name, inner.request_id)

    def scoped(self, flow_name: str, request_id: str) -> _FailOnce:
        return _FailOnce(self.inner.scoped(flow_name, request_id), self.when, self.fired)

    def _check(self, method: str, key: str) -> None:
        if not self.fired and self.when(method, key):
            self.fired.append(f"{method} {key}")
            raise BackendError("test store", method, key, "injected")

    def set(self, key: str, value: str) -> None:
        self._check("set", key)
        self.inner.set(key, value)

    def get(self, key: str) -> str:
        self._check("get", key)
        return self.inner.get(key)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        self._check("update", key)
        self.inner.update(key, old_value, new_value)

    def create(self, key: str, value: str) -> bool:
        self._check("create", key)
        return self.inner.create(key, value)

    def delete(self, key: str) -> None:
        self._check("delete", key)
        self.inner.delete(key)

    def scan(self, prefix: str = "") -> dict[str, str]:
        self._check("scan", prefix)
        return self.inner.scan(prefix)

    def cleanup(self) -> None:
        self._check("cleanup", "")
        self.inner.cleanup()

    def transaction(self, compare, put={}, delete=()):  # noqa: B006 - read only
        for key in (*compare, *put):
            self._check("transaction", key)
        return self.inner.transaction(compare, put, delete)


def failing_once(h: Harness, when: Callable[[str, str], bool]) -> list[str]:
    fired: list[str] = []
    store = _FailOnce(h.states, when, fired)
    h.engine.core.state_store = store
    return fired


def test_a_replayed_iteration_of_a_done_node_runs_nothing_again() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    rid = h.start(b"").request_id
    to_n2 = h.invoker.queue.popleft()
    h.deliver(to_n2)
    for _ in range(5):  # the same message again, while the request still runs
        assert h.engine.forward(to_n2.body, to_n2.headers) == "duplicate"
    h.drain()
    assert calls == {"n1": 1, "n2": 1, "n3": 1}
    assert [f.message.node for f in h.invoker.forwards] == ["0_2_n2", "0_3_n3"]
    assert h.engine.record(rid).output == b"n1n2n3"
    h.assert_clean(rid)


def test_a_fan_in_arrival_that_failed_after_done_converges_on_redelivery() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(fan_in(calls), settings=NO_RETRY)
    rid = h.start(b"x").request_id
    fired = failing_once(h, lambda method, key: key.startswith("arrived--"))
    h.drain(redeliver=True)
    assert fired  # the arrival of a or b at j failed once, after that node was done
    record = h.engine.record(rid)
    assert (record.status, record.output) == ("success", b"xsa+xsb")
    assert calls == {"s": 1, "a": 1, "b": 1, "agg": 1}
    h.assert_clean(rid)


@pytest.mark.parametrize("step", ["node--0_2_n2", "arrived--", "request-state"])
def test_a_failure_at_any_coordination_step_runs_each_function_once(step: str) -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls), settings=NO_RETRY)
    rid = h.start(b"").request_id
    fired = failing_once(h, lambda method, key: method != "get" and key.startswith(step))
    h.drain(redeliver=True)
    record = h.engine.record(rid)
    assert (record.status, record.output) == ("success", b"n1n2n3")
    if step != "arrived--":  # a chain has no fan-in: nothing to fail there
        assert fired
    # a failure after n2's operations but before its done marker may run it again (at least
    # once); any failure after the marker does not
    assert calls["n1"] == 1 and calls["n3"] == 1 and calls["n2"] <= 2
    h.assert_clean(rid)


def test_a_store_blip_is_retried_inside_the_iteration_without_redelivery() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(fan_in(calls))  # the default: backend calls retried for a few seconds
    rid = h.start(b"x").request_id
    fired = failing_once(h, lambda method, key: key.startswith("arrived--"))
    h.drain()  # would raise if the blip reached the queue
    assert fired
    assert h.engine.record(rid).status == "success"
    assert calls["a"] == calls["b"] == calls["agg"] == 1


def test_a_duplicate_from_another_delivery_is_dropped_while_the_first_holds_the_node() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    rid = h.start(b"").request_id
    to_n2 = h.invoker.queue.popleft()
    states = h.states.scoped(h.engine.name, rid)
    claim = {"p": "claimed", "token": "other-delivery", "until": time.time() + 60,
             "start": time.time(), "att": 1}
    assert states.create("node--0_2_n2", json.dumps(claim))
    assert h.engine.forward(to_n2.body, to_n2.headers) == "duplicate"
    assert calls["n2"] == 0


def test_a_redelivery_with_the_same_call_id_takes_over_a_crashed_claim() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    rid = h.start(b"").request_id
    to_n2 = h.invoker.queue.popleft()
    states = h.states.scoped(h.engine.name, rid)
    crashed = {"p": "claimed", "token": to_n2.headers["X-Call-Id"], "until": time.time() + 60,
               "start": time.time(), "att": 1}
    assert states.create("node--0_2_n2", json.dumps(crashed))
    retried = {**to_n2.headers, "X-Faas-Flow-Attempt": "2"}
    assert h.engine.forward(to_n2.body, retried) == "ran"
    h.drain()
    record = h.engine.record(rid)
    assert record.status == "success"
    assert record.nodes["0_2_n2"].deliveries == 2  # the gateway's attempt is in the record


def test_an_expired_claim_of_another_delivery_is_taken_over() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    rid = h.start(b"").request_id
    to_n2 = h.invoker.queue.popleft()
    states = h.states.scoped(h.engine.name, rid)
    stale = {"p": "claimed", "token": "dead-worker", "until": time.time() - 1,
             "start": time.time() - 400, "att": 1}
    assert states.create("node--0_2_n2", json.dumps(stale))
    assert h.engine.forward(to_n2.body, to_n2.headers) == "ran"
    h.drain()
    assert h.engine.record(rid).status == "success"


def test_a_duplicated_queue_ends_each_request_once_with_one_aggregation() -> None:
    calls: collections.Counter[str] = collections.Counter()
    finals: list[str] = []

    def define(flow, context):
        fan_in(calls)(flow, context)
        flow.finally_(finals.append)

    h = Harness(define)
    h.invoker.duplicate = True
    rid = h.start(b"x").request_id
    h.drain(redeliver=True)
    assert calls == {"s": 1, "a": 1, "b": 1, "agg": 1}
    assert finals == ["success"]
    assert h.engine.record(rid).output == b"xsa+xsb"
    assert "duplicate" in h.outcomes or "refused" in h.outcomes


def test_start_delivered_twice_with_one_call_id_is_one_request() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    first = h.start(b"in", headers={"X-Call-Id": "call-1"})
    again = h.start(b"in", headers={"X-Call-Id": "call-1"})
    assert again.request_id == first.request_id
    assert again.status == "running"
    h.drain()
    assert calls == {"n1": 1, "n2": 1, "n3": 1}
    assert len(h.engine.requests()) == 1
    ended = h.start(b"in", headers={"X-Call-Id": "call-1"})  # after the end: the same answer
    assert (ended.request_id, ended.status, ended.output) == (
        first.request_id, "success", b"inn1n2n3"
    )
    assert len(h.engine.requests()) == 1


def test_a_client_id_with_the_same_body_is_one_request_with_another_body_a_conflict() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    h.start(b"same", request_id="order-7")
    assert h.start(b"same", request_id="order-7").request_id == "order-7"
    with pytest.raises(RequestIdInUse):
        h.start(b"other", request_id="order-7")
    h.drain()
    assert calls["n1"] == 1


def test_branch_keys_containing_the_separator_never_collide() -> None:
    seen: list[bytes] = []

    def define(flow, context):
        dag = flow.dag()
        outer = dag.foreach_branch(
            "O", lambda d: {"x": b"x", "z--x": b"zx"},
            aggregator=lambda r: b"|".join(k.encode() + b"=" + r[k] for k in sorted(r)),
        )
        inner = outer.foreach_branch(
            "I", lambda d: {"y--z": d} if d == b"x" else {"y": d},
            aggregator=lambda r: b",".join(k.encode() + b":" + v for k, v in sorted(r.items())),
        )
        inner.node("leaf").modify(lambda d: (seen.append(d), d + b"!")[1])
        dag.node("end")
        dag.edge("O", "end")

    h = Harness(define)
    rid = h.start(b"").request_id
    h.drain()
    record = h.engine.record(rid)
    # without encoding both leaves would be "y--z--x--<leaf>" and the request would hang
    assert (record.status, record.output) == ("success", b"x=y--z:x!|z--x=y:zx!")
    assert sorted(seen) == [b"x", b"zx"]
    h.assert_clean(rid)


def test_resume_whose_forward_fails_keeps_the_held_iteration_for_the_sweep() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls), settings=NO_RETRY)
    rid = h.start(b"").request_id
    h.engine.pause(rid)
    h.drain()  # n2 arrives while paused and is held
    assert h.engine.record(rid).status == "paused"

    def refuse(_: object) -> bool:
        raise BackendError("gateway", "forward", "/async-function", "503")

    h.invoker.fail_forward = refuse
    with pytest.raises(BackendError):
        h.engine.resume(rid)
    h.invoker.fail_forward = None
    assert h.engine.state(rid) == "RUNNING"
    assert h.engine.sweep() == 1  # forwards what the resume could not
    h.drain()
    assert h.engine.record(rid).status == "success"
    assert calls == {"n1": 1, "n2": 1, "n3": 1}
    h.assert_clean(rid)


def test_an_end_that_failed_after_the_decision_is_finished_by_the_sweep() -> None:
    calls: collections.Counter[str] = collections.Counter()
    finals: list[str] = []

    def define(flow, context):
        chain(calls)(flow, context)
        flow.finally_(finals.append)

    h = Harness(define, settings=NO_RETRY)
    rid = h.start(b"").request_id
    h.drain(limit=1)
    failing_once(h, lambda method, key: method == "cleanup")
    with pytest.raises(BackendError):
        h.drain()
    assert h.engine.state(rid) == "FINISHED"  # the tombstone decides, before the record
    assert finals == ["success"]
    with pytest.raises(RequestNotActive):  # a new iteration is refused
        h.engine.forward(h.invoker.forwards[-1].body, {"X-Call-Id": "late"})
    assert h.engine.sweep() == 1
    record = h.engine.record(rid)
    assert (record.status, record.output) == ("success", b"n1n2n3")
    assert finals == ["success"]  # hooks ran once, in the ender
    h.assert_clean(rid)


def test_the_redelivered_ender_finishes_its_own_half_ended_request() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls), settings=NO_RETRY)
    rid = h.start(b"").request_id
    failing_once(h, lambda method, key: method == "cleanup")
    h.drain(redeliver=True)
    assert h.outcomes[-1] == "refused"
    assert h.engine.record(rid).status == "success"
    h.assert_clean(rid)


def test_stop_leaves_a_tombstone_that_refuses_later_iterations() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    rid = h.start(b"").request_id
    h.engine.stop(rid)
    assert h.engine.state(rid) == "FINISHED"
    with pytest.raises(RequestNotActive):
        h.drain()
    assert calls == {"n1": 1}
    assert h.engine.record(rid).status == "stopped"
    h.assert_clean(rid)


def test_requests_get_a_deadline_of_an_hour_by_default() -> None:
    h = Harness(chain(collections.Counter()))
    before = time.time()
    h.start(b"")
    deadline = h.invoker.forwards[0].message.deadline
    assert deadline is not None and before + 3590 < deadline < time.time() + 3610


def test_the_sweep_fails_a_request_past_its_deadline() -> None:
    h = Harness(chain(collections.Counter()))
    rid = h.start(b"", timeout=0.01).request_id
    time.sleep(0.02)
    assert h.engine.sweep() == 1
    record = h.engine.record(rid)
    assert record.status == "failure" and "deadline" in (record.error or "")


def test_one_replica_sweeps_at_a_time_behind_the_lease() -> None:
    settings = Settings(hmac_secret=b"test-key", sweep_interval=30.0)
    h = Harness(chain(collections.Counter()), settings=settings)
    records = h.engine.records
    now = time.time()
    assert records.lease("sweep", "replica-1", 30.0, now)
    assert not records.lease("sweep", "replica-2", 30.0, now + 1)
    assert records.lease("sweep", "replica-2", 30.0, now + 31)  # the first one's ran out


def test_a_flaky_gateway_502_is_retried_by_default_and_off_with_retry_never() -> None:
    answers = collections.deque([502, 200])

    def flaky(data: bytes):
        from faasflow.interfaces import Response

        return Response(answers.popleft(), b"ok")

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").apply("flaky")
        dag.node("n2").apply("flaky", retry=Retry.never())
        dag.edge("n1", "n2")

    h = Harness(define, functions={"flaky": flaky})
    rid = h.start(b"").request_id
    assert h.engine.record(rid).nodes["0_1_n1"].attempts == 2
    answers.extend([502, 200])
    h.drain()
    record = h.engine.record(rid)
    assert record.status == "failure" and "502" in (record.error or "")


def test_in_process_iterations_are_retried_then_fail_the_request_naming_node_and_cause() -> None:
    from faasflow import Flow
    from faasflow.default_plugins.memory import MemoryStateStore
    from faasflow.engine import Backends, Engine

    calls: collections.Counter[str] = collections.Counter()
    settings = Settings(hmac_secret=b"k", backend_retry=0.0, iteration_attempts=3)
    engine = Engine(
        Flow(chain(calls), name="retried"), settings,
        Backends(MemoryStateStore(), *_rest(settings)),
    )
    engine.core.state_store = _Breaks(engine.core.state_store, "node--0_2_n2")
    try:
        rid = engine.start(b"").request_id
        record = engine.wait(rid, 10)
    finally:
        engine.close()
    assert record is not None and record.status == "failure"
    assert "Node(0_2_n2)" in (record.error or "") and "3 times" in (record.error or "")
    assert "broken" in (record.error or "")
    assert calls["n3"] == 0


def _rest(settings: Settings):
    from faasflow.backends import Kind
    from faasflow.plugins import Registry

    registry = Registry.from_settings(settings)
    return (
        registry.create(Kind.DATA_STORE, settings, "memory"),
        registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    )


@attrs.define
class _Breaks(StateStore):
    """Every call on keys starting with ``prefix`` fails: a store that stays broken."""

    inner: StateStore
    prefix: str

    def scoped(self, flow_name: str, request_id: str) -> _Breaks:
        handle = _Breaks(self.inner.scoped(flow_name, request_id), self.prefix)
        handle.configure(flow_name, request_id)
        return handle

    def _check(self, key: str) -> None:
        if key.startswith(self.prefix):
            raise BackendError("test store", "call", key, "broken")

    def set(self, key: str, value: str) -> None:
        self._check(key)
        self.inner.set(key, value)

    def get(self, key: str) -> str:
        self._check(key)
        return self.inner.get(key)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        self._check(key)
        self.inner.update(key, old_value, new_value)

    def create(self, key: str, value: str) -> bool:
        self._check(key)
        return self.inner.create(key, value)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def scan(self, prefix: str = "") -> dict[str, str]:
        return self.inner.scan(prefix)

    def cleanup(self) -> None:
        self.inner.cleanup()


def test_without_atomic_transactions_sets_are_compare_and_swapped_lists() -> None:
    from faasflow.default_plugins.memory import MemoryStateStore

    class SingleKeyOnly(MemoryStateStore):
        atomic_transactions = False

    calls: collections.Counter[str] = collections.Counter()
    h = Harness(fan_in(calls), settings=NO_RETRY)
    h.states = SingleKeyOnly()
    h.engine.core.state_store = h.states
    h.invoker.duplicate = True
    rid = h.start(b"x").request_id
    fired = failing_once(h, lambda method, key: method == "update" and key.startswith("arrived--"))
    h.drain(redeliver=True)
    assert fired
    assert h.engine.record(rid).output == b"xsa+xsb"
    assert calls == {"s": 1, "a": 1, "b": 1, "agg": 1}
    assert "arrived--0_4_j" not in h.state_keys(rid)
    h.assert_clean(rid)


def test_a_fan_in_aggregator_is_not_run_again_when_its_node_is_taken_over() -> None:
    calls: collections.Counter[str] = collections.Counter()
    h = Harness(_fan_in_with_counted_join(calls), settings=NO_RETRY)
    rid = h.start(b"x").request_id
    # j's attempt dies after its aggregator and its function, before its done marker
    fired = failing_once(h, lambda method, key: method == "update" and key == "node--0_4_j"
                         and calls["j"] == 1)
    h.drain(redeliver=True)
    assert fired
    assert h.engine.record(rid).output == b"xsa+xsbj"
    assert calls["agg"] == 1  # kept in j's claim: the takeover reused it
    assert calls["j"] == 2  # j's own function: at least once
    h.assert_clean(rid)


def _fan_in_with_counted_join(calls: collections.Counter[str]):
    def define(flow, context):
        dag = flow.dag()
        for name in ("s", "a", "b"):
            dag.node(name).modify(lambda d, name=name: (calls.update([name]), d + name.encode())[1])
        dag.node(
            "j", aggregator=lambda r: (calls.update(["agg"]), r["a"] + b"+" + r["b"])[1]
        ).modify(lambda d: (calls.update(["j"]), d + b"j")[1])
        dag.edge("s", "a")
        dag.edge("s", "b")
        dag.edge("a", "j")
        dag.edge("b", "j")

    return define
