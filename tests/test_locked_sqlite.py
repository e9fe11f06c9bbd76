"""The sqlite state store's locked transaction: its statements, a failure at each of them, a
process killed at each of them, and arrivals from several processes of several threads."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.default_plugins.sqlitedb import Database
from faasflow.default_plugins.sqlitesql import POINT_READS
from faasflow.errors import BackendError

STATE = '{"s":"running"}'
DONE = '{"p":"done"}'
HANDED = '{"p":"handed"}'


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SqliteStateStore]:
    store = SqliteStateStore.from_options({"path": str(tmp_path / "s.db"), "timeout": "10"})
    yield store
    store.close()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the connections opened from now on run, in order."""
    seen: list[str] = []
    connect = Database._connect

    def traced(self: Database) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(Database, "_connect", traced)
    return seen


def arrive(store: Any, member: str, calls: list[int] | None = None) -> None:
    """A fan-in arrival as the engine makes it: the counter, the member's key, the request's
    state and the member's marker read; the member, the counter and the marker written; an
    arrival recorded before (its answer lost) writes nothing."""
    marker, node = f"joined@{member}", f"node--{member}"

    def decide(values: Mapping[str, str | None]) -> dict[str, str] | None:
        if calls is not None:
            calls.append(1)
        if values[marker] is not None:
            return None
        count = int(values["joined"] or 0) + 1
        writes = {marker: str(count), "joined": str(count)}
        if values["state"] == STATE and values[node] == DONE:
            writes[node] = HANDED
        return writes

    store.locked_transaction(["joined", marker, "state", node], decide)


def prepared(backend: SqliteStateStore, members: int = 1) -> Any:
    store = backend.scoped("f", "r")
    store.set("state", STATE)
    for index in range(members):
        store.set(f"node--m{index}", DONE)
    return store


def test_an_arrival_is_one_read_and_one_write_between_begin_and_commit(
    backend: SqliteStateStore, statements: list[str]
) -> None:
    store = prepared(backend)
    statements.clear()
    arrive(store, "m0")
    assert [sql.split()[0] for sql in statements] == ["BEGIN", "SELECT", "INSERT", "COMMIT"]
    read = statements[1]
    assert read.count("UNION ALL") == 3 and " IN (" not in read  # four point lookups
    assert store.scan() == {
        "state": STATE, "joined": "1", "joined@m0": "1", "node--m0": HANDED,
    }


def test_more_keys_than_point_reads_are_read_as_one_list(
    backend: SqliteStateStore, statements: list[str]
) -> None:
    store = backend.scoped("f", "r")
    keys = [f"k{index}" for index in range(POINT_READS + 5)]
    for key in keys[::2]:
        store.set(key, key.upper())
    seen: list[dict[str, str | None]] = []
    statements.clear()
    store.locked_transaction(keys, lambda values: seen.append(dict(values)))
    assert seen == [{key: key.upper() if index % 2 == 0 else None
                     for index, key in enumerate(keys)}]
    assert " IN (" in statements[1] and "UNION" not in statements[1]


def test_a_key_asked_twice_is_read_once_and_decided_once(backend: SqliteStateStore) -> None:
    store = backend.scoped("f", "r")
    store.set("a", "1")
    seen: list[dict[str, str | None]] = []

    def decide(values: Mapping[str, str | None]) -> dict[str, str]:
        seen.append(dict(values))
        return {"a": "2"}

    store.locked_transaction(["a", "b", "a"], decide)
    assert seen == [{"a": "1", "b": None}]
    assert store.get("a") == "2"


