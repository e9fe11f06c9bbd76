"""The SQLite file behind the ``sqlite`` stores: a bounded pool of connections per process.

SQLite connections must never be used by two threads at once nor cross a ``fork``, and an open
connection holds file descriptors (the database, its WAL and shared-memory files). One
connection per thread, kept for ever, made a server with hundreds of threads run out of files;
a pool lends a connection for one operation and takes it back, so a process holds at most
``pool_size`` of them however many threads it runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from faasflow.errors import BackendError

__all__ = ["DEFAULT_POOL_SIZE", "Database"]

DEFAULT_POOL_SIZE = 8


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
