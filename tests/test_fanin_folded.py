"""A branch's done marker folded into its arrival (``arrivals.arrive_folded``): the arrival at a
fan-in or a branch join moves the arriving node's marker from its claim to handed (or to done,
when it completes the set) in the same one step, and keeps a small payload in the member's key.

Here: the step itself on locked and compare-and-swap stores, what a fan-out branch writes, the
join reading inline and stored payloads, records shaped as before, and the store failures of
the new path (each call failing, raised or applied, then redelivered) on every kind of store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from engine_harness import QueueInvoker
from faults_shapes import NO_RETRY

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.engine import Backends, Engine, handing
from faasflow.engine.arrivals import add_member, arrive_folded, member_payload, members_of
from faasflow.engine.iteration import Folded
from faasflow.engine.markers import INLINE
from faasflow.engine.state import KEY as STATE_KEY
from faasflow.errors import BackendError
from faasflow.interfaces import DataStore, Decide, StateStore
from faasflow.plugins import Registry
from faasflow.testing.faults import FailingStore, Faults

RUNNING = '{"s":"running"}'
SET = "arrived--j"
BIG = INLINE + 1000


class _CasOnly(MemoryStateStore):
    """An etcd-like store: atomic transactions, no locked ones."""

    locked_transactions = False


class _Listed(MemoryStateStore):
    """A store without multi-key transactions: sets are compare-and-swapped lists."""

    atomic_transactions = False
    locked_transactions = False


class _LostAnswer(MemoryStateStore):
    """Applies its first locked transaction, then fails as a timeout after the commit does."""

    lost = 0

    def locked_transaction(self, keys: Any, decide: Decide) -> None:
        super().locked_transaction(keys, decide)
        if not self.lost:
            type(self).lost += 1
            raise BackendError("memory", "locked_transaction", "-", TimeoutError("lost"))


KINDS: dict[str, Callable[[], StateStore]] = {
    "locked": MemoryStateStore,
    "cas": _CasOnly,
    "listed": _Listed,
}


def _handle(kind: str = "locked") -> StateStore:
    handle = KINDS[kind]().scoped("f", "r")
    handle.set(STATE_KEY, RUNNING)
    return handle


def _fold(states: StateStore, node: str) -> Folded:
    key = f"node--{node}"
    states.set(key, f"claimed {node}")
    return Folded(key, f"claimed {node}", f"done {node}", f"handed {node}")


# -- the step ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_an_arrival_that_does_not_complete_the_set_moves_the_claim_to_handed(kind: str) -> None:
    states = _handle(kind)
    fold = _fold(states, "a")
    assert arrive_folded(states, SET, "a", 2, RUNNING, fold, b"from a") == (1, False, True)
    assert states.get("node--a") == "handed a"
    assert states.get(SET) == "1"
    assert member_payload(states.get(f"{SET}@a")) == b"from a"


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_the_completing_arrival_moves_the_claim_to_done(kind: str) -> None:
    states = _handle(kind)
    add_member(states, SET, "a", 2, RUNNING)
    fold = _fold(states, "b")
    assert arrive_folded(states, SET, "b", 2, RUNNING, fold) == (2, True, True)
    assert states.get("node--b") == "done b"  # the joined child is sent, then it is handed
    assert member_payload(states.get(f"{SET}@b")) is None


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_a_repeated_folded_arrival_counts_once_and_answers_as_the_first(kind: str) -> None:
    states = _handle(kind)
    fold = _fold(states, "a")
    arrive_folded(states, SET, "a", 2, RUNNING, fold, b"pa")
    add_member(states, SET, "b", 2, RUNNING)
    assert arrive_folded(states, SET, "a", 2, RUNNING, fold, b"pa") == (2, False, False)
    assert states.get(SET) == "2"
    assert states.get("node--a") == "handed a"


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_a_marker_that_is_not_this_claim_folds_nothing(kind: str) -> None:
    states = _handle(kind)
    fold = _fold(states, "a")
    states.set("node--a", "claimed a by another delivery")
    assert arrive_folded(states, SET, "a", 2, RUNNING, fold, b"pa") is None
    assert states.scan(SET) == {}  # neither the counter nor the member
    assert states.get("node--a") == "claimed a by another delivery"


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_an_arrival_recorded_without_the_fold_is_left_to_the_old_path(kind: str) -> None:
    states = _handle(kind)
    fold = _fold(states, "a")
    add_member(states, SET, "a", 2, RUNNING)  # as if written by an earlier attempt's old path
    assert arrive_folded(states, SET, "a", 2, RUNNING, fold) is None
    assert states.get(SET) == "1"
    assert states.get("node--a") == "claimed a"


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_a_folded_arrival_after_the_state_changed_is_counted_unchecked(kind: str) -> None:
    states = _handle(kind)
    states.set(STATE_KEY, '{"s":"paused"}')
    fold = _fold(states, "a")
    assert arrive_folded(states, SET, "a", 2, RUNNING, fold) == (1, False, False)
    assert states.get("node--a") == "handed a"


def test_a_locked_arrival_whose_answer_was_lost_recognises_itself() -> None:
    _LostAnswer.lost = 0
    states = _LostAnswer().scoped("f", "r")
    states.set(STATE_KEY, RUNNING)
    fold = _fold(states, "a")
    with pytest.raises(BackendError):
        arrive_folded(states, SET, "a", 2, RUNNING, fold, b"pa")
    assert arrive_folded(states, SET, "a", 2, RUNNING, fold, b"pa") == (1, False, False)
    assert states.get(SET) == "1"


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_members_keep_their_payloads_and_positions(kind: str) -> None:
    states = _handle(kind)
    add_member(states, SET, "a", 3, RUNNING, payload=b"")
    add_member(states, SET, "b", 3, RUNNING, payload=b"x:y")
    assert add_member(states, SET, "c", 3, RUNNING) == (3, True, True, False)
    assert add_member(states, SET, "b", 3, RUNNING) == (3, False, False, False)  # repeated
    members = members_of(states, SET, ["a", "b", "c", "d"])  # d never arrived
    assert set(members) == {"a", "b", "c"}
    assert [member_payload(members[m]) for m in "abc"] == [b"", b"x:y", None]


def test_a_listed_set_has_no_member_keys() -> None:
    states = _handle("listed")
    add_member(states, SET, "a", 2)
    assert members_of(states, SET, ["a"]) == {}


# -- the engine ----------------------------------------------------------------------------------


def fan(n: int, size: Callable[[int], int] = lambda i: 1) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("start")
        dag.node(
            "join",
            aggregator=lambda inputs: b",".join(b"%d" % len(inputs[k]) for k in sorted(inputs)),
        )
        for i in range(n):
            dag.node(f"b{i}").modify(lambda d, i=i: b"." * size(i))
            dag.edge("start", f"b{i}")
            dag.edge(f"b{i}", "join")

    return define


def foreach(n: int, size: Callable[[str], int] = lambda k: 1) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        sub = dag.foreach_branch(
            "F",
            lambda d: {str(i): b"%d" % size(str(i)) for i in range(n)},
            aggregator=lambda found: b",".join(b"%d" % len(found[k]) for k in sorted(found)),
        )
        sub.node("x").modify(lambda d: d)
        sub.node("y").modify(lambda d: b"." * int(d))
        sub.edge("x", "y")

    return define


class _Run:
    """One request on counted stores, its iterations delivered one at a time."""

    def __init__(self, define: Any, states: StateStore, data: DataStore | None = None) -> None:
        self.faults = Faults()
        self.data_faults = Faults()
        settings = NO_RETRY
        self.invoker = QueueInvoker()
        self.engine = Engine(
            Flow(define, name="folded"),
            settings,
            Backends(
                FailingStore.wrap(states, self.faults),
                FailingStore.wrap(data or MemoryDataStore(), self.data_faults),
                Registry.from_settings(settings).create(Kind.TRACER, settings, "none"),
                self.invoker,
            ),
        )
        self.rid = self.engine.start(b"").request_id
        while self.invoker.queue:
            item = self.invoker.queue.popleft()
            self.engine.forward(item.body, item.headers)
        self.record = self.engine.record(self.rid)

    def calls(self, *methods: str, data: bool = False, key: str = "") -> int:
        log = (self.data_faults if data else self.faults).log
        return sum(
            1
            for _, method, called in log
            if method in methods and "/~" not in called and key in called
        )


WRITES = ("set", "update", "create", "transaction", "locked_transaction", "delete")


@pytest.mark.parametrize(("kind", "state_calls"), [("locked", 2), ("cas", 3)])
def test_a_fan_out_branch_writes_its_claim_and_its_arrival(kind: str, state_calls: int) -> None:
    def calls(n: int) -> tuple[int, int, int]:
        run = _Run(fan(n), KINDS[kind]())
        assert run.record is not None and run.record.output == b",".join([b"1"] * n)
        return (
            run.calls(*WRITES),
            run.calls("get", "scan", *WRITES),
            run.calls("set", "get", "delete", data=True),
        )

    more = [a - b for a, b in zip(calls(30), calls(10), strict=True)]
    # locked: the claim, the arrival (nothing read); cas: the counter is read first
    assert more == [2 * 20, state_calls * 20, 0]  # no payload went through the data store


@pytest.mark.parametrize("kind", ["locked", "cas"])
def test_a_foreach_branch_end_writes_its_claim_and_its_arrival(kind: str) -> None:
    def writes(n: int) -> tuple[int, int]:
        run = _Run(foreach(n), KINDS[kind]())
        assert run.record is not None and run.record.output == b",".join([b"1"] * n)
        return run.calls(*WRITES), run.calls("set", "get", "delete", data=True)

    more = [a - b for a, b in zip(writes(30), writes(10), strict=True)]
    # x: claim and done (its successor claims it handed); y: its claim and its arrival
    assert more == [4 * 20, 0]


@pytest.mark.parametrize("kind", ["locked", "cas", "listed"])
def test_a_join_reads_inline_and_stored_payloads(kind: str) -> None:
    sizes = [1, BIG, 0, INLINE, INLINE + 1]
    run = _Run(fan(5, lambda i: sizes[i]), KINDS[kind]())
    assert run.record is not None
    assert run.record.output == b",".join(b"%d" % s for s in sizes)
    stored = 2 if kind != "listed" else 5  # the large ones (every one without member keys)
    assert run.calls("set", data=True) == stored + 2  # + the large outputs (out--)
    # the join's one read of its inputs
    reads = {"locked": ("locked_transaction", 1 + 5), "cas": ("scan", 1), "listed": ("scan", 0)}
    method, count = reads[kind]  # locked: the five arrivals and one read of them all
    assert run.calls(method, key="arrived--") == count


@pytest.mark.parametrize("kind", ["locked", "cas", "listed"])
def test_a_foreach_join_reads_inline_and_stored_results(kind: str) -> None:
    sizes = {"0": 3, "1": BIG, "2": 0}
    run = _Run(foreach(3, sizes.__getitem__), KINDS[kind]())
    assert run.record is not None
    assert run.record.output == b"3,%d,0" % BIG
    # the large result and y's large output; every result without member keys
    assert run.calls("set", data=True) == (2 if kind != "listed" else 4)


def _states(record: Any) -> dict[str, Any]:
    return {eid: state["state"] for eid, state in record.states.items()}


def _runs(record: Any) -> dict[str, Any]:
    return {eid: (r.attempts, r.deliveries, r.status) for eid, r in record.nodes.items()}


@pytest.mark.parametrize("define", [fan(4), foreach(3)], ids=["fan", "foreach"])
def test_records_read_the_same_runs_and_states_as_without_the_fold(
    define: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folded = _Run(define, MemoryStateStore()).record
    monkeypatch.setattr(handing, "folds", lambda it, node: False)
    before = _Run(define, MemoryStateStore()).record
    assert folded is not None and before is not None
    assert folded.output == before.output
    assert _states(folded) == _states(before)
    assert _runs(folded) == _runs(before)
    assert set(_states(folded).values()) == {"succeeded"}
    for run in folded.nodes.values():
        assert run.start <= run.end


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_read_of_many_members_is_made_in_parts(backend: str, tmp_path: Any) -> None:
    # SQLite's locked statement takes up to 127 keys: 250 members are read in three parts
    store = (
        MemoryStateStore()
        if backend == "memory"
        else SqliteStateStore.from_options({"path": str(tmp_path / "state.db")})
    )
    states = store.scoped("f", "r")
    for i in range(250):
        add_member(states, SET, f"m{i}", 250, payload=b"%d" % i)
    members = members_of(states, SET, [f"m{i}" for i in range(260)])
    assert len(members) == 250
    assert all(member_payload(members[f"m{i}"]) == b"%d" % i for i in range(250))
    store.close()


def test_a_branch_is_handed_by_its_arrival_and_the_last_once_the_join_is_sent() -> None:
    faults = Faults()
    invoker = QueueInvoker()
    states = MemoryStateStore()
    engine = Engine(
        Flow(fan(3), name="steps"),
        NO_RETRY,
        Backends(
            FailingStore.wrap(states, faults),
            MemoryDataStore(),
            Registry.from_settings(NO_RETRY).create(Kind.TRACER, NO_RETRY, "none"),
            invoker,
        ),
    )
    rid = engine.start(b"").request_id
    scoped = states.scoped(engine.name, rid)
    branches = [invoker.queue.popleft() for _ in range(3)]
    for item in branches[:2]:
        engine.forward(item.body, item.headers)
        node = "node--" + item.message.node
        assert scoped.get(node).startswith('{"p":"handed",')
        writes = [m for _, m, key in faults.log if node in key.split(",") and m != "get"]
        assert writes == ["transaction", "locked_transaction"]  # its claim, then its arrival
    engine.forward(branches[2].body, branches[2].headers)
    assert [item.message.node for item in invoker.queue] == ["0_2_join"]
    # the completing one is done: its hand-over goes with the join's message (as before)
    assert scoped.get("node--" + branches[2].message.node).startswith('{"p":"done",')
    member = scoped.get("arrived--0_2_join@" + branches[0].message.node)
    assert member.startswith("1:") and member_payload(member) == b"."
    while invoker.queue:
        item = invoker.queue.popleft()
        engine.forward(item.body, item.headers)
    record = engine.record(rid)
    assert record is not None and record.output == b"1,1,1"
    assert {state["state"] for state in record.states.values()} == {"succeeded"}
