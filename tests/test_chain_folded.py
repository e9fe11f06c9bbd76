"""A chain's step handed on in this process as a message (``Core.local``) folds its done marker
into its successor's claim: the node's marker moves from its claim straight to handed in the
transaction that claims the next node, so a step is one store commit. Anything else hands on
as before: the done marker is written first (an encoded or queued forward, a fan-in, a
forwarder edge, a dynamic successor, the last node), and a successor that does not take the
move still makes it, before the request's record is written."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from engine_harness import Harness

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.default_plugins.invokers import LocalInvoker
from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.engine import Backends, Engine, delivery, runner
from faasflow.engine.iteration import Handed
from faasflow.engine.message import Message
from faasflow.errors import BackendError
from faasflow.plugins import Registry
from faasflow.settings import Settings


class Phases(MemoryStateStore):
    """Memory state store that notes the phase of every node marker it writes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[str, str]] = []  # shared by every scoped handle

    def _note(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            if key.startswith("node--"):
                self.written.append((key[len("node--"):], json.loads(value)["p"]))

    def create(self, key: str, value: str) -> bool:
        made = super().create(key, value)
        if made:
            self._note({key: value})
        return made

    def update(self, key: str, old_value: str, new_value: str) -> None:
        super().update(key, old_value, new_value)
        self._note({key: new_value})

    def set(self, key: str, value: str) -> None:
        super().set(key, value)
        self._note({key: value})

    def transaction(self, compare: Mapping[str, str | None], put: Mapping[str, str] = {},  # noqa: B006
                    delete: Iterable[str] = ()) -> bool:
        done = super().transaction(compare, put, delete)
        if done:
            self._note(put)
        return done

    def of(self, eid: str) -> list[str]:
        return [phase for key, phase in self.written if key == eid]


def chain(names: Iterable[str], ran: dict[str, int] | None = None, **functions: Any) -> Any:
    """A chain of nodes that append their name; ``functions`` replaces a node's function."""
    order = list(names)
    counts = ran if ran is not None else {}
    lock = threading.Lock()

    def step(name: str) -> Any:
        def fn(data: bytes) -> bytes:
            with lock:
                counts[name] = counts.get(name, 0) + 1
            if name in functions:
                return bytes(functions[name](data))
            return data + name.encode()

        return fn

    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for index, name in enumerate(order):
            dag.node(name).modify(step(name))
            if index:
                dag.edge(order[index - 1], name)

    return define


def local_engine(define: Any, states: Any = None, settings: Settings | None = None,
                 name: str = "folded") -> Engine:
    settings = settings or Settings(environ={"FAASFLOW_LOCAL_WORKERS": "1"})
    registry = Registry.from_settings(settings)
    return Engine(Flow(define, name=name), settings, Backends(
        states if states is not None else MemoryStateStore(), MemoryDataStore(),
        registry.create(Kind.TRACER, settings, "none"), LocalInvoker(workers=1),
    ))


def run(engine: Engine, data: bytes = b">") -> Any:
    try:
        rid = engine.start(data).request_id
        record = engine.wait(rid, 30)
    finally:
        engine.close()
    assert record is not None
    return record


# --- the fold ---------------------------------------------------------------------------------


def test_a_chain_step_handed_on_in_process_moves_from_its_claim_straight_to_handed() -> None:
    states = Phases()
    record = run(local_engine(chain(["a", "b", "c", "d"]), states))
    assert record.status == "success" and record.output == b">abcd"
    for node in ("0_1_a", "0_2_b", "0_3_c"):
        assert states.of(node) == ["claimed", "handed"], node
    assert states.of("0_4_d") == ["claimed", "done"]  # the last node has no successor


def test_an_encoded_hand_on_writes_the_done_marker_before_it_hands_on() -> None:
    h = Harness(chain(["a", "b", "c"]))  # in process, but every message encoded and queued
    states = h.states
    rid = h.start(b">").request_id
    scoped = states.scoped(h.engine.name, rid)
    assert '"p":"done"' in scoped.get("node--0_1_a")  # before b was even delivered
    h.drain()
    assert h.engine.record(rid).output == b">abc"
    h.assert_clean(rid)


def test_an_engine_on_an_invoker_that_leaves_the_process_does_not_fold() -> None:
    h = Harness(chain(["a", "b"]))
    assert h.engine.core.local is None  # handing.chains needs Core.local


def _shape(record: Any) -> tuple[Any, Any]:
    """A record's node runs and states without their times."""
    runs = {
        node: {k: v for k, v in run.to_json().items() if k not in ("start", "end", "duration_ms")}
        for node, run in record.nodes.items()
    }
    return runs, dict(record.states)


def test_the_record_of_a_folded_chain_is_that_of_an_encoded_one() -> None:
    folded = run(local_engine(chain(["a", "b", "c", "d"])))
    h = Harness(chain(["a", "b", "c", "d"]))
    rid = h.start(b">").request_id
    h.drain()
    encoded = h.engine.record(rid)
    assert folded.output == encoded.output == b">abcd"
    assert _shape(folded) == _shape(encoded)
    assert sorted(folded.nodes) == ["0_1_a", "0_2_b", "0_3_c", "0_4_d"]
    for node_run in folded.nodes.values():
        doc = node_run.to_json()
        assert doc["end"] >= doc["start"] and doc["state"] == "succeeded"


def test_a_successor_that_fails_leaves_the_record_of_an_encoded_chain() -> None:
    def boom(data: bytes) -> bytes:
        raise ValueError("no")

    folded = run(local_engine(chain(["a", "b", "c"], c=boom)))
    h = Harness(chain(["a", "b", "c"], c=boom))
    rid = h.start(b">").request_id
    h.drain()
    encoded = h.engine.record(rid)
    assert folded.status == encoded.status == "failure"
    assert {n: s["state"] for n, s in folded.states.items()} == {
        "0_1_a": "succeeded", "0_2_b": "succeeded", "0_3_c": "failed",
    }
    runs, states = _shape(folded)
    other_runs, other_states = _shape(encoded)
    assert runs == other_runs
    assert {n: s["state"] for n, s in states.items()} == {
        n: s["state"] for n, s in other_states.items()
    }


def test_fan_ins_forwarders_and_dynamic_successors_write_the_done_marker_first() -> None:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("s").modify(lambda d: d + b"s")
        dag.node("l").modify(lambda d: d + b"l")
        dag.node("r").modify(lambda d: d + b"r")
        dag.node("j", aggregator=lambda inputs: b"".join(inputs[k] for k in sorted(inputs)))
        dag.node("f").modify(lambda d: d + b"f")
        each = dag.foreach_branch("F", lambda d: {"x": d}, aggregator=lambda found: found["x"])
        each.node("leaf").modify(lambda d: d + b"!")
        dag.edge("s", "l")
        dag.edge("s", "r")
        dag.edge("l", "j")
        dag.edge("r", "j")
        dag.edge("j", "f", forwarder=lambda d: d + b"~")
        dag.edge("f", "F")

    states = Phases()
    record = run(local_engine(define, states))
    assert record.status == "success", record.error
    assert record.output == b">sl>sr~f!"
    # j (its claim keeps its aggregated input) feeds f through a forwarder, f feeds a
    # foreach: neither folds its done marker
    written = {eid for eid, _ in states.written}
    unfolded = [eid for eid in written if eid.endswith(("_j", "_f"))]
    assert len(unfolded) == 2
    for eid in unfolded:
        assert states.of(eid)[-2:] == ["done", "handed"], eid


# --- a successor that does not take the move --------------------------------------------------


def test_a_successor_parked_by_a_pause_leaves_its_predecessor_handed() -> None:
    engine: Engine
    held = threading.Event()
    ran: dict[str, int] = {}

    def pause(data: bytes) -> bytes:
        engine.pause(rid_of[0])
        return data + b"b"

    rid_of: list[str] = []
    states = Phases()
    engine = local_engine(chain(["a", "b", "c"], ran, b=pause), states)
    try:
        rid = "folded-pause"
        rid_of.append(rid)
        engine.start(b">", request_id=rid)
        for _ in range(200):
            record = engine.record(rid)
            if record is not None and record.states.get("0_3_c", {}).get("state") == "held":
                held.set()
                break
            threading.Event().wait(0.01)
        assert held.is_set(), "c was never held"
        assert states.of("0_2_b") == ["claimed", "handed"]  # before c's claim, by its delivery
        assert record.states["0_2_b"]["state"] == "succeeded"
        engine.resume(rid)
        done = engine.wait(rid, 30)
    finally:
        engine.close()
    assert done is not None and done.status == "success" and done.output == b">abc"
    assert ran == {"a": 1, "b": 1, "c": 1}


def test_a_successor_past_the_deadline_fails_the_request_with_its_predecessor_succeeded() -> None:
    def late(data: bytes) -> bytes:
        threading.Event().wait(0.3)
        return data + b"b"

    engine = local_engine(chain(["a", "b", "c"], b=late))
    try:
        rid = engine.start(b">", timeout=0.1).request_id
        record = engine.wait(rid, 30)
    finally:
        engine.close()
    assert record is not None and record.status == "failure"
    assert "deadline" in (record.error or "")
    assert record.states["0_2_b"]["state"] == "succeeded"
    assert "0_2_b" in record.nodes


def test_a_successor_whose_first_attempt_fails_takes_the_move_with_its_next() -> None:
    class Flaky(Phases):
        failures = 0

        def transaction(self, compare: Mapping[str, str | None],
                        put: Mapping[str, str] = {},  # noqa: B006
                        delete: Iterable[str] = ()) -> bool:
            if "node--0_2_b" in put and Flaky.failures == 0:
                Flaky.failures += 1  # b's claim: after this, the hand-over of a also fails
                raise BackendError("memory", "transaction", "node--0_2_b", "down")
            return super().transaction(compare, put, delete)

        def update(self, key: str, old_value: str, new_value: str) -> None:
            if key == "node--0_1_a" and Flaky.failures == 1:
                Flaky.failures += 1
                raise BackendError("memory", "update", key, "down")
            super().update(key, old_value, new_value)

    ran: dict[str, int] = {}
    states = Flaky()
    settings = Settings(backend_retry=0.0, environ={"FAASFLOW_LOCAL_WORKERS": "1"})
    record = run(local_engine(chain(["a", "b", "c"], ran), states, settings))
    assert Flaky.failures == 2
    assert record.status == "success" and record.output == b">abc"
    assert ran == {"a": 1, "b": 1, "c": 1}
    # a's move went with b's second attempt: never done, never left claimed
    assert states.of("0_1_a") == ["claimed", "handed"]
    assert {s["state"] for s in record.states.values()} == {"succeeded"}


def test_a_folded_hand_over_goes_with_every_attempt_until_it_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Handed | None] = []
    engine = local_engine(chain(["a"]))
    engine.close()
    core = engine.core
    folded = Handed("node--a", '{"p":"claimed"}', '{"p":"handed"}', (), True)

    def iterate(core: Any, msg: Any, body: bytes, **kw: Any) -> str:
        seen.append(kw["handed"])
        if len(seen) == 3:
            core.pending.pop(("r1", "node--a"))  # made by the third attempt's claim
            return runner.RAN
        raise BackendError("memory", "transaction", "k", "down")

    monkeypatch.setattr(runner, "iterate", iterate)
    monkeypatch.setattr(delivery.time, "sleep", lambda _: None)
    core.pending[("r1", "node--a")] = folded.done
    msg = Message("r1", "folded", "hash", "node")
    delivery.local_delivery(core, _NoSweep())("folded", "r1", msg, folded)
    assert seen == [folded, folded, folded]
    assert ("r1", "node--a") not in core.pending


