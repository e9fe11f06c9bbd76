"""How the sqlite stores spend their statements: a transaction of puts is one guarded
statement, read ahead only while another thread writes; a locked transaction reads under the
file's write lock; the filesystem store deletes in one statement."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from faasflow.default_plugins.filesystem import FilesystemDataStore
from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.default_plugins.sqlitedb import Database
from faasflow.errors import KeyNotFound


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SqliteStateStore]:
    store = SqliteStateStore.from_options({"path": str(tmp_path / "s.db"), "timeout": "10"})
    yield store
    store.close()


@pytest.fixture
def data(tmp_path: Path) -> Iterator[FilesystemDataStore]:
    store = FilesystemDataStore.from_options({"path": str(tmp_path / "data")})
    yield store
    store.close()


class _Holder:
    """Holds a store's write lock (an open ``BEGIN IMMEDIATE``) from another thread."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.held = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        with self.db.transaction("test", "test"):
            self.held.set()
            self.release.wait(10)

    def __enter__(self) -> _Holder:
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


def test_a_transaction_rewriting_the_values_it_compared_succeeds(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.set("k", "v")
    # the guarded statement is judged by its row count: an upsert of the same value counts
    assert store.transaction({"k": "v"}, {"k": "v"}) is True
    assert store.get("k") == "v"


def test_a_transaction_guards_on_present_and_absent_keys_together(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.set("state", "s1")
    assert store.transaction({"claim": None, "state": "s0"}, {"claim": "c"}) is False
    assert store.transaction({"claim": None, "state": "s1"}, {"claim": "c", "n": "1"}) is True
    assert (store.get("claim"), store.get("n")) == ("c", "1")
    assert store.transaction({"claim": None, "state": "s1"}, {"claim": "again"}) is False
    assert store.get("claim") == "c"


def test_a_failing_compare_answers_without_waiting_for_another_threads_write(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.set("counter", "1")
    with _Holder(backend.db):
        started = time.monotonic()
        assert store.transaction({"counter": "0"}, {"counter": "1", "m": "x"}) is False
        assert time.monotonic() - started < 2  # the holder keeps the lock for 10 s
    with pytest.raises(KeyNotFound):
        store.get("m")


def test_a_passing_compare_waits_for_another_threads_write_then_applies(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.set("counter", "1")
    answers: list[bool] = []
    with _Holder(backend.db):
        writer = threading.Thread(
            target=lambda: answers.append(store.transaction({"counter": "1"}, {"counter": "2"}))
        )
        writer.start()
        time.sleep(0.2)
        assert answers == []  # queued behind the holder's transaction
    writer.join(10)
    assert answers == [True]
    assert store.get("counter") == "2"


def test_a_locked_transaction_puts_and_deletes_what_decide_returns(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.set("old", "1")
    seen: list[dict[str, str | None]] = []

    def decide(values: Mapping[str, str | None]) -> dict[str, str | None]:
        seen.append(dict(values))
        return {"old": None, "new": "2", "other": "3"}

    store.locked_transaction(["old", "new"], decide)
    assert seen == [{"old": "1", "new": None}]
    assert store.scan("") == {"new": "2", "other": "3"}


def test_a_locked_transaction_that_decides_nothing_writes_nothing(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.locked_transaction(["a"], lambda values: None)
    assert store.scan("") == {}


def test_a_locked_transaction_whose_decide_raises_writes_nothing(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")

    def decide(values: Mapping[str, str | None]) -> dict[str, str | None]:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.locked_transaction(["a"], decide)
    store.set("a", "1")  # the write lock and the connection were given back
    assert store.scan("") == {"a": "1"}


def test_deleting_an_absent_value_leaves_the_others(data: FilesystemDataStore) -> None:
    store = data.scoped("f", "r")
    store.set("kept", b"1")
    store.delete("never-written")
    assert store.get("kept") == b"1"


def test_deleting_an_absent_value_does_not_wait_for_another_threads_write(
    data: FilesystemDataStore,
) -> None:
    store = data.scoped("f", "r")
    with _Holder(data.db):
        started = time.monotonic()
        store.delete("never-written")
        assert time.monotonic() - started < 2


def test_deleting_a_value_while_another_thread_writes_deletes_it(
    data: FilesystemDataStore,
) -> None:
    store = data.scoped("f", "r")
    store.set("doomed", b"1")
    with _Holder(data.db):
        deleter = threading.Thread(target=store.delete, args=("doomed",))
        deleter.start()
        time.sleep(0.2)
    deleter.join(10)
    with pytest.raises(KeyNotFound):
        store.get("doomed")


def test_with_a_pool_of_one_reads_and_writes_take_turns(tmp_path: Path) -> None:
    # the writer's connection is kept between writes only when the pool has another for
    # readers; with one, a read must not wait for it
    backend = SqliteStateStore.from_options(
        {"path": str(tmp_path / "s.db"), "pool_size": "1", "timeout": "0.5"}
    )
    store = backend.scoped("f", "r")
    try:
        for step in range(3):
            store.set("k", str(step))
            with backend.db.connection() as conn:  # the only connection, lent to a reader
                assert conn.execute("SELECT count(*) FROM faasflow_state").fetchone() == (1,)
            assert store.get("k") == str(step)
    finally:
        backend.close()


def test_close_closes_the_writers_connection(tmp_path: Path) -> None:
    backend = SqliteStateStore.from_options({"path": str(tmp_path / "s.db")})
    store = backend.scoped("f", "r")
    store.set("k", "v")
    assert backend.db.open_connections == 1
    backend.close()
    assert backend.db.open_connections == 0
    store.set("k", "w")  # opens again
    assert store.get("k") == "w"
    backend.close()
