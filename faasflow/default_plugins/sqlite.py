"""``sqlite``: a StateStore and a DataStore in a SQLite file, shared by every process of one
machine.

Every operation is one SQL statement (or one ``BEGIN IMMEDIATE`` transaction), so it is atomic
across processes: compare-and-swap is ``UPDATE ... WHERE key = ? AND value = ?`` and create-if-
absent is ``INSERT OR IGNORE``, both judged by the row count. The database runs in WAL mode
(readers never block the writer) with a busy timeout. Each process keeps a bounded pool of
connections, lent to one thread for one operation at a time (a connection must never be used
by two threads at once, nor cross a ``fork``); :meth:`SqliteStateStore.transaction` is one
``BEGIN IMMEDIATE`` transaction, so it is atomic across keys and processes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from faasflow.backends import Backend
from faasflow.default_plugins.sqlitedb import DEFAULT_POOL_SIZE, Database
from faasflow.default_plugins.sqlitesql import (
    UPSERT,
    compare_sql,
    guarded_sql,
    key_range,
    matches,
    overlap,
    upsert_sql,
)
from faasflow.errors import CompareFailed, ConfigurationError, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Decide, Options, StateStore

__all__ = ["Database", "SqliteDataStore", "SqliteStateStore"]

DEFAULT_STATE_PATH = ".faasflow/state.db"
DEFAULT_DATA_PATH = ".faasflow/data.db"
DEFAULT_TIMEOUT = 30.0

_STATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS faasflow_state"
    " (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID"
)
# Large blobs belong in a rowid table (WITHOUT ROWID suits small rows only).
_DATA_TABLE = (
    "CREATE TABLE IF NOT EXISTS faasflow_data (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
)


def _timeout(options: Options) -> float:
    raw = options.get("timeout", "")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"FAASFLOW_SQLITE_TIMEOUT={raw!r} is not a number of seconds"
        ) from None
    if value <= 0:
        raise ConfigurationError(f"FAASFLOW_SQLITE_TIMEOUT={raw!r} must be positive")
    return value


def _pool_size(options: Options) -> int:
    raw = options.get("pool_size", "")
    if not raw:
        return DEFAULT_POOL_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(
            f"FAASFLOW_SQLITE_POOL_SIZE={raw!r} must be a whole number of connections, at least 1"
        )
    return value


def _database(options: Options, default_path: str, schema: str) -> Database:
    path = options.get("path") or default_path
    return Database(path, schema, timeout=_timeout(options), pool_size=_pool_size(options))


_STATE = "sqlite state store"


@attrs.define(eq=False, slots=False)
class SqliteStateStore(StateStore):
    """StateStore in the ``faasflow_state`` table of a SQLite file."""

    atomic_transactions = True
    locked_transactions = True
    handles_shareable = True  # a scoped handle holds only its namespace

    db: Database

    @classmethod
    def from_options(cls, options: Options) -> SqliteStateStore:
        """Options: ``path`` (default ``.faasflow/state.db``), ``timeout`` (seconds),
        ``pool_size`` (connections per process)."""
        return cls(_database(options, DEFAULT_STATE_PATH, _STATE_TABLE))

    @property
    def _where(self) -> str:
        return f"sqlite state store {self.db.path} ({self.namespace})"

    def _execute(self, operation: str, sql: str, *params: str) -> tuple[list[Any], int]:
        return self.db.execute(operation, "sqlite state store", sql, params)

    def _query(self, operation: str, sql: str, *params: str) -> list[Any]:
        return self.db.query(operation, "sqlite state store", sql, params)

    def set(self, key: str, value: str) -> None:
        self._execute("set", UPSERT, self._namespace + key, value)

    def get(self, key: str) -> str:
        rows = self._query(
            "get", "SELECT value FROM faasflow_state WHERE key = ?", self._namespace + key
        )
        if not rows:
            raise KeyNotFound(key, self._where)
        return str(rows[0][0])

    def update(self, key: str, old_value: str, new_value: str) -> None:
        full = self._namespace + key
        _, changed = self._execute(
            "update",
            "UPDATE faasflow_state SET value = ? WHERE key = ? AND value = ?",
            new_value,
            full,
            old_value,
        )
        if changed == 1:
            return
        exists = self._query("update", "SELECT 1 FROM faasflow_state WHERE key = ?", full)
        if not exists:
            raise KeyNotFound(key, self._where)
        raise CompareFailed(key, old_value, self._where)

    def create(self, key: str, value: str) -> bool:
        _, changed = self._execute(
            "create",
            "INSERT OR IGNORE INTO faasflow_state (key, value) VALUES (?, ?)",
            self._namespace + key,
            value,
        )
        return changed == 1

    def delete(self, key: str) -> None:
        self._execute("delete", "DELETE FROM faasflow_state WHERE key = ?", self._namespace + key)

    def scan(self, prefix: str = "") -> dict[str, str]:
        low, high = key_range(self.namespace + prefix)
        if high is None:
            rows = self._query(
                "scan", "SELECT key, value FROM faasflow_state WHERE key >= ?", low
            )
        else:
            rows = self._query(
                "scan",
                "SELECT key, value FROM faasflow_state WHERE key >= ? AND key < ?",
                low,
                high,
            )
        skip = len(self.namespace)
        return {str(k)[skip:]: str(v) for k, v in rows if str(k).startswith(low)}

    def scan_page(
        self, prefix: str, start_after: str = "", limit: int = 100, end_before: str | None = None
    ) -> list[tuple[str, str]]:
        low, high = key_range(self.namespace + prefix)
        if end_before is not None:
            end = self.namespace + end_before
            high = end if high is None else min(high, end)
        after = self.namespace + start_after
        # one range of the primary key, however many keys the prefix holds
        bound, op = (after, ">") if after >= low else (low, ">=")
        sql = f"SELECT key, value FROM faasflow_state WHERE key {op} ?"
        params: tuple[object, ...] = (bound,)
        if high is not None:
            sql, params = sql + " AND key < ?", (*params, high)
        rows = self.db.query(
            "scan_page", "sqlite state store", sql + " ORDER BY key LIMIT ?",
            (*params, max(limit, 0)),
        )
        skip = len(self.namespace)
        return [(str(k)[skip:], str(v)) for k, v in rows]

    def cleanup(self) -> None:
        low, high = key_range(self.namespace)
        assert high is not None  # a namespace ends with "/"
        self._execute(
            "cleanup", "DELETE FROM faasflow_state WHERE key >= ? AND key < ?", low, high
        )

    def transaction(
        self,
        compare: Mapping[str, str | None],
        put: Mapping[str, str] = {},
        delete: Iterable[str] = (),
    ) -> bool:
        ns = self._namespace
        if put and not delete:
            return self._guarded_put(ns, compare, put)
        checks = {ns + key: expected for key, expected in compare.items()}
        writes = [(ns + key, value) for key, value in put.items()]
        doomed = [(ns + key,) for key in delete]
        overlap(put, doomed, len(ns))
        if checks and self.db.writing and not self._compare_now(checks):
            return False
        with self.db.transaction("transaction", _STATE) as conn:
            if checks and not matches(
                conn.execute(compare_sql(len(checks)), tuple(checks)).fetchall(), checks
            ):
                return False
            if writes:
                conn.executemany(UPSERT, writes)
            if doomed:
                conn.executemany("DELETE FROM faasflow_state WHERE key = ?", doomed)
        return True

    def _compare_now(self, checks: Mapping[str, str | None]) -> bool:
        """Whether the compares hold now, read without the write lock. A compare that fails now
        fails as well as it would under the lock (one statement reads one snapshot): a
        transaction answers without queueing for the write lock another thread holds. A
        fan-in's counter fails its first compare whenever another member moved it meanwhile.
        With the lock free the read would only be paid twice."""
        sql = compare_sql(len(checks))
        return matches(self.db.query("transaction", _STATE, sql, tuple(checks)), checks)

    def _guarded_put(
        self, ns: str, compare: Mapping[str, str | None], put: Mapping[str, str]
    ) -> bool:
        """Puts under compares as one statement: its guard and its writes are one atomic step
        (a writing statement takes the file's write lock before it reads), and one statement is
        one trip into SQLite where a BEGIN ... COMMIT is five. Each trip gives up the GIL, and
        getting it back behind a busy thread can take a switch interval, all while this thread
        holds the process's write lock. Its parameters are built in one pass (a chain step's
        claim is this call: each microsecond here is one of every step)."""
        if compare and self.db.writing and not self._compare_now(
            {ns + key: expected for key, expected in compare.items()}
        ):
            return False
        params: list[str] = []
        for key, value in put.items():
            params += (ns + key, value)
        absent: list[str] = []
        present = 0
        for key, expected in compare.items():
            if expected is None:
                absent.append(ns + key)
            else:
                params += (ns + key, expected)
                present += 1
        params += absent
        sql = guarded_sql(present, len(absent), len(put))
        return self.db.execute("transaction", _STATE, sql, params)[1] > 0

    def locked_transaction(self, keys: Iterable[str], decide: Decide) -> None:
        ns = self._namespace
        wanted = list(dict.fromkeys(keys))
        full = [ns + key for key in wanted]
        skip = len(ns)

        # BEGIN IMMEDIATE before the read: the write lock of the file, so no other process
        # writes in between either and decide is called once. Of its four trips into SQLite
        # the BEGIN and COMMIT cost ~6 us; the rest is SQLite's work on the rows, which a
        # read then one write guarded by every value read pays twice (measured 15% slower),
        # and one statement calling decide as an SQL function paid again in JSON.
        def body(conn: sqlite3.Connection) -> None:
            values: dict[str, str | None] = dict.fromkeys(wanted)
            for key, value in conn.execute(compare_sql(len(full)), full).fetchall():
                values[key[skip:]] = value
            writes = decide(values)
            if writes:
                _write(conn, ns, writes)

        self.db.locked("locked_transaction", _STATE, body)

    def increment(self, key: str, by: int = 1) -> int:
        full = self._namespace + key
        with self.db.transaction("increment", "sqlite state store") as conn:
            row = conn.execute("SELECT value FROM faasflow_state WHERE key = ?", (full,)).fetchone()
            value = (0 if row is None else int(row[0])) + by
            conn.execute(UPSERT, (full, str(value)))
        return value

    def close(self) -> None:
        self.db.close()


def _write(conn: sqlite3.Connection, ns: str, writes: Mapping[str, str | None]) -> None:
    """A decision's puts in one statement and its deletes (``None``) in another."""
    params: list[str] = []
    doomed: list[str] = []
    for key, value in writes.items():
        if value is None:
            doomed.append(ns + key)
        else:
            params += (ns + key, value)
    if params:
        conn.execute(upsert_sql(len(params) // 2), params)
    if doomed:
        conn.execute(
            f"DELETE FROM faasflow_state WHERE key IN ({', '.join('?' * len(doomed))})", doomed
        )


@attrs.define(eq=False, slots=False)
class SqliteDataStore(DataStore):
    """DataStore in the ``faasflow_data`` table of a SQLite file."""

    handles_shareable = True  # a scoped handle holds only its namespace

    db: Database

    @classmethod
    def from_options(cls, options: Options) -> SqliteDataStore:
        """Options: ``path`` (default ``.faasflow/data.db``), ``timeout`` (seconds),
        ``pool_size`` (connections per process)."""
        return cls(_database(options, DEFAULT_DATA_PATH, _DATA_TABLE))

    def _execute(self, operation: str, sql: str, *params: object) -> tuple[list[Any], int]:
        return self.db.execute(operation, "sqlite data store", sql, params)

    def _query(self, operation: str, sql: str, *params: object) -> list[Any]:
        return self.db.query(operation, "sqlite data store", sql, params)

    def set(self, key: str, value: bytes) -> None:
        self._execute(
            "set",
            "INSERT INTO faasflow_data (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            self._namespace + key,
            bytes(value),
        )

    def get(self, key: str) -> bytes:
        rows = self._query(
            "get", "SELECT value FROM faasflow_data WHERE key = ?", self._namespace + key
        )
        if not rows:
            raise KeyNotFound(key, f"sqlite data store {self.db.path} ({self.namespace})")
        return bytes(rows[0][0])

    def delete(self, key: str) -> None:
        self._execute("delete", "DELETE FROM faasflow_data WHERE key = ?", self._namespace + key)

    def cleanup(self) -> None:
        low, high = key_range(self.namespace)
        self._execute("cleanup", "DELETE FROM faasflow_data WHERE key >= ? AND key < ?", low, high)

    def close(self) -> None:
        self.db.close()


_OPTIONS = {
    "timeout": f"seconds a writer waits for the database lock (default {DEFAULT_TIMEOUT:g})",
    "pool_size": (
        f"connections each process keeps open to the file, at most (default {DEFAULT_POOL_SIZE})"
    ),
}


@hookimpl
def faasflow_state_stores() -> Iterable[Backend]:
    yield Backend(
        "sqlite",
        SqliteStateStore.from_options,
        summary="SQLite file shared by every process of one machine (atomic CAS, WAL mode).",
        options={
            "path": f"database file, created with its directories (default {DEFAULT_STATE_PATH})",
            **_OPTIONS,
        },
        shared="host",
    )


@hookimpl
def faasflow_data_stores() -> Iterable[Backend]:
    yield Backend(
        "sqlite",
        SqliteDataStore.from_options,
        summary="SQLite file shared by every process of one machine.",
        options={
            "path": (
                f"database file (default {DEFAULT_DATA_PATH}); may be the state store's file"
            ),
            **_OPTIONS,
        },
        shared="host",
    )
