"""The contract every StateStore backend passes."""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.interfaces import StateStore
from faasflow.testing.contracts._common import DIFFICULT_KEYS, DIFFICULT_TEXT, WAIT, unique
from faasflow.testing.contracts._keyvalue import _KeyValueContract


class StateStoreContract(_KeyValueContract[StateStore]):
    """Behaviour every :class:`~faasflow.StateStore` backend must show."""

    def make_store(self) -> StateStore:
        """Return a new StateStore backend object."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(self)")

    def value(self, text: str) -> str:
        return text

    # -- values (the tests every store kind passes are in _keyvalue.py) -----------------------

    def test_difficult_values_round_trip(self) -> None:
        for index, text in enumerate(DIFFICULT_TEXT):
            self.store.set(f"text-{index}", text)
        for index, text in enumerate(DIFFICULT_TEXT):
            assert self.store.get(f"text-{index}") == text

    def test_large_value_round_trips(self) -> None:
        size = self.value_size(64 * 1024)
        value = "".join(random.choice("0123456789abcdef") for _ in range(size))
        self.store.set("large", value)
        assert self.store.get("large") == value

    # -- compare-and-swap and create-if-absent ----------------------------------------------

    def test_update_replaces_matching_value(self) -> None:
        self.store.set("key", "old")
        self.store.update("key", "old", "new")
        assert self.store.get("key") == "new"

    def test_update_with_wrong_old_value_raises_compare_failed(self) -> None:
        self.store.set("key", "current")
        with pytest.raises(CompareFailed) as info:
            self.store.update("key", "stale", "new")
        assert info.value.key == "key"
        assert self.store.get("key") == "current"

    def test_update_of_missing_key_raises_key_not_found(self) -> None:
        with pytest.raises(KeyNotFound):
            self.store.update("absent", "old", "new")
        with pytest.raises(KeyNotFound):
            self.store.get("absent")

    def test_create_writes_absent_key(self) -> None:
        assert self.store.create("key", "first") is True
        assert self.store.get("key") == "first"

    def test_create_leaves_existing_key(self) -> None:
        self.store.set("key", "1")
        assert self.store.create("key", "1") is False
        assert self.store.create("key", "2") is False
        assert self.store.get("key") == "1"

    def test_create_race_between_threads_has_one_winner(self) -> None:
        results = self.run_in_threads("create", "race")
        assert sorted(results) == [False] * (self.workers - 1) + [True]
        winner = results.index(True)
        assert self.store.get("race") == f"worker-{winner}"

    def test_create_race_between_processes_has_one_winner(self) -> None:
        results = self.run_in_processes("create", "race")
        assert sorted(results) == [False] * (self.workers - 1) + [True]
        winner = results.index(True)
        assert self.store.get("race") == f"worker-{winner}"

    # -- scan ---------------------------------------------------------------------------------

    def test_scan_returns_keys_with_prefix(self) -> None:
        self.store.set("done--a", "1")
        self.store.set("done--b", "2")
        self.store.set("dynamic", "3")
        self.store.set("other", "4")
        assert self.store.scan("done--") == {"done--a": "1", "done--b": "2"}

    def test_scan_without_prefix_returns_whole_namespace(self) -> None:
        self.store.set("a", "1")
        self.store.set("b/c", "2")
        assert self.store.scan() == {"a": "1", "b/c": "2"}

    def test_scan_of_unknown_prefix_is_empty(self) -> None:
        self.store.set("a", "1")
        assert self.store.scan("zzz") == {}

    def test_scan_does_not_see_other_requests(self) -> None:
        other = self.scoped()
        other.set("done--x", "other")
        self.store.set("done--y", "mine")
        assert self.store.scan("done--") == {"done--y": "mine"}

    # -- namespaces ---------------------------------------------------------------------------

    def test_scoping_leaves_the_original_handle_alone(self) -> None:
        self.store.set("key", "value")
        self.store.scoped(self.flow_name, unique("req"))
        assert self.store.get("key") == "value"
        assert self.store.request_id == self.request_id

    def test_cleanup_removes_only_its_own_request(self) -> None:
        other_request = self.scoped()
        other_flow = self.scoped(self.request_id, flow_name=unique("other-flow"))
        for handle in (self.store, other_request, other_flow):
            handle.set("key", "value")
            handle.set("nested/key", "value")
        self.store.cleanup()
        assert self.store.scan() == {}
        with pytest.raises(KeyNotFound):
            self.store.get("key")
        assert other_request.get("key") == "value"
        assert other_flow.scan() == {"key": "value", "nested/key": "value"}

    def test_request_id_prefix_does_not_leak_into_cleanup(self) -> None:
        longer = self.scoped(self.request_id + "0")
        longer.set("key", "value")
        self.store.set("key", "value")
        self.store.cleanup()
        assert longer.get("key") == "value"

    def test_cleanup_of_empty_namespace_is_not_an_error(self) -> None:
        self.store.cleanup()
        self.store.cleanup()
        assert self.store.scan() == {}

    # -- counters -----------------------------------------------------------------------------

    def test_increment_of_absent_key_starts_from_zero(self) -> None:
        assert self.store.increment("counter") == 1
        assert self.store.get("counter") == "1"

    def test_increment_adds_by(self) -> None:
        self.store.set("counter", "5")
        assert self.store.increment("counter", 3) == 8
        assert self.store.increment("counter", -2) == 6
        assert self.store.get("counter") == "6"

    def test_threads_incrementing_with_cas_end_at_exact_count(self) -> None:
        self.run_in_threads("cas_increment", "counter", self.increments_per_worker)
        assert int(self.store.get("counter")) == self.workers * self.increments_per_worker

    def test_threads_incrementing_end_at_exact_count(self) -> None:
        results = self.run_in_threads("increment", "counter", self.increments_per_worker)
        total = self.workers * self.increments_per_worker
        assert int(self.store.get("counter")) == total
        assert sorted(v for values in results for v in values) == list(range(1, total + 1))

    def test_processes_incrementing_with_cas_end_at_exact_count(self) -> None:
        self.run_in_processes("cas_increment", "counter", self.increments_per_worker)
        assert int(self.store.get("counter")) == self.workers * self.increments_per_worker

    def test_processes_incrementing_end_at_exact_count(self) -> None:
        results = self.run_in_processes("increment", "counter", self.increments_per_worker)
        total = self.workers * self.increments_per_worker
        assert int(self.store.get("counter")) == total
        assert sorted(v for values in results for v in values) == list(range(1, total + 1))

    # -- transactions (backends declaring atomic_transactions) -------------------------------

    def needs_transactions(self) -> None:
        """Skip the calling test unless the backend declares ``atomic_transactions``."""
        if not type(self.backend).atomic_transactions:
            pytest.skip(f"{type(self.backend).__name__} declares no atomic transactions")

    def test_transaction_is_refused_without_the_capability(self) -> None:
        if type(self.backend).atomic_transactions:
            pytest.skip(f"{type(self.backend).__name__} declares atomic transactions")
        with pytest.raises(NotImplementedError):
            self.store.transaction({"a": None}, {"a": "1"})
        with pytest.raises(KeyNotFound):
            self.store.get("a")

    def test_transaction_applies_every_put_and_delete_when_compares_hold(self) -> None:
        self.needs_transactions()
        self.store.set("state", "running")
        self.store.set("input", "x")
        done = self.store.transaction(
            {"state": "running", "done--n1": None},
            {"done--n1": "1", "arrived--n2--n1": "1"},
            ["input"],
        )
        assert done is True
        assert self.store.scan() == {"state": "running", "done--n1": "1", "arrived--n2--n1": "1"}

    def test_transaction_with_one_failed_compare_changes_nothing(self) -> None:
        self.needs_transactions()
        self.store.set("state", "running")
        self.store.set("input", "x")
        before = self.store.scan()
        done = self.store.transaction(
            {"done--n1": None, "state": "finished"},
            {"done--n1": "1", "other": "2"},
            ["input"],
        )
        assert done is False
        assert self.store.scan() == before

    def test_transaction_compare_with_none_requires_the_key_absent(self) -> None:
        self.needs_transactions()
        assert self.store.transaction({"claim": None}, {"claim": "first"}) is True
        assert self.store.transaction({"claim": None}, {"claim": "second"}) is False
        assert self.store.get("claim") == "first"

    def test_transaction_compare_on_a_value_fails_when_the_key_is_absent(self) -> None:
        self.needs_transactions()
        assert self.store.transaction({"absent": "1"}, {"written": "1"}) is False
        assert self.store.scan() == {}

    def test_transaction_compare_on_the_empty_value_is_not_absence(self) -> None:
        self.needs_transactions()
        self.store.set("empty", "")
        assert self.store.transaction({"empty": None}, {"a": "1"}) is False
        assert self.store.transaction({"empty": ""}, {"a": "1"}) is True
        assert self.store.get("a") == "1"

    def test_transaction_without_compares_always_applies(self) -> None:
        self.needs_transactions()
        self.store.set("old", "1")
        assert self.store.transaction({}, {"new": "2"}, ["old", "never-written"]) is True
        assert self.store.scan() == {"new": "2"}

    def test_transaction_may_delete_a_compared_key(self) -> None:
        self.needs_transactions()
        self.store.set("parked--n1", "body")
        assert self.store.transaction({"parked--n1": "body"}, {}, ["parked--n1"]) is True
        assert self.store.scan() == {}

    def test_transaction_difficult_keys_and_values_round_trip(self) -> None:
        self.needs_transactions()
        puts = dict(zip(DIFFICULT_KEYS, DIFFICULT_TEXT, strict=False))
        assert self.store.transaction(dict.fromkeys(puts), puts) is True
        assert self.store.scan() == puts
        assert self.store.transaction(puts, {}, list(puts)) is True
        assert self.store.scan() == {}

    def test_transaction_putting_and_deleting_one_key_is_refused(self) -> None:
        self.needs_transactions()
        with pytest.raises(ValueError, match="both puts and deletes"):
            self.store.transaction({}, {"k": "1"}, ["k"])
        assert self.store.scan() == {}

    def test_transaction_leaves_keys_outside_the_namespace_untouched(self) -> None:
        self.needs_transactions()
        other_request = self.scoped()
        other_flow = self.scoped(self.request_id, flow_name=unique("other-flow"))
        longer = self.scoped(self.request_id + "0")
        for handle in (other_request, other_flow, longer):
            handle.set("k", "theirs")
            handle.set("gone", "theirs")
        assert self.store.transaction({"k": None}, {"k": "mine"}, ["gone"]) is True
        for handle in (other_request, other_flow, longer):
            assert handle.scan() == {"k": "theirs", "gone": "theirs"}
        assert self.store.scan() == {"k": "mine"}

    def test_transaction_race_between_threads_has_one_winner(self) -> None:
        self.needs_transactions()
        self.store.set("a", "0")
        self.store.set("b", "0")
        results = self.run_in_threads("transaction")
        self._assert_one_winner(results)

    def test_transaction_race_between_processes_has_one_winner(self) -> None:
        self.needs_transactions()
        self.store.set("a", "0")
        self.store.set("b", "0")
        results = self.run_in_processes("transaction")
        self._assert_one_winner(results)

    def _assert_one_winner(self, results: list[Any]) -> None:
        assert sorted(results) == [False] * (self.workers - 1) + [True]
        winner = results.index(True)
        mark = f"worker-{winner}"
        assert self.store.scan() == {"a": mark, "b": mark, f"won--{winner}": "1"}

    # -- locked transactions (backends declaring locked_transactions) -------------------------

    def needs_locked(self) -> None:
        """Skip the calling test unless the backend declares ``locked_transactions``."""
        if not type(self.backend).locked_transactions:
            pytest.skip(f"{type(self.backend).__name__} declares no locked transactions")

    def test_locked_transaction_is_refused_without_the_capability(self) -> None:
        if type(self.backend).locked_transactions:
            pytest.skip(f"{type(self.backend).__name__} declares locked transactions")
        with pytest.raises(NotImplementedError):
            self.store.locked_transaction(["a"], lambda values: {"a": "1"})
        with pytest.raises(KeyNotFound):
            self.store.get("a")

    def test_locked_transaction_decides_from_current_values_and_absent_keys(self) -> None:
        self.needs_locked()
        self.store.set("count", "2")
        self.store.set("empty", "")
        seen: list[dict[str, str | None]] = []

        def decide(values: Mapping[str, str | None]) -> dict[str, str | None]:
            seen.append(dict(values))
            return {"count": "3", "member": "3", "empty": None}

        self.store.locked_transaction(["count", "member", "empty"], decide)
        assert seen == [{"count": "2", "member": None, "empty": ""}]
        assert self.store.scan() == {"count": "3", "member": "3"}

    def test_locked_transaction_deciding_nothing_writes_nothing(self) -> None:
        self.needs_locked()
        self.store.set("a", "1")
        self.store.locked_transaction(["a", "b"], lambda values: None)
        self.store.locked_transaction(["a", "b"], lambda values: {})
        assert self.store.scan() == {"a": "1"}

    def test_locked_transaction_whose_decision_raises_writes_nothing(self) -> None:
        self.needs_locked()
        self.store.set("a", "1")

        def decide(values: Mapping[str, str | None]) -> dict[str, str | None]:
            raise LookupError("decided against it")

        with pytest.raises(LookupError, match="decided against it"):
            self.store.locked_transaction(["a"], decide)
        assert self.store.scan() == {"a": "1"}
        self.store.set("b", "2")  # and the store is still usable (no lock left held)
        assert self.store.get("b") == "2"

    def test_locked_transaction_difficult_keys_and_values_round_trip(self) -> None:
        self.needs_locked()
        puts = dict(zip(DIFFICULT_KEYS, DIFFICULT_TEXT, strict=False))
        self.store.locked_transaction(list(puts), lambda values: dict(puts))
        assert self.store.scan() == puts
        seen: list[Mapping[str, str | None]] = []
        self.store.locked_transaction(list(puts), lambda values: seen.append(dict(values)))
        assert seen == [puts]

    def test_locked_transaction_reads_and_writes_only_its_namespace(self) -> None:
        self.needs_locked()
        other_request = self.scoped()
        longer = self.scoped(self.request_id + "0")
        for handle in (other_request, longer):
            handle.set("k", "theirs")
        seen: list[Mapping[str, str | None]] = []

        def decide(values: Mapping[str, str | None]) -> dict[str, str | None]:
            seen.append(dict(values))
            return {"k": "mine"}

        self.store.locked_transaction(["k"], decide)
        assert seen == [{"k": None}]
        assert self.store.get("k") == "mine"
        for handle in (other_request, longer):
            assert handle.scan() == {"k": "theirs"}

    def test_locked_transaction_loses_no_write_made_while_it_decides(self) -> None:
        """Another writer (another backend object where the store is shared between
        processes) sets the key while ``decide`` runs: it waits for the locked transaction, or
        ``decide`` is called again with its value; either way its write is not overwritten by
        a decision made without it."""
        self.needs_locked()
        self.store.set("count", "1")
        other = self.make_store() if self.supports_processes else self.backend
        elsewhere = other.scoped(self.flow_name, self.request_id)
        written = threading.Event()

        def write() -> None:
            elsewhere.set("count", "10")
            written.set()

        writer = threading.Thread(target=write)
        seen: list[str | None] = []

        def decide(values: Mapping[str, str | None]) -> dict[str, str]:
            seen.append(values["count"])
            if len(seen) == 1:
                writer.start()
                written.wait(0.5)  # a store that holds writers off keeps it waiting
            return {"count": str(int(values["count"] or 0) + 1)}

        try:
            self.store.locked_transaction(["count"], decide)
            writer.join(WAIT)
            assert written.is_set()
            final = self.store.get("count")
        finally:
            if other is not self.backend:
                other.close()
        # after the writer: called again with its value; before it: overwritten by it
        assert (seen, final) in ((["1", "10"], "11"), (["1"], "10"))

    def test_threads_adding_to_a_set_in_locked_transactions_count_every_member_once(
        self,
    ) -> None:
        self.needs_locked()
        results = self.run_in_threads("locked_add", "arrived", self.increments_per_worker)
        self._assert_counted(results)

    def test_processes_adding_to_a_set_in_locked_transactions_count_every_member_once(
        self,
    ) -> None:
        self.needs_locked()
        results = self.run_in_processes("locked_add", "arrived", self.increments_per_worker)
        self._assert_counted(results)

    def _assert_counted(self, results: list[Any]) -> None:
        total = self.workers * self.increments_per_worker
        assert sorted(p for positions in results for p in positions) == list(range(1, total + 1))
        found = self.store.scan()
        assert found.pop("arrived") == str(total)
        assert sorted(int(v) for v in found.values()) == list(range(1, total + 1))
