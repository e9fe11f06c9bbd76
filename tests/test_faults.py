"""faasflow.testing.faults: the failing store, the redelivering queue and counting functions."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping

import pytest

from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.errors import BackendError, FunctionError, KeyNotFound, RequestNotActive
from faasflow.testing import (
    CountingFunctions,
    FailingStore,
    Faults,
    InjectedFault,
    RedeliveringQueue,
)
from faasflow.testing.faults import FailingDataStore, FailingStateStore

# -- FailingStore -----------------------------------------------------------------------------


def test_failing_store_counts_calls_across_scoped_handles() -> None:
    faults = Faults()
    store = FailingStore.wrap(MemoryStateStore(), faults)
    one, two = store.scoped("f", "r1"), store.scoped("f", "r2")
    one.set("k", "v")
    two.create("k", "v")
    one.get("k")
    assert faults.calls == 3
    assert [(m, k) for _, m, k in faults.log] == [
        ("set", "faasflow/f/r1/k"),
        ("create", "faasflow/f/r2/k"),
        ("get", "faasflow/f/r1/k"),
    ]


def test_failing_store_raise_mode_fails_before_the_call() -> None:
    faults = Faults(fail_at=2)
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    store.set("a", "1")
    with pytest.raises(InjectedFault) as info:
        store.set("b", "2")
    assert info.value.applied is False
    assert store.scan() == {"a": "1"}
    store.set("c", "3")  # only call 2 fails
    assert store.get("c") == "3"


def test_failing_store_applied_mode_writes_then_raises() -> None:
    faults = Faults(fail_at=1, mode="applied")
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    with pytest.raises(InjectedFault) as info:
        store.create("claim", "me")
    assert info.value.applied is True
    assert store.get("claim") == "me"


def test_injected_fault_is_a_backend_error_naming_the_call() -> None:
    faults = Faults(fail_at=1)
    store = FailingStore.wrap(MemoryDataStore(), faults).scoped("f", "r")
    with pytest.raises(BackendError, match=r"set 'faasflow/f/r/blob'.*call 1"):
        store.set("blob", b"x")
    assert faults.injected[0].call == 1


def test_failing_store_fails_at_any_of_several_calls() -> None:
    faults = Faults(fail_at=[1, 3])
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    outcomes = []
    for index in range(4):
        try:
            store.set(f"k{index}", "v")
            outcomes.append("ok")
        except InjectedFault:
            outcomes.append("fault")
    assert outcomes == ["fault", "ok", "fault", "ok"]


def test_failing_store_takes_fault_points_from_any_iterable() -> None:
    faults = Faults(fail_at=(k for k in (2, 3)))
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    outcomes = []
    for index in range(4):
        try:
            store.set(f"k{index}", "v")
            outcomes.append("ok")
        except InjectedFault:
            outcomes.append("fault")
    assert outcomes == ["ok", "fault", "fault", "ok"]


def test_failing_store_counts_only_the_named_methods() -> None:
    faults = Faults(fail_at=1, methods=frozenset({"increment"}))
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    store.set("n", "1")
    store.get("n")
    with pytest.raises(InjectedFault):
        store.increment("n")
    assert faults.calls == 1
    assert store.get("n") == "1"


def test_reset_starts_a_new_plan_from_zero() -> None:
    faults = Faults(fail_at=1)
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    with pytest.raises(InjectedFault):
        store.set("a", "1")
    faults.reset(fail_at=2, mode="applied")
    assert (faults.calls, faults.log, faults.injected) == (0, [], [])
    store.set("a", "1")
    with pytest.raises(InjectedFault):
        store.set("b", "2")
    assert store.get("b") == "2"


def test_failing_store_keeps_the_kind_and_the_transaction_capability() -> None:
    faults = Faults()
    states = FailingStore.wrap(MemoryStateStore(), faults)
    data = FailingStore.wrap(MemoryDataStore(), faults)
    assert isinstance(states, FailingStateStore)
    assert isinstance(data, FailingDataStore)
    assert type(states).atomic_transactions is True
    handle = states.scoped("f", "r")
    assert type(handle).atomic_transactions is True
    assert handle.transaction({"a": None}, {"a": "1"}) is True
    assert handle.get("a") == "1"


def test_failing_store_without_transactions_says_so() -> None:
    class Plain(MemoryStateStore):
        atomic_transactions = False

    states = FailingStore.wrap(Plain(), Faults())
    assert type(states).atomic_transactions is False


def test_failing_store_kill_mode_kills_the_process_before_the_call(tmp_path) -> None:
    script = f"""
