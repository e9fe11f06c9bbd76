"""``sqlite``: a StateStore and a DataStore in a SQLite file, shared by every process of one
machine.

Every operation is one SQL statement (or one ``BEGIN IMMEDIATE`` transaction), so it is atomic
across processes: compare-and-swap is ``UPDATE ... WHERE key = ? AND value = ?`` and create-if-
absent is ``INSERT OR IGNORE``, both judged by the row count. The database runs in WAL mode
(readers never block the writer) with a busy timeout, and each thread of each process has its
own connection: SQLite connections must not cross threads or a ``fork``.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from faasflow.backends import Backend
from faasflow.errors import BackendError, CompareFailed, ConfigurationError, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Options, StateStore

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


class Database:
    """One SQLite file, with one connection per thread and per process."""

    def __init__(self, path: str | os.PathLike[str], schema: str, *, timeout: float) -> None:
        self.path = Path(path)
        self.schema = schema
        self.timeout = timeout
        self._local = threading.local()
        self._opened: list[tuple[int, sqlite3.Connection]] = []

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (again after a ``fork``)."""
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) == pid:
            conn: sqlite3.Connection = local.conn
            return conn
        # A connection inherited through fork is never used or closed in the child (SQLite
        # forbids both); it is simply left behind.
        conn = self._open()
        local.conn, local.pid = conn, pid
        self._opened.append((pid, conn))
        return conn

    def _open(self) -> sqlite3.Connection:
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

    @contextlib.contextmanager
    def transaction(self, operation: str, backend: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: a write transaction that holds the lock from its
        first statement, so a read-modify-write inside it cannot interleave with another."""
        conn = self.connection()
        with self.errors(operation, backend):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connections this process opened (any thread's)."""
        pid = os.getpid()
        mine = [conn for owner, conn in self._opened if owner == pid]
        self._opened = [(owner, conn) for owner, conn in self._opened if owner != pid]
        self._local = threading.local()
        for conn in mine:
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


@attrs.define(eq=False, slots=False)
class SqliteStateStore(StateStore):
    """StateStore in the ``faasflow_state`` table of a SQLite file."""

    db: Database

    @classmethod
    def from_options(cls, options: Options) -> SqliteStateStore:
        """Options: ``path`` (default ``.faasflow/state.db``), ``timeout`` (seconds)."""
        path = options.get("path") or DEFAULT_STATE_PATH
        return cls(Database(path, _STATE_TABLE, timeout=_timeout(options)))

    @property
    def _where(self) -> str:
        return f"sqlite state store {self.db.path} ({self.namespace})"

    def _execute(self, operation: str, sql: str, *params: str) -> sqlite3.Cursor:
        with self.db.errors(operation, "sqlite state store"):
            return self.db.connection().execute(sql, params)

    def set(self, key: str, value: str) -> None:
        self._execute(
            "set",
            "INSERT INTO faasflow_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            self.namespace + key,
            value,
        )

    def get(self, key: str) -> str:
        row = self._execute(
            "get", "SELECT value FROM faasflow_state WHERE key = ?", self.namespace + key
        ).fetchone()
        if row is None:
            raise KeyNotFound(key, self._where)
        return str(row[0])

    def update(self, key: str, old_value: str, new_value: str) -> None:
        full = self.namespace + key
        cursor = self._execute(
            "update",
            "UPDATE faasflow_state SET value = ? WHERE key = ? AND value = ?",
            new_value,
            full,
            old_value,
        )
        if cursor.rowcount == 1:
            return
        exists = self._execute(
            "update", "SELECT 1 FROM faasflow_state WHERE key = ?", full
        ).fetchone()
        if exists is None:
            raise KeyNotFound(key, self._where)
        raise CompareFailed(key, old_value, self._where)

    def create(self, key: str, value: str) -> bool:
        cursor = self._execute(
            "create",
            "INSERT OR IGNORE INTO faasflow_state (key, value) VALUES (?, ?)",
            self.namespace + key,
            value,
        )
        return cursor.rowcount == 1

    def delete(self, key: str) -> None:
        self._execute("delete", "DELETE FROM faasflow_state WHERE key = ?", self.namespace + key)

    def scan(self, prefix: str = "") -> dict[str, str]:
        low, high = _range(self.namespace + prefix)
        if high is None:
            rows = self._execute(
                "scan", "SELECT key, value FROM faasflow_state WHERE key >= ?", low
            ).fetchall()
        else:
            rows = self._execute(
                "scan",
                "SELECT key, value FROM faasflow_state WHERE key >= ? AND key < ?",
                low,
                high,
            ).fetchall()
        skip = len(self.namespace)
        return {str(k)[skip:]: str(v) for k, v in rows if str(k).startswith(low)}

    def cleanup(self) -> None:
        low, high = _range(self.namespace)
        assert high is not None  # a namespace ends with "/"
        self._execute(
            "cleanup", "DELETE FROM faasflow_state WHERE key >= ? AND key < ?", low, high
        )

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
        """Options: ``path`` (default ``.faasflow/data.db``), ``timeout`` (seconds)."""
        path = options.get("path") or DEFAULT_DATA_PATH
        return cls(Database(path, _DATA_TABLE, timeout=_timeout(options)))

    def _execute(self, operation: str, sql: str, *params: object) -> sqlite3.Cursor:
        with self.db.errors(operation, "sqlite data store"):
            return self.db.connection().execute(sql, params)

    def set(self, key: str, value: bytes) -> None:
        self._execute(
            "set",
            "INSERT INTO faasflow_data (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            self.namespace + key,
            bytes(value),
        )

    def get(self, key: str) -> bytes:
        row = self._execute(
            "get", "SELECT value FROM faasflow_data WHERE key = ?", self.namespace + key
        ).fetchone()
        if row is None:
            raise KeyNotFound(key, f"sqlite data store {self.db.path} ({self.namespace})")
        return bytes(row[0])

    def delete(self, key: str) -> None:
        self._execute("delete", "DELETE FROM faasflow_data WHERE key = ?", self.namespace + key)

    def cleanup(self) -> None:
        low, high = _range(self.namespace)
        self._execute("cleanup", "DELETE FROM faasflow_data WHERE key >= ? AND key < ?", low, high)

    def close(self) -> None:
        self.db.close()


_OPTIONS = {
    "timeout": f"seconds a writer waits for the database lock (default {DEFAULT_TIMEOUT:g})",
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
    )
