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

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from faasflow.backends import Backend
from faasflow.errors import BackendError, CompareFailed, ConfigurationError, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Options, StateStore

__all__ = ["Database", "SqliteDataStore", "SqliteStateStore"]

DEFAULT_STATE_PATH = ".faasflow/state.db"
DEFAULT_DATA_PATH = ".faasflow/data.db"
DEFAULT_TIMEOUT = 30.0
DEFAULT_POOL_SIZE = 8

_STATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS faasflow_state"
    " (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID"
)
# Large blobs belong in a rowid table (WITHOUT ROWID suits small rows only).
_DATA_TABLE = (
    "CREATE TABLE IF NOT EXISTS faasflow_data (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
)


class Database:
    """One SQLite file and a bounded pool of connections to it, per process.

    A connection is taken from the pool for one operation (one statement or one transaction)
    and given back right after, so a process holds at most ``pool_size`` connections however
    many threads it runs; a thread that finds every connection busy waits for one. The pool
    belongs to the process that filled it: after a ``fork`` the child starts an empty one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: str,
        *,
        timeout: float,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self.path = Path(path)
        self.schema = schema
        self.timeout = timeout
        self.pool_size = pool_size
        self._available = threading.Condition(threading.Lock())
        self._pid = os.getpid()
        self._idle: list[sqlite3.Connection] = []
        self._open = 0  # connections of this process, idle or lent out
        self._generation = 0  # bumped by close(): connections lent before it are not kept

    @property
    def open_connections(self) -> int:
        """Connections this process holds (idle or in use)."""
        return self._open if self._pid == os.getpid() else 0

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a connection for one operation (opening one when the pool is not full, waiting
        for one when it is) and take it back afterwards."""
        conn, generation = self._acquire()
        try:
            yield conn
        except BaseException:
            self._release(conn, generation, broken=conn.in_transaction)
            raise
        self._release(conn, generation, broken=False)

    def _acquire(self) -> tuple[sqlite3.Connection, int]:
        deadline = time.monotonic() + self.timeout
        with self._available:
            if self._pid != os.getpid():
                # Connections inherited through fork are never used or closed in the child
                # (SQLite forbids both); they are simply left behind.
                self._pid, self._idle, self._open = os.getpid(), [], 0
            while not self._idle and self._open >= self.pool_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendError(
                        "sqlite",
                        "connect",
                        str(self.path),
                        f"all {self.pool_size} connections stayed busy for {self.timeout:g} s "
                        "(raise FAASFLOW_SQLITE_POOL_SIZE or FAASFLOW_SQLITE_TIMEOUT)",
                    )
                self._available.wait(remaining)
            generation = self._generation
            if self._idle:
                return self._idle.pop(), generation
            self._open += 1
        try:
            return self._connect_retrying(), generation
        except BaseException:
            with self._available:
                self._open -= 1
                self._available.notify()
            raise

    def _release(self, conn: sqlite3.Connection, generation: int, *, broken: bool) -> None:
        with self._available:
            if self._pid != os.getpid():
                return
            keep = not broken and generation == self._generation
            if keep:
                self._idle.append(conn)
            else:
                self._open -= 1
            self._available.notify()
        if not keep:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _connect_retrying(self) -> sqlite3.Connection:
        with self.errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + self.timeout
            delay = 0.005
            while True:
                try:
                    return self._connect()
                except sqlite3.OperationalError as exc:
                    # Switching to WAL while another process opens the same new file can
                    # report "locked" without waiting on the busy handler; try again.
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, 0.1)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(self.schema)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def errors(self, operation: str, backend: str = "sqlite") -> Iterator[None]:
        """Turn SQLite and file-system errors into a :class:`BackendError` naming the file."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(backend, operation, str(self.path), exc) from exc

    def execute(
        self, operation: str, backend: str, sql: str, params: Sequence[object]
    ) -> tuple[list[Any], int]:
        """Run one statement on a pooled connection; return its rows and its row count."""
        with self.errors(operation, backend), self.connection() as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall(), cursor.rowcount

    @contextlib.contextmanager
    def transaction(self, operation: str, backend: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: a write transaction that holds the lock from its
        first statement, so a read-modify-write inside it cannot interleave with another."""
        with self.errors(operation, backend), self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close this process's idle connections; those lent out close when given back."""
        with self._available:
            if self._pid != os.getpid():
                return
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._generation += 1
            self._available.notify_all()
        for conn in idle:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def _range(prefix: str) -> tuple[str, str | None]:
    """Bounds of the keys starting with ``prefix`` (so a scan is one index range)."""
    last = prefix[-1] if prefix else ""
    if not prefix or ord(last) >= 0x10FFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(ord(last) + 1)


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


def _overlap(put: Mapping[str, str], doomed: Sequence[tuple[str]], skip: int) -> None:
    both = set(put) & {full[skip:] for (full,) in doomed}
    if both:
        raise ValueError(f"transaction both puts and deletes {sorted(both)}; choose one per key")


