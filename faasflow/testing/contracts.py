"""The conformance suite every faasflow backend passes.

A backend's tests subclass one contract and write one factory method::

    from faasflow.testing import StateStoreContract

    class TestRedisStateStore(StateStoreContract):
        def make_store(self):
            return RedisStateStore.from_options({"url": "redis://127.0.0.1:6379/0"})

The contracts are plain classes (no ``Test`` prefix), so pytest collects them only through a
subclass. An autouse fixture builds the backend, scopes it to a random flow and request, and
cleans up every namespace a test touched. Behaviour a backend cannot offer is switched off with
a class attribute (``supports_processes = False``), never by editing the suite.

Multi-process tests start children with the ``spawn`` method. A child imports the module that
defines the test class (by name, or from its file), makes a fresh instance, copies over the
attributes named in ``process_attributes`` (``workdir``, ``flow_name``, ``request_id`` and any
the subclass adds) and calls ``make_store()``. So ``make_store`` must depend only on those
attributes, class attributes and environment variables, never on fixtures.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import multiprocessing
import queue
import random
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest

from faasflow.backends import Backend, Kind, RegisteredBackend
from faasflow.errors import CompareFailed, FunctionError, KeyNotFound
from faasflow.interfaces import DataStore, Invoker, Response, StateStore, Tracer

__all__ = [
    "DataStoreContract",
    "InvokerContract",
    "LoopbackServer",
    "StateStoreContract",
    "TracerContract",
    "assert_backend_registered",
    "free_port",
]

#: Values that break naive encodings: quotes, separators, escapes, scripts, emoji.
DIFFICULT_TEXT = (
    "The quick brown fox jumps over the lazy dog",
    'quotes \' " ` and back\\slash, {"json": [1, 2]}',
    "tabs\tnew\nlines\r\nand spaces  ",
    "Съешь же ещё этих мягких французских булок",
    "日本語のテキスト, ελληνικά, עברית, العربية",
    "emoji 🚀🔥 and combining e\u0301",
    "%2F/../?#&=+;",
)

#: Keys a flow may produce from user-chosen branch names.
DIFFICULT_KEYS = (
    "simple",
    "with/slash",
    "../dots",
    ".hidden",
    "with space and %25 percent",
    "ünïcødé-ключ",
    "a" * 200,
)

_WAIT = 60.0  # upper bound for any child process or thread to report back


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


S = TypeVar("S", StateStore, DataStore)


class _StoreContract(Generic[S]):
    """Fixture logic shared by the two store contracts."""

    #: The backend is visible to several processes at once (False for in-process stores).
    supports_processes: ClassVar[bool] = True
    #: Threads (and processes) in the concurrency tests.
    workers: ClassVar[int] = 4
    #: Increments each worker makes in the counter tests.
    increments_per_worker: ClassVar[int] = 5
    #: Largest value the backend accepts, in bytes; None for no limit.
    max_value_bytes: ClassVar[int | None] = None
    #: Instance attributes copied into child processes before ``make_store`` runs there.
    process_attributes: ClassVar[tuple[str, ...]] = ("workdir", "flow_name", "request_id")

    workdir: Path
    """A fresh directory for this test; file-based stores keep their files in it."""
    flow_name: str
    request_id: str
    backend: S
    """The object ``make_store`` returned (shared by every handle)."""
    store: S
    """The backend scoped to ``flow_name`` / ``request_id``."""

    def make_store(self) -> S:
        """Return a new backend object; the subclass implements this."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(self)")

    @pytest.fixture(autouse=True)
    def _faasflow_store(self, tmp_path: Path) -> Iterator[None]:
        self.workdir = tmp_path
        self.flow_name = _unique("contract")
        self.request_id = _unique("req")
        self._handles: list[S] = []
        self.backend = self.make_store()
        try:
            self.store = self.scoped(self.request_id)
            yield
        finally:
            try:
                for handle in self._handles:
                    handle.cleanup()
            finally:
                self.backend.close()

    def scoped(self, request_id: str | None = None, flow_name: str | None = None) -> S:
        """Another handle on the same backend (a new request unless ``request_id`` is given);
        its namespace is cleaned up after the test."""
        handle = self.backend.scoped(flow_name or self.flow_name, request_id or _unique("req"))
        handle.init()
        self._handles.append(handle)
        return handle

    def value_size(self, wanted: int) -> int:
        """``wanted`` bytes, capped by ``max_value_bytes``."""
        return wanted if self.max_value_bytes is None else min(wanted, self.max_value_bytes)

    def run_in_processes(self, task: str, *args: Any) -> list[Any]:
        """Run ``task`` in ``workers`` spawned processes, started together; return their
        results in worker order."""
        if not self.supports_processes:
            pytest.skip(f"{type(self).__name__} is not shared between processes")
        spec = _ChildSpec.of(self)
        return _run_processes(spec, task, args, self.workers)

    def run_in_threads(self, task: str, *args: Any) -> list[Any]:
        """Run ``task`` in ``workers`` threads, each on its own scoped handle of the same
        request, started together."""
        handles = [
            self.backend.scoped(self.flow_name, self.request_id) for _ in range(self.workers)
        ]
        barrier = threading.Barrier(self.workers)
        fn = _TASKS[task]

        def work(index: int) -> Any:
            barrier.wait(timeout=_WAIT)
            return fn(handles[index], index, *args)

        return _run_threads(work, self.workers)


