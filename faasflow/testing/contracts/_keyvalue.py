"""The behaviour StateStore and DataStore backends share: one key, one value, one namespace per
request. Each contract says how a text becomes one of its values (``str`` or ``bytes``)."""

from __future__ import annotations

from typing import Any

import pytest

from faasflow.errors import KeyNotFound
from faasflow.testing.contracts._common import DIFFICULT_KEYS, unique
from faasflow.testing.contracts._stores import S, _StoreContract


class _KeyValueContract(_StoreContract[S]):
    """Tests written once for both store kinds."""

    def value(self, text: str) -> Any:
        """``text`` as a value of this store kind; the contract implements this."""
        raise NotImplementedError(f"{type(self).__name__} must implement value(self, text)")

    def test_get_of_missing_key_raises_key_not_found(self) -> None:
        with pytest.raises(KeyNotFound) as info:
            self.store.get("absent")
        assert info.value.key == "absent"

    def test_set_then_get_round_trips(self) -> None:
        self.store.set("key", self.value("value"))
        assert self.store.get("key") == self.value("value")

    def test_set_overwrites(self) -> None:
        # a shorter second value: a store that writes in place must not keep the first's tail
        self.store.set("key", self.value("a much longer first value"))
        self.store.set("key", self.value("short"))
        assert self.store.get("key") == self.value("short")

    def test_empty_value_round_trips(self) -> None:
        self.store.set("empty", self.value(""))
        assert self.store.get("empty") == self.value("")

    def test_difficult_keys_round_trip(self) -> None:
        for key in DIFFICULT_KEYS:
            self.store.set(key, self.value(f"value of {key}"))
        for key in DIFFICULT_KEYS:
            assert self.store.get(key) == self.value(f"value of {key}")

    def test_delete_removes_key(self) -> None:
        self.store.set("key", self.value("value"))
        self.store.delete("key")
        with pytest.raises(KeyNotFound):
            self.store.get("key")

    def test_delete_of_missing_key_is_not_an_error(self) -> None:
        self.store.delete("absent")
        with pytest.raises(KeyNotFound):
            self.store.get("absent")

    def test_requests_are_isolated(self) -> None:
        other = self.scoped()
        self.store.set("key", self.value("mine"))
        other.set("key", self.value("theirs"))
        assert self.store.get("key") == self.value("mine")
        assert other.get("key") == self.value("theirs")

    def test_flows_are_isolated(self) -> None:
        other = self.scoped(self.request_id, flow_name=unique("other-flow"))
        self.store.set("key", self.value("mine"))
        with pytest.raises(KeyNotFound):
            other.get("key")

    def test_handles_of_one_request_share_values(self) -> None:
        twin = self.backend.scoped(self.flow_name, self.request_id)
        self.store.set("key", self.value("value"))
        assert twin.get("key") == self.value("value")

    def test_a_shareable_handle_holds_nothing_but_its_namespace(self) -> None:
        # the engine shares one handle between a request's iterations on every thread when
        # the backend says so: any other per-handle state would be shared by accident
        if not self.backend.handles_shareable:
            pytest.skip(f"{type(self.backend).__name__} does not share its handles")
        own = {"flow_name", "request_id", "_namespace"}
        handle = vars(self.store)
        backend = vars(self.backend)
        assert set(handle) - own == set(backend) - own
        for name in set(handle) - own:
            assert handle[name] is backend[name], f"the handle has its own {name}"
        assert self.store.namespace.endswith(f"/{self.request_id}/")