@attrs.define(eq=False, slots=False)
class SqliteStateStore(StateStore):
    """StateStore in the ``faasflow_state`` table of a SQLite file."""

    atomic_transactions = True

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

    def set(self, key: str, value: str) -> None:
        self._execute(
            "set",
            "INSERT INTO faasflow_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            self.namespace + key,
            value,
        )

    def get(self, key: str) -> str:
        rows, _ = self._execute(
            "get", "SELECT value FROM faasflow_state WHERE key = ?", self.namespace + key
        )
        if not rows:
            raise KeyNotFound(key, self._where)
        return str(rows[0][0])

    def update(self, key: str, old_value: str, new_value: str) -> None:
        full = self.namespace + key
        _, changed = self._execute(
            "update",
            "UPDATE faasflow_state SET value = ? WHERE key = ? AND value = ?",
            new_value,
            full,
            old_value,
        )
        if changed == 1:
            return
        exists, _ = self._execute("update", "SELECT 1 FROM faasflow_state WHERE key = ?", full)
        if not exists:
            raise KeyNotFound(key, self._where)
        raise CompareFailed(key, old_value, self._where)

    def create(self, key: str, value: str) -> bool:
        _, changed = self._execute(
            "create",
            "INSERT OR IGNORE INTO faasflow_state (key, value) VALUES (?, ?)",
            self.namespace + key,
            value,
        )
        return changed == 1

    def delete(self, key: str) -> None:
        self._execute("delete", "DELETE FROM faasflow_state WHERE key = ?", self.namespace + key)

    def scan(self, prefix: str = "") -> dict[str, str]:
        low, high = _range(self.namespace + prefix)
        if high is None:
            rows, _ = self._execute(
                "scan", "SELECT key, value FROM faasflow_state WHERE key >= ?", low
            )
        else:
            rows, _ = self._execute(
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
        low, high = _range(self.namespace + prefix)
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
        rows, _ = self.db.execute(
            "scan_page", "sqlite state store", sql + " ORDER BY key LIMIT ?",
            (*params, max(limit, 0)),
        )
        skip = len(self.namespace)
        return [(str(k)[skip:], str(v)) for k, v in rows]

    def cleanup(self) -> None:
        low, high = _range(self.namespace)
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
        ns = self.namespace
        checks = [(ns + key, expected) for key, expected in compare.items()]
        writes = [(ns + key, value) for key, value in put.items()]
        doomed = [(ns + key,) for key in delete]
        _overlap(put, doomed, len(ns))
        with self.db.transaction("transaction", "sqlite state store") as conn:
            for full, expected in checks:
                row = conn.execute(
                    "SELECT value FROM faasflow_state WHERE key = ?", (full,)
                ).fetchone()
                if (None if row is None else str(row[0])) != expected:
                    return False
            conn.executemany(
                "INSERT INTO faasflow_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                writes,
            )
            conn.executemany("DELETE FROM faasflow_state WHERE key = ?", doomed)
        return True

    def increment(self, key: str, by: int = 1) -> int:
        full = self.namespace + key
        with self.db.transaction("increment", "sqlite state store") as conn:
            row = conn.execute("SELECT value FROM faasflow_state WHERE key = ?", (full,)).fetchone()
            value = (0 if row is None else int(row[0])) + by
            conn.execute(
                "INSERT INTO faasflow_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (full, str(value)),
            )
        return value

    def close(self) -> None:
        self.db.close()


@attrs.define(eq=False, slots=False)
class SqliteDataStore(DataStore):
    """DataStore in the ``faasflow_data`` table of a SQLite file."""

    db: Database

    @classmethod
    def from_options(cls, options: Options) -> SqliteDataStore:
        """Options: ``path`` (default ``.faasflow/data.db``), ``timeout`` (seconds),
        ``pool_size`` (connections per process)."""
        return cls(_database(options, DEFAULT_DATA_PATH, _DATA_TABLE))

    def _execute(self, operation: str, sql: str, *params: object) -> tuple[list[Any], int]:
        return self.db.execute(operation, "sqlite data store", sql, params)

    def set(self, key: str, value: bytes) -> None:
        self._execute(
            "set",
            "INSERT INTO faasflow_data (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            self.namespace + key,
            bytes(value),
        )

    def get(self, key: str) -> bytes:
        rows, _ = self._execute(
            "get", "SELECT value FROM faasflow_data WHERE key = ?", self.namespace + key
        )
        if not rows:
            raise KeyNotFound(key, f"sqlite data store {self.db.path} ({self.namespace})")
        return bytes(rows[0][0])

    def delete(self, key: str) -> None:
        self._execute("delete", "DELETE FROM faasflow_data WHERE key = ?", self.namespace + key)

    def cleanup(self) -> None:
        low, high = _range(self.namespace)
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