def test_a_locked_transaction_of_no_keys_still_writes_its_decision(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.locked_transaction([], lambda values: {"made": str(len(values))})
    assert store.scan() == {"made": "0"}


def test_the_deletes_of_a_decision_are_one_statement(
    backend: SqliteStateStore, statements: list[str]
) -> None:
    store = backend.scoped("f", "r")
    for key in ("a", "b", "c"):
        store.set(key, "1")
    statements.clear()
    store.locked_transaction(["a"], lambda values: {"a": None, "b": None, "d": "4"})
    assert [sql.split()[0] for sql in statements] == [
        "BEGIN", "SELECT", "INSERT", "DELETE", "COMMIT",
    ]
    assert store.scan() == {"c": "1", "d": "4"}


def test_an_exception_of_decide_passes_unchanged_and_writes_nothing(
    backend: SqliteStateStore,
) -> None:
    store = prepared(backend)

    def decide(values: Mapping[str, str | None]) -> dict[str, str]:
        raise OSError("the decision's own error, not the store's")

    with pytest.raises(OSError, match="decision's own") as raised:
        store.locked_transaction(["joined"], decide)
    assert not isinstance(raised.value, BackendError)
    arrive(store, "m0")  # the lock and the connection were given back, nothing left open
    assert store.get("joined") == "1"


class _Failing:
    """A connection that fails its ``at``-th statement from now, before running it or after."""

    def __init__(self, inner: sqlite3.Connection, at: int, after: bool) -> None:
        self.inner = inner
        self.at = at
        self.after = after
        self.count = 0

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        index, self.count = self.count, self.count + 1
        if index == self.at and not self.after:
            raise sqlite3.OperationalError(f"injected before {sql.split(maxsplit=1)[0]}")
        cursor = self.inner.execute(sql, params)
        if index == self.at:
            raise sqlite3.OperationalError(f"injected after {sql.split(maxsplit=1)[0]}")
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _fail_writer_at(
    monkeypatch: pytest.MonkeyPatch, db: Database, at: int, after: bool
) -> list[_Failing]:
    take, give = db._take_writer, db._give_writer
    made: list[_Failing] = []

    def failing_take() -> tuple[Any, int]:
        conn, generation = take()
        made.append(_Failing(conn, at, after))
        return made[-1], generation

    def unwrapping_give(conn: Any, generation: int, *, broken: bool) -> None:
        give(conn.inner, generation, broken=broken)

    monkeypatch.setattr(db, "_take_writer", failing_take)
    monkeypatch.setattr(db, "_give_writer", unwrapping_give)
    return made


ARRIVAL = ["BEGIN", "SELECT", "INSERT", "COMMIT"]


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("at", range(len(ARRIVAL)), ids=ARRIVAL)
def test_a_failure_at_each_statement_of_an_arrival_then_its_redelivery_counts_it_once(
    backend: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, at: int, after: bool
) -> None:
    store = prepared(backend)
    with monkeypatch.context() as patch:
        _fail_writer_at(patch, backend.db, at, after)
        with pytest.raises(BackendError, match="injected"):
            arrive(store, "m0")
    found = store.scan()
    committed = at == ARRIVAL.index("COMMIT") and after
    if committed:  # the answer was lost, the arrival was not
        assert found["joined"] == "1" and found["node--m0"] == HANDED
    else:  # all of it rolled back
        assert found == {"state": STATE, "node--m0": DONE}
    calls: list[int] = []
    arrive(store, "m0", calls)  # the redelivery
    arrive(store, "m1")
    assert calls == [1]
    assert store.get("joined") == "2"
    assert (store.get("joined@m0"), store.get("joined@m1")) == ("1", "2")


DELETING = ["BEGIN", "SELECT", "INSERT", "DELETE", "COMMIT"]


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("at", range(len(DELETING)), ids=DELETING)
def test_a_failure_at_each_statement_of_a_decision_that_deletes_leaves_all_or_nothing(
    backend: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, at: int, after: bool
) -> None:
    store = backend.scoped("f", "r")
    store.set("old", "1")
    with monkeypatch.context() as patch:
        _fail_writer_at(patch, backend.db, at, after)
        with pytest.raises(BackendError, match="injected"):
            store.locked_transaction(["old"], lambda values: {"old": None, "new": "2"})
    before, done = {"old": "1"}, {"new": "2"}
    assert store.scan() == (done if at == DELETING.index("COMMIT") and after else before)


_CRASHING = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    from faasflow.default_plugins.sqlite import SqliteStateStore
    from faasflow.default_plugins.sqlitedb import Database
    from test_locked_sqlite import arrive

    point = sys.argv[1]
    connect = Database._connect

    def killing(self):
        conn = connect(self)

        def trace(sql):  # called as a statement starts: the process dies before it runs
            if sql.startswith(point):
                os._exit(9)

        conn.set_trace_callback(trace)
        return conn

    Database._connect = killing
    store = SqliteStateStore.from_options({{"path": {path!r}}}).scoped("f", "r")
    arrive(store, "m0")
    os._exit(9 if point == "RETURN" else 0)
    """
)


@pytest.mark.parametrize("point", ["BEGIN", "SELECT", "INSERT", "COMMIT", "RETURN"])
def test_a_process_killed_at_each_point_of_an_arrival_then_its_redelivery_counts_it_once(
    backend: SqliteStateStore, tmp_path: Path, point: str
) -> None:
    store = prepared(backend)
    script = _CRASHING.format(tests=str(Path(__file__).parent), path=str(backend.db.path))
    done = subprocess.run(
        [sys.executable, "-c", script, point], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    found = store.scan()
    if point == "RETURN":  # killed after the call returned: the arrival is there
        assert found["joined"] == "1" and found["node--m0"] == HANDED
    else:
        assert found == {"state": STATE, "node--m0": DONE}
    calls: list[int] = []
    arrive(store, "m0", calls)
    assert calls == [1]
    assert store.scan() == {"state": STATE, "joined": "1", "joined@m0": "1", "node--m0": HANDED}


_ARRIVING = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {tests!r})
    from faasflow.default_plugins.sqlite import SqliteStateStore
    from test_locked_sqlite import arrive

    worker = sys.argv[1]
    backend = SqliteStateStore.from_options({{"path": {path!r}}})

    def work(thread):
        store = backend.scoped("f", "r")
        for index in range({each}):
            arrive(store, f"{{worker}}-{{thread}}-{{index}}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range({threads})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    backend.close()
    """
)


def test_processes_of_several_threads_arriving_together_give_each_position_once(
    backend: SqliteStateStore,
) -> None:
    store = backend.scoped("f", "r")
    store.set("state", STATE)
    processes, threads, each = 2, 4, 25
    script = _ARRIVING.format(
        tests=str(Path(__file__).parent), path=str(backend.db.path), threads=threads, each=each
    )
    running = [
        subprocess.Popen([sys.executable, "-c", script, f"p{index}"], env=os.environ.copy())
        for index in range(processes)
    ]
    for child in running:
        assert child.wait(120) == 0
    found = store.scan("joined")
    total = processes * threads * each
    assert found.pop("joined") == str(total)
    assert sorted(int(value) for value in found.values()) == list(range(1, total + 1))
