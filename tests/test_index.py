"""The request index through ``GET /flow`` of a real server: paging, filters, retention.

Most tests fill the index directly through a :class:`RecordBook` on the same sqlite file the
served app uses (fast and with chosen times); a few run real requests through the flow.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.default_plugins.memory import MemoryDataStore
from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.engine import index as index_module
from faasflow.engine import records as records_module
from faasflow.engine.index import IndexEntry
from faasflow.engine.records import NodeRun, RecordBook, RequestRecord
from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings

FLOW = "history"
T0 = 1_764_600_000.0  # 2025-12-01T14:40:00Z


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()

    def check(data: bytes) -> bytes:
        if data.startswith(b"fail"):
            raise ValueError("refused input " + data.decode())
        return data

    dag.node("first").modify(lambda data: data)
    dag.node("check").modify(check)
    dag.edge("first", "check")


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def server(tmp_path: Path, state_path: Path) -> Iterator[Server]:
    settings = Settings.from_env({
        "FAASFLOW_FLOW_NAME": FLOW,
        "FAASFLOW_STATE_STORE": "sqlite",
        "FAASFLOW_SQLITE_PATH": str(state_path),
        "FAASFLOW_DATA_STORE": "sqlite",
    })
    app = FlowApp(define, settings)
    served = serve(app).start()
    yield served
    served.close()
    app.close()


@pytest.fixture
def book(state_path: Path) -> Iterator[RecordBook]:
    states = SqliteStateStore.from_options({"path": str(state_path)})
    yield RecordBook.of(states, MemoryDataStore(), FLOW, 3600.0)
    states.close()


def add(book: RecordBook, rid: str, created: float, status: str = "success",
        node: str | None = None, error: str | None = None) -> None:
    """A request that started at ``created`` and ended with ``status``, recorded as the engine
    records it (its records entry, then the index, then the end)."""
    entry = {"status": "running", "created": created, "deadline": None, "digest": ""}
    assert book.states.create(records_module._KEY + rid, json.dumps(entry))
    assert book.index is not None
    book.index.opened(IndexEntry(rid, "running", created))
    if status == "running":
        return
    nodes = {node: NodeRun(node, created, created + 1, status="failure")} if node else {}
    assert book.close(RequestRecord(rid, FLOW, status, created, created + 1, None, error, nodes))


def page(server: Server, **params: Any) -> dict[str, Any]:
    reply = requests.get(f"{server.url}/flow", params=params, timeout=10)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def ids(doc: dict[str, Any]) -> list[str]:
    return [row["id"] for row in doc["requests"]]


def every_page(server: Server, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        doc = page(server, **params, **({"cursor": cursor} if cursor else {}))
        seen += ids(doc)
        cursor = doc["next"]
        if cursor is None:
            return seen


def test_pages_are_newest_first_and_the_last_has_no_next(server: Server, book: RecordBook
                                                         ) -> None:
    for i in range(5):
        add(book, f"r{i}", T0 + i)
    first = page(server, limit=2)
    assert ids(first) == ["r4", "r3"]
    second = page(server, limit=2, cursor=first["next"])
    assert ids(second) == ["r2", "r1"]
    last = page(server, limit=2, cursor=second["next"])
    assert ids(last) == ["r0"]
    assert last["next"] is None


def test_default_page_holds_fifty(server: Server, book: RecordBook) -> None:
    for i in range(51):
        add(book, f"r{i:02d}", T0 + i)
    doc = page(server)
    assert len(doc["requests"]) == 50
    assert doc["next"] is not None


def test_an_entry_names_status_times_failed_node_and_first_error_line(
    server: Server, book: RecordBook
) -> None:
    add(book, "bad", T0, "failure", node="check", error="boom at check\nTraceback ...")
    (row,) = page(server)["requests"]
    assert row == {"id": "bad", "flow": FLOW, "status": "failure", "created": T0,
                   "ended": T0 + 1, "failed_node": "check", "error": "boom at check",
                   "definition": ""}


def test_paging_is_stable_while_requests_are_added(server: Server, book: RecordBook) -> None:
    for i in range(6):
        add(book, f"old{i}", T0 + i)
    first = page(server, limit=3)
    for i in range(4):
        add(book, f"new{i}", T0 + 100 + i)
    rest = every_page(server, limit=3, cursor=first["next"])
    assert ids(first) + rest == [f"old{i}" for i in range(5, -1, -1)]


def test_requests_started_in_the_same_microsecond_are_each_listed_once(
    server: Server, book: RecordBook
) -> None:
    for name in ("b", "a", "c"):
        add(book, name, T0)
    assert every_page(server, limit=1) == ["a", "b", "c"]


def test_status_filter_keeps_only_that_status(server: Server, book: RecordBook) -> None:
    add(book, "ok1", T0, "success")
    add(book, "bad1", T0 + 1, "failure", error="e")
    add(book, "ok2", T0 + 2, "success")
    add(book, "live", T0 + 3, "running")
    assert ids(page(server, status="failure")) == ["bad1"]
    assert ids(page(server, status="success")) == ["ok2", "ok1"]
    assert ids(page(server, status="running")) == ["live"]


def test_status_is_repeatable_and_merges_newest_first(server: Server, book: RecordBook) -> None:
    add(book, "ok1", T0, "success")
    add(book, "bad1", T0 + 1, "failure", error="e")
    add(book, "stop1", T0 + 2, "stopped")
    add(book, "ok2", T0 + 3, "success")
    assert every_page(server, status=["failure", "stopped"], limit=1) == ["stop1", "bad1"]


def test_an_ended_request_leaves_the_running_status(server: Server, book: RecordBook) -> None:
    add(book, "r", T0, "running")
    assert ids(page(server, status="running")) == ["r"]
    assert book.close(RequestRecord("r", FLOW, "success", T0, T0 + 1))
    assert ids(page(server, status="running")) == []
    assert ids(page(server, status="success")) == ["r"]


def test_since_and_until_bound_the_start_time_inclusively(server: Server, book: RecordBook
                                                          ) -> None:
    for i in range(5):
        add(book, f"r{i}", T0 + 60 * i)
    assert ids(page(server, since=T0 + 60, until=T0 + 180)) == ["r3", "r2", "r1"]


def test_since_takes_iso_8601(server: Server, book: RecordBook) -> None:
    add(book, "before", T0 - 1)
    add(book, "after", T0)
    assert ids(page(server, since="2025-12-01T14:40:00Z")) == ["after"]
    assert ids(page(server, until="2025-12-01T14:39:59.5")) == ["before"]


def test_node_filter_keeps_requests_failed_at_that_node(server: Server, book: RecordBook) -> None:
    add(book, "at-a", T0, "failure", node="a", error="x")
    add(book, "at-b", T0 + 1, "failure", node="b", error="y")
    add(book, "fine", T0 + 2)
    assert ids(page(server, node="a")) == ["at-a"]
    assert ids(page(server, node="b", status="failure")) == ["at-b"]
    assert ids(page(server, node="b", status="success")) == []


def test_q_matches_an_id_prefix_or_error_text(server: Server, book: RecordBook) -> None:
    add(book, "order-17", T0)
    add(book, "other", T0 + 1, "failure", error="Payment Declined by bank")
    add(book, "order-18", T0 + 2, "failure", error="timeout")
    assert ids(page(server, q="order-")) == ["order-18", "order-17"]
    assert ids(page(server, q="declined")) == ["other"]


def test_a_q_search_answers_after_its_budget_with_a_cursor_to_go_on(
    server: Server, book: RecordBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "SCAN_BUDGET", 3)  # the app runs in this process
    add(book, "needle", T0)
    for i in range(5):
        add(book, f"hay{i}", T0 + 1 + i)
    first = page(server, q="needle")
    assert ids(first) == []
    assert first["next"] is not None
    assert every_page(server, q="needle") == ["needle"]


def test_retention_removes_requests_from_the_index(server: Server, book: RecordBook,
                                                   state_path: Path) -> None:
    add(book, "kept", time.time())
    add(book, "expired", T0, "failure", node="check", error="x")  # ended more than 1 h ago
    settings = Settings.from_env({"FAASFLOW_FLOW_NAME": FLOW, "FAASFLOW_STATE_STORE": "sqlite",
                                  "FAASFLOW_SQLITE_PATH": str(state_path),
                                  "FAASFLOW_RECORD_RETENTION": "3600"})
    app = FlowApp(define, settings)
    try:
        assert app.sweep() >= 1
    finally:
        app.close()
    assert ids(page(server)) == ["kept"]
    assert ids(page(server, node="check")) == []
    assert book.index is not None
    assert not [k for k, _ in book.states.scan_page("ix/") if "expired" in k]


def test_real_requests_are_indexed_with_their_outcome(server: Server) -> None:
    for body in (b"fine", b"fail now"):
        reply = requests.post(server.url, data=body, timeout=30,
                              headers={"X-Faas-Flow-Wait": "30"})
        assert reply.status_code in (200, 500), reply.text
    rows = page(server)["requests"]
    assert [row["status"] for row in rows] == ["failure", "success"]
    assert rows[0]["failed_node"] == "0_2_check"
    assert "refused input fail now" in rows[0]["error"]
    assert ids(page(server, status="success")) == [rows[1]["id"]]
    assert ids(page(server, node="check")) == ids(page(server, node="0_2_check")) == [rows[0]["id"]]
    assert rows[0]["definition"] == rows[1]["definition"] != ""
    assert len(page(server, definition=rows[0]["definition"])["requests"]) == 2
    assert ids(page(server, definition=rows[0]["definition"], status="success")) == [rows[1]["id"]]
    assert ids(page(server, definition="0" * 64)) == []


@pytest.mark.parametrize(
    ("params", "named", "fix"),
    [
        ({"limit": "0"}, "limit", "1 to 1000"),
        ({"limit": "1001"}, "limit", "1 to 1000"),
        ({"limit": "ten"}, "limit", "whole number"),
        ({"status": "failed"}, "status", "running, success, failure, stopped"),
        ({"since": "yesterday"}, "since", "ISO 8601"),
        ({"until": "-5"}, "until", "epoch seconds"),
        ({"cursor": "bm9wZQ"}, "cursor", "`next`"),
        ({"since": str(T0 + 1), "until": str(T0)}, "since", "swap"),
        ({"sort": "asc"}, "sort", "status, limit, cursor"),
        ({"limit": ["1", "2"]}, "limit", "give it once"),
        ({"definition": "abc"}, "definition", "64 hex digits"),
    ],
)
def test_a_bad_parameter_is_400_naming_it_and_the_fix(
    server: Server, params: dict[str, Any], named: str, fix: str
) -> None:
    reply = requests.get(f"{server.url}/flow", params=params, timeout=10)
    assert reply.status_code == 400
    assert f"query parameter {named!r}" in reply.text
    assert fix in reply.text


def test_a_cursor_is_opaque_base64_of_a_position(server: Server, book: RecordBook) -> None:
    add(book, "a", T0)
    add(book, "b", T0 + 1)
    cursor = page(server, limit=1)["next"]
    position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    assert position.endswith("/b")
