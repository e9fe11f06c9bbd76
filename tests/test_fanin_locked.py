"""A fan-in arrival on a store with locked transactions (``arrivals.add_member``): counted once,
answered the same when repeated, the state checked and the arriving node's hand-over made in
the one step, exactly as on the compare-and-swap path; and the fault-injecting store wrapper
keeps the capability, so the fault suites cover it."""

from __future__ import annotations

import pytest

from faasflow.default_plugins.memory import MemoryStateStore
from faasflow.engine.arrivals import add_member
from faasflow.engine.iteration import Handed, Stopped
from faasflow.engine.state import KEY as STATE_KEY
from faasflow.interfaces import StateStore
from faasflow.testing import FailingStore, Faults
from faasflow.testing.faults import InjectedFault

RUNNING = '{"s":"running"}'
SET = "arrived--j"


class _CasOnly(MemoryStateStore):
    locked_transactions = False


def _store(locked: bool = True) -> StateStore:
    backend = MemoryStateStore() if locked else _CasOnly()
    handle = backend.scoped("f", "r")
    handle.set(STATE_KEY, RUNNING)
    return handle


def _handed(states: StateStore, node: str) -> Handed:
    key = f"node--{node}"
    states.set(key, f"done {node}")
    return Handed(key, f"done {node}", f"handed {node}")


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "cas"])
def test_each_arrival_is_counted_once_and_the_last_completes_the_set(locked: bool) -> None:
    states = _store(locked)
    answers = [add_member(states, SET, m, 3, RUNNING) for m in ("a", "b", "c")]
    assert answers == [(1, False, True, False), (2, False, True, False), (3, True, True, False)]
    assert states.get(SET) == "3"


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "cas"])
def test_a_repeated_arrival_adds_nothing_and_answers_its_position(locked: bool) -> None:
    states = _store(locked)
    for member in ("a", "b"):
        add_member(states, SET, member, 2, RUNNING)
    again = add_member(states, SET, "b", 2, RUNNING)
    assert again == (2, True, False, False)  # the last, again: the join is forwarded again
    assert add_member(states, SET, "a", 2, RUNNING) == (2, False, False, False)
    assert states.get(SET) == "2"


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "cas"])
def test_an_arrival_that_does_not_complete_the_set_makes_the_hand_over(locked: bool) -> None:
    states = _store(locked)
    handed = _handed(states, "a")
    assert add_member(states, SET, "a", 2, RUNNING, handed) == (1, False, True, True)
    assert states.get("node--a") == "handed a"


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "cas"])
def test_the_completing_arrival_leaves_the_hand_over_for_later(locked: bool) -> None:
    states = _store(locked)
    add_member(states, SET, "a", 2, RUNNING)
    handed = _handed(states, "b")
    assert add_member(states, SET, "b", 2, RUNNING, handed) == (2, True, True, False)
    assert states.get("node--b") == "done b"  # the joined child is sent first


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "cas"])
def test_an_arrival_after_the_state_changed_is_counted_unchecked_and_hands_nothing(
    locked: bool,
) -> None:
    states = _store(locked)
    states.set(STATE_KEY, '{"s":"failed"}')
    handed = _handed(states, "a")
    assert add_member(states, SET, "a", 2, RUNNING, handed) == (1, False, False, False)
    assert states.get("node--a") == "done a"
    assert states.get(SET) == "1"


def test_a_hand_over_another_delivery_made_is_not_made_again_but_the_state_is_checked() -> None:
    states = _store()
    handed = _handed(states, "a")
    states.set(handed.key, "handed a by another delivery")
    assert add_member(states, SET, "a", 2, RUNNING, handed) == (1, False, True, False)
    assert states.get(handed.key) == "handed a by another delivery"


def test_a_member_whose_counter_went_stops_the_iteration() -> None:
    states = _store()
    add_member(states, SET, "a", 2, RUNNING)
    states.delete(SET)  # the request's keys are being cleaned up
    with pytest.raises(Stopped):
        add_member(states, SET, "a", 2, RUNNING)


def test_the_locked_path_reads_no_counter_before_it_adds() -> None:
    faults = Faults()
    states = FailingStore.wrap(_store(), faults)
    add_member(states, SET, "a", 2, RUNNING, _handed(states, "a"))
    assert [method for _, method, _ in faults.log][-1:] == ["locked_transaction"]
    assert [method for _, method, _ in faults.log].count("get") == 0


def test_the_failing_store_keeps_locked_transactions_and_fails_them_on_plan() -> None:
    plain = FailingStore.wrap(_CasOnly(), Faults())
    assert type(plain).locked_transactions is False
    faults = Faults(fail_at=1, methods={"locked_transaction"})
    states = FailingStore.wrap(_store(), faults)
    assert type(states).locked_transactions is True
    with pytest.raises(InjectedFault):
        add_member(states, SET, "a", 2, RUNNING)
    assert add_member(states, SET, "a", 2, RUNNING)[0] == 1  # nothing was written the first time


def test_an_arrival_applied_but_reported_lost_answers_the_same_when_repeated() -> None:
    faults = Faults(fail_at=1, mode="applied", methods={"locked_transaction"})
    states = FailingStore.wrap(_store(), faults)
    with pytest.raises(InjectedFault):
        add_member(states, SET, "a", 1, RUNNING)
    assert add_member(states, SET, "a", 1, RUNNING) == (1, True, False, False)
    assert states.get(SET) == "1"