class _NoSweep:
    next_sweep = float("inf")

    def maybe_sweep(self) -> bool:
        return False


def test_a_folded_hand_over_left_by_an_iteration_is_made_when_its_delivery_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = local_engine(chain(["a"]))
    engine.close()
    core = engine.core
    states, _ = core.stores("r1")
    states.set("node--a", '{"p":"claimed"}')
    folded = Handed("node--a", '{"p":"claimed"}', '{"p":"handed"}', (), True)
    core.pending[("r1", "node--a")] = folded.done
    monkeypatch.setattr(runner, "iterate", lambda *a, **kw: runner.PARKED)
    msg = Message("r1", "folded", "hash", "node")
    delivery.local_delivery(core, _NoSweep())("folded", "r1", msg, folded)
    assert states.get("node--a") == '{"p":"handed"}'
    assert ("r1", "node--a") not in core.pending


def test_a_copy_of_a_node_whose_folded_hand_over_is_in_hand_is_a_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes: list[str] = []
    real = runner.iterate

    def spy(core: Any, msg: Any, body: bytes, **kw: Any) -> str:
        outcome = real(core, msg, body, **kw)
        if msg.node == "0_2_b" and not outcomes:
            # b handed c on (not run yet): b's marker is still its claim, its move in hand
            assert '"p":"claimed"' in core.stores(msg.request_id)[0].get("node--0_2_b")
            outcomes.append(real(core, msg, b"", first=False, token=msg.mid, attempt=2))
        return outcome

    monkeypatch.setattr(runner, "iterate", spy)
    ran: dict[str, int] = {}
    record = run(local_engine(chain(["a", "b", "c"], ran)))
    assert outcomes == [runner.DUPLICATE]
    assert record.output == b">abc" and ran == {"a": 1, "b": 1, "c": 1}