from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.testing import FailingStore, Faults
backend = SqliteStateStore.from_options({{"path": {str(tmp_path / "s.db")!r}}})
store = FailingStore.wrap(backend, Faults(fail_at=2, mode="kill")).scoped("f", "r")
store.set("first", "1")
store.set("second", "2")
print("survived")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, timeout=60
    )
    assert done.returncode == -9
    assert b"survived" not in done.stdout
    from faasflow.default_plugins.sqlite import SqliteStateStore

    store = SqliteStateStore.from_options({"path": str(tmp_path / "s.db")}).scoped("f", "r")
    try:
        assert store.scan() == {"first": "1"}
    finally:
        store.close()


# -- RedeliveringQueue ------------------------------------------------------------------------


class Target:
    """A delivery target that fails the first ``failures`` deliveries of each message."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or BackendError("test", "set", "here", "down")
        self.seen: list[tuple[bytes, str]] = []
        self.lock = threading.Lock()

    def __call__(self, body: bytes, headers: Mapping[str, str]) -> None:
        with self.lock:
            self.seen.append((body, headers["X-Call-Id"]))
            attempts = sum(1 for b, _ in self.seen if b == body)
        if attempts <= self.failures:
            raise self.error


def test_queue_redelivers_a_failed_delivery_with_the_same_call_id() -> None:
    queue = RedeliveringQueue()
    queue.forward("f", "r", b"m1", {})
    target = Target(failures=2)
    assert queue.drain(target) == 3
    tokens = {token for _, token in target.seen}
    assert len(tokens) == 1
    assert len(queue.failures) == 2
    assert queue.pending == type(queue.pending)()


def test_queue_in_ce_mode_drops_a_failed_delivery() -> None:
    queue = RedeliveringQueue(redeliver=False)
    queue.forward("f", "r", b"m1", {})
    assert queue.drain(Target(failures=1)) == 1
    assert [d.body for d in queue.dropped] == [b"m1"]


def test_queue_does_not_redeliver_a_refused_delivery() -> None:
    queue = RedeliveringQueue()
    queue.forward("f", "r", b"m1", {})
    assert queue.drain(Target(failures=1, error=RequestNotActive("r", "FINISHED"))) == 1
    assert len(queue.refused) == 1
    assert queue.failures == []


def test_queue_counts_a_5xx_answer_as_a_failed_delivery() -> None:
    queue = RedeliveringQueue()
    queue.forward("f", "r", b"m1", {})
    answers = iter([503, 202])
    assert queue.drain(lambda body, headers: next(answers)) == 2
    assert len(queue.failures) == 1


def test_queue_gives_up_after_max_attempts() -> None:
    queue = RedeliveringQueue(max_attempts=3)
    queue.forward("f", "r", b"m1", {})
    assert queue.drain(Target(failures=10)) == 3
    assert [d.attempts for d in queue.abandoned] == [3]


def test_queue_duplicates_deliveries_as_calls_of_their_own() -> None:
    queue = RedeliveringQueue(duplicate=1.0, max_attempts=1)
    queue.forward("f", "r", b"m1", {})
    target = Target()
    queue.deliver_one(target)
    queue.deliver_one(target)
    assert [body for body, _ in target.seen] == [b"m1", b"m1"]
    # a second copy reaches the gateway as a new call (a re-done hand-on forwards again)
    assert len({token for _, token in target.seen}) == 2


def test_queue_reorders_deliveries() -> None:
    orders = set()
    for seed in range(10):
        queue = RedeliveringQueue(reorder=True, seed=seed)
        for index in range(5):
            queue.forward("f", "r", f"m{index}".encode(), {})
        target = Target()
        queue.drain(target)
        orders.add(tuple(body for body, _ in target.seen))
    assert len(orders) > 1
    assert all(sorted(order) == [f"m{i}".encode() for i in range(5)] for order in orders)


def test_queue_delivers_concurrently_from_threads() -> None:
    queue = RedeliveringQueue()
    for index in range(8):
        queue.forward("f", "r", f"m{index}".encode(), {})
    running, peak = [0], [0]
    lock = threading.Lock()

    def slow(body: bytes, headers: Mapping[str, str]) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    assert queue.drain_concurrently(slow, threads=4) == 8
    assert peak[0] > 1


def test_queue_delivers_what_a_delivery_forwards() -> None:
    queue = RedeliveringQueue()
    queue.forward("f", "r", b"0", {})

    def chain(body: bytes, headers: Mapping[str, str]) -> None:
        if int(body) < 3:
            queue.forward("f", "r", str(int(body) + 1).encode(), {})

    assert queue.drain(chain) == 4


def test_refused_forward_raises_a_503_function_error() -> None:
    queue = RedeliveringQueue()
    queue.refuse_forward = lambda delivery: True
    with pytest.raises(FunctionError) as info:
        queue.forward("f", "r", b"m", {})
    assert info.value.status == 503
    assert not queue.pending


def test_queue_start_repeats_a_failed_start_with_one_call_id() -> None:
    queue = RedeliveringQueue()
    seen: list[str] = []

    def start(headers: Mapping[str, str]) -> str:
        seen.append(headers["X-Call-Id"])
        if len(seen) < 3:
            raise BackendError("test", "create", "here", "down")
        return "started"

    assert queue.start(start) == "started"
    assert len(seen) == 3 and len(set(seen)) == 1


def test_queue_start_in_ce_mode_does_not_repeat() -> None:
    queue = RedeliveringQueue(redeliver=False)
    with pytest.raises(BackendError):
        queue.start(lambda headers: (_ for _ in ()).throw(BackendError("t", "o", "e", "c")))


# -- CountingFunctions ------------------------------------------------------------------------


def test_counting_functions_count_per_request_and_node() -> None:
    functions = CountingFunctions({"up": lambda data: data.upper()})
    queue = RedeliveringQueue(functions)
    for key in ("r1/0_1_a", "r1/0_1_a", "r1/0_2_b", "r2/0_1_a"):
        request = key.split("/")[0]
        answer = queue.call(
            "up", b"x", headers={"X-Faas-Flow-Reqid": request, "Idempotency-Key": key}
        )
        assert answer.body == b"X"
    assert functions.calls("r1") == {("r1/0_1_a", "up"): 2, ("r1/0_2_b", "up"): 1}
    assert functions.repeated("r1") == {("r1/0_1_a", "up"): 2}
    assert functions.repeated("r2") == {}


def test_counting_functions_place_calls_between_store_calls() -> None:
    faults = Faults()
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    functions = CountingFunctions({"id": lambda data: data}, clock=faults)
    store.set("a", "1")
    functions("id", b"", {"Idempotency-Key": "r/n1"})
    store.set("b", "1")
    functions("id", b"", {"Idempotency-Key": "r/n2"})
    assert functions.last_before(2) == ("r/n1", "id")
    assert functions.last_before(3) == ("r/n2", "id")
    assert functions.last_before(1) is None


def test_unknown_function_is_a_404_function_error() -> None:
    with pytest.raises(FunctionError) as info:
        CountingFunctions({})("missing", b"", {})
    assert info.value.status == 404


def test_memory_store_behind_a_failing_store_still_raises_key_not_found() -> None:
    store = FailingStore.wrap(MemoryStateStore(), Faults()).scoped("f", "r")
    with pytest.raises(KeyNotFound):
        store.get("absent")


def test_failing_store_wraps_every_state_store_method() -> None:
    from faasflow.interfaces import StateStore

    public = {
        name for name, value in vars(StateStore).items()
        if callable(value) and not name.startswith("_")
    } - {"configure", "scoped", "close"}
    missing = {name for name in public if name not in vars(FailingStateStore)} - set(
        vars(FailingStore)
    )
    assert missing == set(), "calls of these methods would not be counted"


def test_applied_mode_replaces_the_stores_own_error_with_the_fault() -> None:
    faults = Faults(fail_at=1, mode="applied")
    store = FailingStore.wrap(MemoryStateStore(), faults).scoped("f", "r")
    with pytest.raises(InjectedFault):
        store.get("absent")  # the KeyNotFound is lost with the answer
    assert len(faults.injected) == 1