class StateStoreContract(_StoreContract[StateStore]):
    """Behaviour every :class:`~faasflow.StateStore` backend must show."""

    def make_store(self) -> StateStore:
        """Return a new StateStore backend object."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(self)")

    # -- basic operations -------------------------------------------------------------------

    def test_get_of_missing_key_raises_key_not_found(self) -> None:
        with pytest.raises(KeyNotFound) as info:
            self.store.get("absent")
        assert info.value.key == "absent"

    def test_set_then_get_round_trips(self) -> None:
        self.store.set("key", "value")
        assert self.store.get("key") == "value"

    def test_set_overwrites(self) -> None:
        self.store.set("key", "first")
        self.store.set("key", "second")
        assert self.store.get("key") == "second"

    def test_empty_value_round_trips(self) -> None:
        self.store.set("empty", "")
        assert self.store.get("empty") == ""

    def test_difficult_values_round_trip(self) -> None:
        for index, text in enumerate(DIFFICULT_TEXT):
            self.store.set(f"text-{index}", text)
        for index, text in enumerate(DIFFICULT_TEXT):
            assert self.store.get(f"text-{index}") == text

    def test_difficult_keys_round_trip(self) -> None:
        for key in DIFFICULT_KEYS:
            self.store.set(key, f"value of {key}")
        for key in DIFFICULT_KEYS:
            assert self.store.get(key) == f"value of {key}"

    def test_large_value_round_trips(self) -> None:
        size = self.value_size(64 * 1024)
        value = "".join(random.choice("0123456789abcdef") for _ in range(size))
        self.store.set("large", value)
        assert self.store.get("large") == value

    def test_delete_removes_key(self) -> None:
        self.store.set("key", "value")
        self.store.delete("key")
        with pytest.raises(KeyNotFound):
            self.store.get("key")

    def test_delete_of_missing_key_is_not_an_error(self) -> None:
        self.store.delete("absent")
        with pytest.raises(KeyNotFound):
            self.store.get("absent")

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

    def test_requests_are_isolated(self) -> None:
        other = self.scoped()
        self.store.set("key", "mine")
        other.set("key", "theirs")
        assert self.store.get("key") == "mine"
        assert other.get("key") == "theirs"

    def test_flows_are_isolated(self) -> None:
        other = self.scoped(self.request_id, flow_name=_unique("other-flow"))
        self.store.set("key", "mine")
        with pytest.raises(KeyNotFound):
            other.get("key")

    def test_handles_of_one_request_share_values(self) -> None:
        twin = self.backend.scoped(self.flow_name, self.request_id)
        self.store.set("key", "value")
        assert twin.get("key") == "value"

    def test_scoping_leaves_the_original_handle_alone(self) -> None:
        self.store.set("key", "value")
        self.store.scoped(self.flow_name, _unique("req"))
        assert self.store.get("key") == "value"
        assert self.store.request_id == self.request_id

    def test_cleanup_removes_only_its_own_request(self) -> None:
        other_request = self.scoped()
        other_flow = self.scoped(self.request_id, flow_name=_unique("other-flow"))
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
        other_flow = self.scoped(self.request_id, flow_name=_unique("other-flow"))
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


class DataStoreContract(_StoreContract[DataStore]):
    """Behaviour every :class:`~faasflow.DataStore` backend must show."""

    def make_store(self) -> DataStore:
        """Return a new DataStore backend object."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(self)")

    def test_get_of_missing_key_raises_key_not_found(self) -> None:
        with pytest.raises(KeyNotFound) as info:
            self.store.get("absent")
        assert info.value.key == "absent"

    def test_set_then_get_round_trips(self) -> None:
        self.store.set("key", b"value")
        assert self.store.get("key") == b"value"

    def test_set_overwrites(self) -> None:
        self.store.set("key", b"a much longer first value")
        self.store.set("key", b"short")
        assert self.store.get("key") == b"short"

    def test_empty_value_round_trips(self) -> None:
        self.store.set("empty", b"")
        assert self.store.get("empty") == b""

    def test_binary_value_round_trips(self) -> None:
        value = bytes(range(256)) * 4
        self.store.set("binary", value)
        assert self.store.get("binary") == value

    def test_unicode_text_round_trips_as_utf8(self) -> None:
        for index, text in enumerate(DIFFICULT_TEXT):
            self.store.set(f"text-{index}", text.encode())
        for index, text in enumerate(DIFFICULT_TEXT):
            assert self.store.get(f"text-{index}").decode() == text

    def test_difficult_keys_round_trip(self) -> None:
        for key in DIFFICULT_KEYS:
            self.store.set(key, key.encode())
        for key in DIFFICULT_KEYS:
            assert self.store.get(key) == key.encode()

    def test_large_value_round_trips(self) -> None:
        value = random.randbytes(self.value_size(1024 * 1024))
        self.store.set("large", value)
        assert self.store.get("large") == value

    def test_delete_removes_key(self) -> None:
        self.store.set("key", b"value")
        self.store.delete("key")
        with pytest.raises(KeyNotFound):
            self.store.get("key")

    def test_delete_of_missing_key_is_not_an_error(self) -> None:
        self.store.delete("absent")
        with pytest.raises(KeyNotFound):
            self.store.get("absent")

    def test_requests_are_isolated(self) -> None:
        other = self.scoped()
        self.store.set("key", b"mine")
        other.set("key", b"theirs")
        assert self.store.get("key") == b"mine"
        assert other.get("key") == b"theirs"

    def test_flows_are_isolated(self) -> None:
        other = self.scoped(self.request_id, flow_name=_unique("other-flow"))
        self.store.set("key", b"mine")
        with pytest.raises(KeyNotFound):
            other.get("key")

    def test_handles_of_one_request_share_values(self) -> None:
        twin = self.backend.scoped(self.flow_name, self.request_id)
        self.store.set("key", b"value")
        assert twin.get("key") == b"value"

    def test_cleanup_removes_only_its_own_request(self) -> None:
        other_request = self.scoped()
        other_flow = self.scoped(self.request_id, flow_name=_unique("other-flow"))
        longer = self.scoped(self.request_id + "0")
        for handle in (self.store, other_request, other_flow, longer):
            handle.set("key", b"value")
            handle.set("nested/key", b"value")
        self.store.cleanup()
        for key in ("key", "nested/key"):
            with pytest.raises(KeyNotFound):
                self.store.get(key)
        for handle in (other_request, other_flow, longer):
            assert handle.get("key") == b"value"
            assert handle.get("nested/key") == b"value"

    def test_cleanup_of_empty_namespace_is_not_an_error(self) -> None:
        self.store.cleanup()
        self.store.cleanup()

    def test_store_is_usable_after_cleanup(self) -> None:
        self.store.set("key", b"old")
        self.store.cleanup()
        self.store.set("key", b"new")
        assert self.store.get("key") == b"new"

    def test_threads_writing_distinct_keys_all_land(self) -> None:
        size = self.value_size(64 * 1024)
        self.run_in_threads("write", size)
        for index in range(self.workers):
            assert self.store.get(f"worker-{index}") == _payload(index, size)

    def test_threads_overwriting_one_key_leave_one_whole_value(self) -> None:
        size = self.value_size(256 * 1024)
        self.run_in_threads("overwrite", size)
        assert self.store.get("shared") in {_payload(i, size) for i in range(self.workers)}

    def test_processes_writing_distinct_keys_all_land(self) -> None:
        size = self.value_size(64 * 1024)
        self.run_in_processes("write", size)
        for index in range(self.workers):
            assert self.store.get(f"worker-{index}") == _payload(index, size)

    def test_processes_overwriting_one_key_leave_one_whole_value(self) -> None:
        size = self.value_size(256 * 1024)
        self.run_in_processes("overwrite", size)
        assert self.store.get("shared") in {_payload(i, size) for i in range(self.workers)}


