"""The contract for ``StateStore.scan_page`` and the request index built on it."""

from __future__ import annotations

import time
from typing import Any

from faasflow.interfaces import StateStore
from faasflow.testing.contracts._stores import _StoreContract


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
