"""The contract every DataStore backend passes."""

from __future__ import annotations

import random

import pytest

from faasflow.errors import KeyNotFound
from faasflow.interfaces import DataStore
from faasflow.testing.contracts._common import DIFFICULT_TEXT, unique
from faasflow.testing.contracts._keyvalue import _KeyValueContract
from faasflow.testing.contracts._workers import payload


class DataStoreContract(_KeyValueContract[DataStore]):
    """Behaviour every :class:`~faasflow.DataStore` backend must show."""

    def make_store(self) -> DataStore:
        """Return a new DataStore backend object."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store(self)")

    def value(self, text: str) -> bytes:
        return text.encode()

    def test_binary_value_round_trips(self) -> None:
        value = bytes(range(256)) * 4
        self.store.set("binary", value)
        assert self.store.get("binary") == value

    def test_unicode_text_round_trips_as_utf8(self) -> None:
        for index, text in enumerate(DIFFICULT_TEXT):
            self.store.set(f"text-{index}", text.encode())
        for index, text in enumerate(DIFFICULT_TEXT):
            assert self.store.get(f"text-{index}").decode() == text

    def test_large_value_round_trips(self) -> None:
        value = random.randbytes(self.value_size(1024 * 1024))
        self.store.set("large", value)
        assert self.store.get("large") == value

    def test_cleanup_removes_only_its_own_request(self) -> None:
        other_request = self.scoped()
        other_flow = self.scoped(self.request_id, flow_name=unique("other-flow"))
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
            assert self.store.get(f"worker-{index}") == payload(index, size)

    def test_threads_overwriting_one_key_leave_one_whole_value(self) -> None:
        size = self.value_size(256 * 1024)
        self.run_in_threads("overwrite", size)
        assert self.store.get("shared") in {payload(i, size) for i in range(self.workers)}

    def test_processes_writing_distinct_keys_all_land(self) -> None:
        size = self.value_size(64 * 1024)
        self.run_in_processes("write", size)
        for index in range(self.workers):
            assert self.store.get(f"worker-{index}") == payload(index, size)

    def test_processes_overwriting_one_key_leave_one_whole_value(self) -> None:
        size = self.value_size(256 * 1024)
        self.run_in_processes("overwrite", size)
        assert self.store.get("shared") in {payload(i, size) for i in range(self.workers)}