# -- tasks run by threads and child processes --------------------------------------------------


def _payload(index: int, size: int) -> bytes:
    return bytes([index % 256]) * size


def _task_create(store: StateStore, index: int, key: str) -> bool:
    return store.create(key, f"worker-{index}")


def _task_cas_increment(store: StateStore, index: int, key: str, times: int) -> int:
    conflicts = 0
    for _ in range(times):
        while True:
            try:
                old = store.get(key)
            except KeyNotFound:
                if store.create(key, "1"):
                    break
                continue
            try:
                store.update(key, old, str(int(old) + 1))
                break
            except (CompareFailed, KeyNotFound):
                conflicts += 1
                time.sleep(random.uniform(0, 0.002))
    return conflicts


def _task_transaction(store: StateStore, index: int) -> bool:
    # two keys moved together, a third created and one deleted: a torn write shows as a != b
    return store.transaction(
        {"a": "0", "b": "0", f"won--{index}": None},
        {"a": f"worker-{index}", "b": f"worker-{index}", f"won--{index}": "1"},
        ["c"],
    )


def _task_increment(store: StateStore, index: int, key: str, times: int) -> list[int]:
    return [store.increment(key) for _ in range(times)]


def _task_write(store: DataStore, index: int, size: int) -> None:
    store.set(f"worker-{index}", _payload(index, size))


def _task_overwrite(store: DataStore, index: int, size: int) -> None:
    for _ in range(3):
        store.set("shared", _payload(index, size))


_TASKS: dict[str, Callable[..., Any]] = {
    "create": _task_create,
    "cas_increment": _task_cas_increment,
    "increment": _task_increment,
    "transaction": _task_transaction,
    "write": _task_write,
    "overwrite": _task_overwrite,
}


def _run_threads(work: Callable[[int], Any], count: int) -> list[Any]:
    results: list[Any] = [None] * count
    errors: list[str] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_WAIT)
    if any(thread.is_alive() for thread in threads):
        pytest.fail(f"a worker thread did not finish within {_WAIT:.0f} s")
    if errors:
        pytest.fail("a worker thread raised:\n" + errors[0])
    return results


@attrs.frozen
class _ChildSpec:
    """How a spawned child rebuilds the test's backend."""

    module: str
    file: str | None
    qualname: str
    attributes: Mapping[str, Any]

    @classmethod
    def of(cls, contract: _StoreContract[Any]) -> _ChildSpec:
        test_class = type(contract)
        module = sys.modules[test_class.__module__]
        names = type(contract).process_attributes
        return cls(
            module=test_class.__module__,
            file=getattr(module, "__file__", None),
            qualname=test_class.__qualname__,
            attributes={name: getattr(contract, name) for name in names},
        )

    def build(self) -> Any:
        module = self._import()
        target: Any = module
        for part in self.qualname.split("."):
            target = getattr(target, part)
        instance = target()
        for name, value in self.attributes.items():
            setattr(instance, name, value)
        backend = instance.make_store()
        return backend.scoped(self.attributes["flow_name"], self.attributes["request_id"])

    def _import(self) -> ModuleType:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            module = None
        if module is not None:
            return module
        if self.file is None:
            raise ImportError(
                f"cannot import test module {self.module!r} in a child process; put its "
                "directory on sys.path (pytest's default rootdir/prepend import mode does)"
            )
        spec = importlib.util.spec_from_file_location(self.module, self.file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load test module from {self.file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module] = module
        spec.loader.exec_module(module)
        return module


def _child_main(job: tuple[_ChildSpec, str, tuple[Any, ...], int], go: Any, results: Any) -> None:
    spec, task, args, index = job
    try:
        store = spec.build()
    except BaseException:
        results.put(("error", index, traceback.format_exc()))
        return
    try:
        results.put(("ready", index, None))
        if not go.wait(_WAIT):
            results.put(("error", index, "the parent never gave the start signal"))
            return
        results.put(("done", index, _TASKS[task](store, index, *args)))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))
    finally:
        store.close()


def _run_processes(spec: _ChildSpec, task: str, args: tuple[Any, ...], count: int) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    messages = ctx.Queue()
    children = [
        ctx.Process(target=_child_main, args=((spec, task, args, i), go, messages), daemon=True)
        for i in range(count)
    ]
    for child in children:
        child.start()
    try:
        results: list[Any] = [None] * count

        def collect(kind: str) -> None:
            pending = set(range(count))
            deadline = time.monotonic() + _WAIT
            while pending:
                try:
                    status, index, value = messages.get(
                        timeout=max(0.1, deadline - time.monotonic())
                    )
                except queue.Empty:
                    pytest.fail(
                        f"worker processes {sorted(pending)} did not report {kind!r} "
                        f"within {_WAIT:.0f} s"
                    )
                if status == "error":
                    pytest.fail(f"worker process {index} failed:\n{value}")
                if status == kind:
                    pending.discard(index)
                    results[index] = value

        collect("ready")
        go.set()
        collect("done")
        return results
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.terminate()
                child.join(5)
        messages.close()
        messages.join_thread()


# -- tracers -----------------------------------------------------------------------------------


class TracerContract:
    """Behaviour every :class:`~faasflow.Tracer` backend must show: no event raises, handles
    of concurrent iterations do not interfere, ``flush`` can be called any number of times."""

    #: Concurrent iterations in the thread test.
    workers: ClassVar[int] = 4

    flow_name: str
    request_id: str
    workdir: Path
    backend: Tracer
    tracer: Tracer
    """The backend scoped to one iteration of ``request_id``."""

    def make_tracer(self) -> Tracer:
        """Return a new Tracer backend object; the subclass implements this."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_tracer(self)")

    @pytest.fixture(autouse=True)
    def _faasflow_tracer(self, tmp_path: Path) -> Iterator[None]:
        self.workdir = tmp_path
        self.flow_name = _unique("contract")
        self.request_id = _unique("req")
        self.backend = self.make_tracer()
        try:
            self.tracer = self.backend.scoped(self.flow_name, self.request_id)
            yield
        finally:
            self.backend.close()

    def run_iteration(self, tracer: Tracer, node: str = "node-1", *, fail: bool = False) -> None:
        """The events the engine sends for one node with one function call."""
        tracer.node_start(node, {"request": tracer.request_id, "node": node, "attempt": 1})
        tracer.operation_start("function:echo", node, {"function": "echo"})
        headers: dict[str, str] = {}
        tracer.inject(headers)
        if fail:
            error = RuntimeError("function echo answered 500")
            tracer.operation_failure("function:echo", node, error)
            tracer.node_failure(node, error)
        else:
            tracer.operation_end("function:echo", node, {"http.status": 200, "retries": 0})
            tracer.node_end(node, {"request": tracer.request_id, "node": node})

    def test_successful_request_does_not_raise(self) -> None:
        self.tracer.request_start({"X-Request-Id": self.request_id})
        self.run_iteration(self.tracer)
        self.tracer.request_end({"status": "FINISHED"})
        self.tracer.flush()

    def test_failed_request_does_not_raise(self) -> None:
        self.tracer.request_start({})
        self.run_iteration(self.tracer, fail=True)
        self.tracer.request_failure(RuntimeError("node node-1 failed"))
        self.tracer.flush()

    def test_request_continues_from_injected_carrier(self) -> None:
        self.tracer.request_start({})
        carrier: dict[str, str] = {}
        self.tracer.inject(carrier)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in carrier.items())
        self.tracer.request_end({})
        self.tracer.flush()
        later = self.backend.scoped(self.flow_name, self.request_id)
        later.request_continue(carrier)
        self.run_iteration(later, "node-2")
        later.request_end({"status": "FINISHED"})
        later.flush()

    def test_inject_without_request_does_not_raise(self) -> None:
        carrier: dict[str, str] = {"Existing": "kept"}
        self.tracer.inject(carrier)
        assert carrier["Existing"] == "kept"

    def test_unusual_attributes_do_not_raise(self) -> None:
        self.tracer.request_start({})
        odd: dict[str, object] = {
            "none": None, "bytes": b"\xff", "list": [1, "a"], "float": 1.5, "unicode": "ключ",
        }
        self.tracer.node_start("node-1", odd)
        self.tracer.operation_start("modify", "node-1", odd)
        self.tracer.operation_end("modify", "node-1", odd)
        self.tracer.node_end("node-1", odd)
        self.tracer.request_end(odd)
        self.tracer.flush()

    def test_end_without_start_does_not_raise(self) -> None:
        self.tracer.operation_end("function:echo", "node-9", {})
        self.tracer.node_end("node-9", {})
        self.tracer.request_end({})
        self.tracer.flush()

    def test_flush_is_idempotent(self) -> None:
        self.tracer.flush()
        self.tracer.request_start({})
        self.run_iteration(self.tracer)
        self.tracer.request_end({})
        self.tracer.flush()
        self.tracer.flush()

    def test_concurrent_iterations_do_not_interfere(self) -> None:
        self.tracer.request_start({})
        carrier: dict[str, str] = {}
        self.tracer.inject(carrier)
        barrier = threading.Barrier(self.workers)

        def iteration(index: int) -> None:
            handle = self.backend.scoped(self.flow_name, self.request_id)
            barrier.wait(timeout=_WAIT)
            handle.request_continue(carrier)
            self.run_iteration(handle, f"node-{index}", fail=index == 0)
            handle.request_end({})
            handle.flush()

        _run_threads(iteration, self.workers)
        self.tracer.request_end({})
        self.tracer.flush()


# -- invokers ----------------------------------------------------------------------------------


@attrs.frozen
class Received:
    """One request the loopback server received."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out on purpose hangs up before the answer: not an error
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    """A small threaded HTTP server on 127.0.0.1 that plays an OpenFaaS gateway.

    ``/function/<name>`` routes: ``echo`` (body back), ``inspect`` (JSON of the request),
    ``headers`` (sets ``X-Contract: yes``), ``status-<code>``, ``fail`` (500), ``slow``
    (answers after ``slow_seconds``). ``/async-function/...`` records the request in
    ``forwarded`` and answers ``forward_status``. Any other path answers like ``inspect``.
    """

    slow_seconds = 3.0

    def __init__(self) -> None:
        self.forwarded: queue.Queue[Received] = queue.Queue()
        self.forward_status = 202
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        received = Received(
            handler.command,
            parts.path,
            parts.query,
            {k.lower(): v for k, v in handler.headers.items()},
            body,
        )
        status, headers, answer = self._route(received)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def _route(self, received: Received) -> tuple[int, dict[str, str], bytes]:
        path = received.path
        if path.startswith("/async-function/"):
            self.forwarded.put(received)
            return self.forward_status, {}, b""
        name = path[len("/function/"):] if path.startswith("/function/") else ""
        if name == "echo":
            return 200, {"Content-Type": "application/octet-stream"}, received.body
        if name == "headers":
            return 200, {"X-Contract": "yes"}, b"ok"
        if name == "fail":
            return 500, {}, b"boom"
        if name.startswith("status-"):
            code = int(name.split("-", 1)[1])
            return code, {}, f"status {code}".encode()
        if name == "slow":
            self._stopping.wait(self.slow_seconds)
            return 200, {}, b"late"
        inspect = {
            "method": received.method,
            "path": received.path,
            "query": received.query,
            "headers": dict(received.headers),
            "body": base64.b64encode(received.body).decode(),
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(inspect).encode()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class InvokerContract:
    """Behaviour every :class:`~faasflow.Invoker` must show against an OpenFaaS-like gateway
    (the :class:`LoopbackServer` the contract starts)."""

    #: ``call(..., timeout=...)`` interrupts a slow function.
    supports_timeout: ClassVar[bool] = True
    #: Threads in the concurrent call test.
    workers: ClassVar[int] = 4

    server: LoopbackServer
    invoker: Invoker
    delivered: queue.Queue[tuple[str, str, bytes, Mapping[str, str]]]

    def make_invoker(self, base_url: str) -> Invoker:
        """Return an invoker whose gateway is ``base_url``; the subclass implements this."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement make_invoker(self, base_url)"
        )

    @pytest.fixture(scope="class")
    @classmethod
    def faasflow_loopback_server(cls) -> Iterator[LoopbackServer]:
        """One loopback gateway per test class."""
        server = LoopbackServer()
        yield server
        server.close()

    @pytest.fixture(autouse=True)
    def _faasflow_invoker(self, faasflow_loopback_server: LoopbackServer) -> Iterator[None]:
        self.server = faasflow_loopback_server
        self.server.forward_status = 202
        while not self.server.forwarded.empty():
            self.server.forwarded.get_nowait()
        self.delivered = queue.Queue()
        self.invoker = self.make_invoker(self.server.url)

        def deliver(flow: str, request_id: str, message: bytes, headers: Mapping[str, str]) -> None:
            self.delivered.put((flow, request_id, message, dict(headers)))

        self.invoker.bind(deliver)
        try:
            yield
        finally:
            self.invoker.close()

    def inspect(self, response: Response) -> dict[str, Any]:
        """Decode what the ``inspect`` route saw."""
        assert response.status == 200, response
        seen: dict[str, Any] = json.loads(response.body)
        seen["body"] = base64.b64decode(seen["body"])
        return seen

    def wait_forwarded(self) -> tuple[str, str, bytes, Mapping[str, str]]:
        """The next forwarded iteration, whether it went over HTTP or in-process."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return self.delivered.get(timeout=0.02)
            except queue.Empty:
                pass
            try:
                received = self.server.forwarded.get_nowait()
            except queue.Empty:
                continue
            parts = received.path.strip("/").split("/")
            # /async-function/<flow>/flow/<id>/forward
            return parts[1], parts[3], received.body, received.headers
        pytest.fail("the forwarded iteration was not delivered within 10 s")

    def test_call_returns_status_and_body(self) -> None:
        response = self.invoker.call("echo", b"hello")
        assert response.status == 200
        assert response.ok
        assert response.body == b"hello"

    def test_call_passes_headers_and_query(self) -> None:
        response = self.invoker.call(
            "inspect",
            b"data",
            headers={"X-Faasflow-Test": "1"},
            query={"a": ["1", "2"], "b": ["x y"]},
        )
        seen = self.inspect(response)
        assert seen["path"] == "/function/inspect"
        assert seen["headers"]["x-faasflow-test"] == "1"
        assert parse_qs(seen["query"]) == {"a": ["1", "2"], "b": ["x y"]}
        assert seen["body"] == b"data"

    def test_call_uses_the_given_method(self) -> None:
        seen = self.inspect(self.invoker.call("inspect", b"", method="GET"))
        assert seen["method"] == "GET"

    def test_call_defaults_to_post(self) -> None:
        seen = self.inspect(self.invoker.call("inspect", b"x"))
        assert seen["method"] == "POST"

    def test_call_returns_response_headers(self) -> None:
        response = self.invoker.call("headers", b"")
        lowered = {k.lower(): v for k, v in response.headers.items()}
        assert lowered["x-contract"] == "yes"

    def test_call_returns_non_2xx_status_without_raising(self) -> None:
        response = self.invoker.call("status-418", b"")
        assert response.status == 418
        assert not response.ok
        assert response.body == b"status 418"

    def test_call_returns_5xx_without_raising(self) -> None:
        response = self.invoker.call("fail", b"")
        assert response.status == 500
        assert response.body == b"boom"

    def test_call_binary_body_round_trips(self) -> None:
        body = bytes(range(256)) * 4096
        assert self.invoker.call("echo", body).body == body

    def test_call_empty_body_round_trips(self) -> None:
        response = self.invoker.call("echo", b"")
        assert response.status == 200
        assert response.body == b""

    def test_call_timeout_raises_function_error_marked_timeout(self) -> None:
        if not self.supports_timeout:
            pytest.skip(f"{type(self).__name__} cannot interrupt a slow function")
        with pytest.raises(FunctionError) as info:
            self.invoker.call("slow", b"", timeout=0.3)
        assert getattr(info.value, "timeout", False) is True
        assert "slow" in str(info.value) or "slow" in info.value.url

    def test_request_reaches_any_url(self) -> None:
        response = self.invoker.request(
            "PUT", f"{self.server.url}/callback/path?x=1", b"payload", headers={"X-A": "b"}
        )
        seen = self.inspect(response)
        assert seen["method"] == "PUT"
        assert seen["path"] == "/callback/path"
        assert seen["query"] == "x=1"
        assert seen["headers"]["x-a"] == "b"
        assert seen["body"] == b"payload"

    def test_request_to_closed_port_raises_function_error(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/nothing"
        with pytest.raises(FunctionError) as info:
            self.invoker.request("POST", url, b"", timeout=5)
        assert info.value.url == url
        assert info.value.status is None
        assert getattr(info.value, "timeout", False) is False

    def test_concurrent_calls_get_their_own_answers(self) -> None:
        def work(index: int) -> list[bytes]:
            return [self.invoker.call("echo", f"{index}-{n}".encode()).body for n in range(10)]

        results = _run_threads(work, self.workers)
        for index, bodies in enumerate(results):
            assert bodies == [f"{index}-{n}".encode() for n in range(10)]

    def test_forward_delivers_the_message(self) -> None:
        self.invoker.forward("my-flow", "req-1", b'{"v": 1}', {"X-Trace": "abc"})
        flow, request_id, message, headers = self.wait_forwarded()
        assert (flow, request_id, message) == ("my-flow", "req-1", b'{"v": 1}')
        assert {k.lower(): v for k, v in headers.items()}["x-trace"] == "abc"

    def test_forward_delivers_every_message(self) -> None:
        for index in range(20):
            self.invoker.forward("my-flow", f"req-{index}", str(index).encode(), {})
        seen = {self.wait_forwarded()[1] for _ in range(20)}
        assert seen == {f"req-{index}" for index in range(20)}


def assert_readme_documents(backend: Backend, readme: Path) -> None:
    """Check that a plugin's README has a row ``| `<option>` | `FAASFLOW_<NAME>_<OPTION>` |``
    for every option the backend declares, and names each ecosystem variable and secret."""
    text = readme.read_text()
    prefix = f"FAASFLOW_{backend.name.upper()}_"
    for option in backend.options:
        row = f"| `{option}` | `{prefix}{option.upper()}` |"
        assert row in text, f"{readme} lacks the options-table row {row}"
    for names in backend.env.values():
        for name in names:
            assert f"`{name}`" in text, f"{readme} does not name the variable {name}"
    for secret in backend.secrets.values():
        assert f"secret `{secret}`" in text, f"{readme} does not name the secret {secret}"


def assert_backend_registered(kind: Kind | str, name: str) -> RegisteredBackend:
    """Check that ``name`` is an installed backend of ``kind`` (found through the entry points,
    as a user's process would); return its registry entry."""
    from faasflow.plugins import Registry, make_plugin_manager
    from faasflow.settings import Settings

    kind = Kind(kind)
    registry = Registry(make_plugin_manager(Settings()))
    available = registry.backends(kind)
    broken = ", ".join(f"{b.name} ({b.distribution}): {b.error}" for b in registry.broken)
    assert name in available, (
        f"{kind.label} {name!r} is not registered; available: {', '.join(available) or 'none'}"
        + (f"; plugins that failed to load: {broken}" if broken else "")
        + " - is the distribution installed (pip install -e .) with a [project.entry-points."
        "faasflow] table?"
    )
    return available[name]


class RequestIndexContract(_StoreContract[StateStore]):
    """:meth:`~faasflow.StateStore.scan_page` and the request index built on it
    (:mod:`faasflow.engine.index`), which every StateStore backend must serve correctly.

    A backend that overrides ``scan_page`` natively is checked against the same order and
    bounds as the default over ``scan``.
    """

    def make_store(self) -> StateStore:
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(self)")

    def _index(self) -> Any:
        from faasflow.engine.index import RequestIndex

        return RequestIndex(self.store)

    def _entry(self, rid: str, created: float, status: str = "running", **extra: Any) -> Any:
        from faasflow.engine.index import IndexEntry

        return IndexEntry(rid, status, created, **extra)

    def test_scan_page_returns_keys_in_order_after_the_position(self) -> None:
        for key in ("p/c", "p/a", "p/b", "q/a", "p"):
            self.store.set(key, "v-" + key)
        assert self.store.scan_page("p/") == [("p/a", "v-p/a"), ("p/b", "v-p/b"),
                                              ("p/c", "v-p/c")]
        assert self.store.scan_page("p/", "p/a") == [("p/b", "v-p/b"), ("p/c", "v-p/c")]

    def test_scan_page_stops_at_the_limit(self) -> None:
        for i in range(5):
            self.store.set(f"k/{i}", str(i))
        assert [k for k, _ in self.store.scan_page("k/", "", 2)] == ["k/0", "k/1"]
        assert self.store.scan_page("k/", "", 0) == []

    def test_scan_page_pages_through_every_key_once(self) -> None:
        keys = sorted(f"n/{i:04d}" for i in range(230))
        for key in keys:
            self.store.set(key, "x")
        seen: list[str] = []
        after = ""
        while True:
            page = self.store.scan_page("n/", after, 100)
            seen += [k for k, _ in page]
            if len(page) < 100:
                break
            after = page[-1][0]
        assert seen == keys

    def test_scan_page_sees_only_its_namespace(self) -> None:
        other = self.scoped()
        other.set("p/x", "theirs")
        self.store.set("p/y", "ours")
        assert self.store.scan_page("p/") == [("p/y", "ours")]

    def test_scan_page_of_an_unknown_prefix_is_empty(self) -> None:
        self.store.set("a", "1")
        assert self.store.scan_page("zz/") == []
        assert self.store.scan_page("a", "b") == []

    def test_scan_page_stops_before_end_before(self) -> None:
        for key in ("w/1", "w/2", "w/3", "w/4"):
            self.store.set(key, "x")
        assert [k for k, _ in self.store.scan_page("w/", "w/1", 10, "w/4")] == ["w/2", "w/3"]
        assert self.store.scan_page("w/", "", 10, "w/1") == []

    def test_index_in_time_windows_pages_sparse_and_dense_requests_alike(self) -> None:
        from faasflow.engine.index import IndexQuery

        self.store.pages_walk_the_range = True  # type: ignore[misc]  # as etcd 3.4: windows
        index = self._index()
        now = time.time()
        # a burst in the last minutes, then one request a year back and one ten years back
        created = [now - i for i in range(7)] + [now - 365 * 86400, now - 3650 * 86400]
        for i, when in enumerate(created):
            index.opened(self._entry(f"r{i}", when))
        seen: list[str] = []
        cursor = None
        while True:
            page = index.page(IndexQuery(limit=3, cursor=cursor))
            seen += [e.request_id for e in page.entries]
            cursor = page.next
            if cursor is None:
                break
        assert seen == [f"r{i}" for i in range(9)]
        since = index.page(IndexQuery(since=now - 400 * 86400, statuses=("running",)))
        assert [e.request_id for e in since.entries] == [f"r{i}" for i in range(8)]

    def test_index_pages_newest_first_through_a_cursor(self) -> None:
        from faasflow.engine.index import IndexQuery

        index = self._index()
        for i in range(5):
            index.opened(self._entry(f"r{i}", 1000.0 + i))
        first = index.page(IndexQuery(limit=3))
        assert [e.request_id for e in first.entries] == ["r4", "r3", "r2"]
        rest = index.page(IndexQuery(limit=3, cursor=first.next))
        assert [e.request_id for e in rest.entries] == ["r1", "r0"]
        assert rest.next is None

    def test_index_cursor_is_stable_while_requests_are_added(self) -> None:
        from faasflow.engine.index import IndexQuery

        index = self._index()
        for i in range(4):
            index.opened(self._entry(f"old{i}", 1000.0 + i))
        first = index.page(IndexQuery(limit=2))
        index.opened(self._entry("newer", 2000.0))
        rest = index.page(IndexQuery(limit=10, cursor=first.next))
        assert [e.request_id for e in rest.entries] == ["old1", "old0"]

    def test_index_end_moves_a_request_to_its_status(self) -> None:
        from faasflow.engine.index import IndexQuery

        index = self._index()
        index.opened(self._entry("r", 1000.0))
        index.ended(self._entry("r", 1000.0, "failure", ended=1001.0, node="0_1_a",
                                error="boom"))
        assert index.page(IndexQuery(statuses=("running",))).entries == []
        (entry,) = index.page(IndexQuery(statuses=("failure",))).entries
        assert (entry.request_id, entry.node, entry.error) == ("r", "0_1_a", "boom")
        assert [e.request_id for e in index.page(IndexQuery(node="a")).entries] == ["r"]

    def test_index_late_open_does_not_undo_an_end(self) -> None:
        from faasflow.engine.index import IndexQuery

        index = self._index()
        index.ended(self._entry("r", 1000.0, "success", ended=1001.0))
        index.opened(self._entry("r", 1000.0))
        (entry,) = index.page(IndexQuery()).entries
        assert entry.status == "success"

    def test_index_filters_by_time_and_text(self) -> None:
        from faasflow.engine.index import IndexQuery

        index = self._index()
        index.ended(self._entry("a1", 1000.0, "failure", error="disk full"))
        index.ended(self._entry("b2", 2000.0, "success"))
        index.ended(self._entry("a3", 3000.0, "success"))
        assert [e.request_id for e in index.page(IndexQuery(since=1500.0)).entries] == [
            "a3", "b2"]
        assert [e.request_id for e in index.page(IndexQuery(until=2000.0)).entries] == [
            "b2", "a1"]
        assert [e.request_id for e in index.page(IndexQuery(text="a")).entries] == ["a3", "a1"]
        assert [e.request_id for e in index.page(IndexQuery(text="DISK")).entries] == ["a1"]

    def test_index_filters_by_definition_hash(self) -> None:
        from faasflow.engine.index import IndexQuery

        old, new = "a" * 64, "b" * 64
        index = self._index()
        index.opened(self._entry("before", 1000.0, definition=old))
        index.opened(self._entry("after", 2000.0, definition=new))
        index.ended(self._entry("before", 1000.0, "failure", node="0_1_x", error="e"))
        assert [e.request_id for e in index.page(IndexQuery(definition=old)).entries] == [
            "before"]
        assert [e.request_id for e in index.page(
            IndexQuery(definition=new, statuses=("running",))).entries] == ["after"]
        assert index.page(IndexQuery(definition=old, node="x")).entries[0].definition == old
        assert index.page(IndexQuery(definition=new, node="x")).entries == []

    def test_index_remove_leaves_no_key_behind(self) -> None:
        index = self._index()
        index.opened(self._entry("r", 1000.0, definition="c" * 64))
        index.ended(self._entry("r", 1000.0, "failure", node="0_1_a", error="x"))
        index.remove("r")
        assert self.store.scan("") == {}


__all__ += ["RequestIndexContract"]
