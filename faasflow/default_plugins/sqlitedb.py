"""The SQLite file behind the ``sqlite`` stores: a bounded pool of connections per process and
one writer at a time.

SQLite connections must never be used by two threads at once nor cross a ``fork``, and an open
connection holds file descriptors (the database, its WAL and shared-memory files). One
connection per thread, kept for ever, made a server with hundreds of threads run out of files;
a pool lends a connection for one operation and takes it back, so a process holds at most
``pool_size`` of them however many threads it runs.

SQLite admits one writer per file. A second writer in another connection gets ``SQLITE_BUSY``
and its busy handler *sleeps* (1 ms, then 2, 5, 10 ... ms) before it tries again, so eight
threads writing through eight connections spent most of their time asleep. The threads of one
process therefore take a Python lock around every write: they queue on it and are woken the
moment the writer before them commits. The busy handler still arbitrates between processes.

Durability: WAL with ``synchronous = NORMAL``. A commit is in the WAL file when ``COMMIT``
returns, so a process killed at any instant (``SIGKILL`` included) loses nothing it committed;
only a power loss or an operating-system crash can lose the last commits (the WAL is synced at
checkpoints), which is what a store of one machine promises.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from faasflow.errors import BackendError
from faasflow.parking import ParkingLock

__all__ = ["DEFAULT_POOL_SIZE", "Database"]

DEFAULT_POOL_SIZE = 8

_T = TypeVar("_T")

# Every Database of this process, so a forked child starts each with an empty pool and fresh
# locks (a lock held by another thread at the fork would otherwise stay held in the child).
_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


class Database:
    """One SQLite file and a bounded pool of connections to it, per process.

    A connection is taken from the pool for one operation (one statement or one transaction)
    and given back right after, so a process holds at most ``pool_size`` connections however
    many threads it runs; a thread that finds every connection busy waits for one. Writes of
    one process go one at a time (see the module's docstring). The pool belongs to the process
    that filled it: after a ``fork`` the child starts an empty one.
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
        # not a plain lock: a statement gives up the GIL while holding it (see ParkingLock)
        self._writing = ParkingLock()
        self._setting_up = threading.Lock()
        self._ready = False  # the file is in WAL mode and holds the table
        self._pid = os.getpid()
        # Idle connections. list.pop and list.append are atomic, so the common case (a
        # connection is idle) takes one without the condition's lock; see _acquire.
        self._idle: list[sqlite3.Connection] = []
        self._open = 0  # connections of this process, idle or lent out
        self._waiting = 0  # threads waiting in _acquire for a connection
        self._generation = 0  # bumped by close(): connections lent before it are not kept
        self._inherited = 0
        # The connection writes go through, kept between writes (see _take_writer).
        self._writer: tuple[sqlite3.Connection, int] | None = None
        self._keep_writer = pool_size > 1
        _DATABASES.add(self)

    def _forget_parent(self) -> None:
        # Connections inherited through fork are never used or closed in the child (SQLite
        # forbids both); they are simply left behind.
        self._available = threading.Condition(threading.Lock())
        self._writing, self._setting_up = ParkingLock(), threading.Lock()
        self._pid, self._idle, self._open, self._waiting = os.getpid(), [], 0, 0
        self._writer = None
        self._generation += 1
        self._inherited = self._generation  # connections of older generations: the parent's

    @property
    def writing(self) -> bool:
        """Whether a thread of this process holds the write lock now (a hint: it may change
        the next instant)."""
        return self._writing.locked()

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
        generation = self._generation  # read before the list: see close()
        try:
            return self._idle.pop(), generation
        except IndexError:
            return self._acquire_waiting()

    def _acquire_waiting(self) -> tuple[sqlite3.Connection, int]:
        deadline = time.monotonic() + self.timeout
        with self._available:
            # Counted before the pool is looked at: a connection given back after this line
            # sees the waiter and notifies it (given back before, it is found in the list).
            self._waiting += 1
            try:
                while not self._idle and self._open >= self.pool_size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise BackendError(
                            "sqlite",
                            "connect",
                            str(self.path),
                            f"all {self.pool_size} connections stayed busy for "
                            f"{self.timeout:g} s "
                            "(raise FAASFLOW_SQLITE_POOL_SIZE or FAASFLOW_SQLITE_TIMEOUT)",
                        )
                    self._available.wait(remaining)
            finally:
                self._waiting -= 1
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
            if generation < self._inherited:
                return  # lent before a fork and given back in the child: left behind
            if not broken and generation == self._generation:
                self._idle.append(conn)
                if self._waiting:
                    self._available.notify()
                return
            self._open -= 1
            if self._waiting:
                self._available.notify()
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
            # Before the switch to WAL, so creating a new file does not sync it as FULL would.
            conn.execute("PRAGMA synchronous = NORMAL")
            if not self._ready:
                # WAL is a property of the file and the table outlives the connection: once per
                # process (a new connection costs a third of a millisecond less).
                with self._setting_up:
                    if not self._ready:
                        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                            conn.execute("PRAGMA journal_mode = WAL")
                        conn.execute(self.schema)
                        self._ready = True
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

    def _lock_writes(self, operation: str, backend: str) -> ParkingLock:
        lock = self._writing
        if not lock.acquire(timeout=self.timeout):
            raise self._locked_out(operation, backend)
        return lock

    def _locked_out(self, operation: str, backend: str) -> BackendError:
        return BackendError(
            backend, operation, str(self.path),
            f"another thread of this process held the write lock for {self.timeout:g} s "
            "(raise FAASFLOW_SQLITE_TIMEOUT)",
        )

    def query(
        self, operation: str, backend: str, sql: str, params: Sequence[object]
    ) -> list[Any]:
        """Run one reading statement; return its rows. On the writer's connection when no
        thread writes (its cache is warm: see _take_writer), else on a pooled one (in WAL mode
        a reader sees the last commit and never waits for the writer)."""
        if self._keep_writer and self._writing.acquire(blocking=False):
            try:
                conn, generation = self._take_writer()
                try:
                    rows = conn.execute(sql, params).fetchall()
                except BaseException as exc:
                    self._give_writer(conn, generation, broken=conn.in_transaction)
                    if isinstance(exc, sqlite3.Error):
                        raise BackendError(backend, operation, str(self.path), exc) from exc
                    raise
                self._give_writer(conn, generation, broken=False)
            finally:
                self._writing.release()
            return rows
        conn, generation = self._acquire()
        try:
            rows = conn.execute(sql, params).fetchall()
        except BaseException as exc:
            self._release(conn, generation, broken=conn.in_transaction)
            if isinstance(exc, sqlite3.Error):
                raise BackendError(backend, operation, str(self.path), exc) from exc
            raise
        self._release(conn, generation, broken=False)
        return rows

    def _take_writer(self) -> tuple[sqlite3.Connection, int]:
        """The connection this process writes through (called under the write lock).

        One connection makes every write of the process, so its page cache stays valid: a
        connection that another one's commit overtook drops its whole cache at its next
        statement and reads the tree back from the WAL. It is one of the pool's, kept out of
        it (with a pool of one it goes back after each write, or readers would starve)."""
        held = self._writer
        if held is not None:
            self._writer = None
            if held[1] == self._generation:
                return held
            self._release(*held, broken=False)  # lent before close(): closed now
        return self._acquire()

    def _give_writer(self, conn: sqlite3.Connection, generation: int, *, broken: bool) -> None:
        if self._keep_writer and not broken and generation == self._generation:
            self._writer = (conn, generation)
        else:
            self._release(conn, generation, broken=broken)

    def execute(
        self, operation: str, backend: str, sql: str, params: Sequence[object]
    ) -> tuple[list[Any], int]:
        """Run one statement as this process's only writer; return its rows and row count."""
        # The write lock first, then a connection: a thread waiting for the lock holds no
        # connection, so the pool never runs dry behind it (and cannot deadlock).
        lock = self._writing
        if not lock.acquire(timeout=self.timeout):
            raise self._locked_out(operation, backend)
        try:
            held = self._writer
            if held is not None and held[1] == self._generation:
                # The kept writer, used in place: only a holder of the write lock touches it.
                conn = held[0]
                try:
                    cursor = conn.execute(sql, params)
                    return cursor.fetchall(), cursor.rowcount
                except BaseException as exc:
                    if conn.in_transaction:  # broken: closed, and the next write takes another
                        self._writer = None
                        self._release(conn, held[1], broken=True)
                    if isinstance(exc, sqlite3.Error):
                        raise BackendError(backend, operation, str(self.path), exc) from exc
                    raise
            conn, generation = self._take_writer()
            try:
                cursor = conn.execute(sql, params)
                found = cursor.fetchall(), cursor.rowcount
            except BaseException as exc:
                self._give_writer(conn, generation, broken=conn.in_transaction)
                if isinstance(exc, sqlite3.Error):
                    raise BackendError(backend, operation, str(self.path), exc) from exc
                raise
            self._give_writer(conn, generation, broken=False)
        finally:
            lock.release()
        return found

    @contextlib.contextmanager
    def transaction(self, operation: str, backend: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: a write transaction that holds the lock from its
        first statement, so a read-modify-write inside it cannot interleave with another."""
        lock = self._lock_writes(operation, backend)
        try:
            with self.errors(operation, backend):
                conn, generation = self._take_writer()
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                except BaseException:
                    self._give_writer(conn, generation, broken=conn.in_transaction)
                    raise
                self._give_writer(conn, generation, broken=False)
        finally:
            lock.release()

    def locked(
        self, operation: str, backend: str, body: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """``body(connection)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, its answer returned:
        :meth:`transaction` for a hot path (no generator, and an exception of ``body`` other
        than a SQLite error passes unchanged). It rolls back when ``body`` raises."""
        lock = self._lock_writes(operation, backend)
        try:
            conn, generation = self._take_writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    answer = body(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except BaseException as exc:
                self._give_writer(conn, generation, broken=conn.in_transaction)
                if isinstance(exc, sqlite3.Error):
                    raise BackendError(backend, operation, str(self.path), exc) from exc
                raise
            self._give_writer(conn, generation, broken=False)
            return answer
        finally:
            lock.release()

    def close(self) -> None:
        """Close this process's idle connections; those lent out close when given back."""
        closing: list[sqlite3.Connection] = []
        with self._available:
            if self._pid != os.getpid():
                return
            # The list is swapped before the generation moves on: a thread that takes a
            # connection from the old list without the lock (see _acquire) read the old
            # generation, so the connection is closed when it comes back. Each connection is
            # popped once, by that thread or here.
            idle, self._idle = self._idle, []
            self._generation += 1
            while True:
                try:
                    closing.append(idle.pop())
                except IndexError:
                    break
            self._open -= len(closing)
            self._available.notify_all()
        if self._writing.acquire(blocking=False):  # else a write runs: closed after it
            held, self._writer = self._writer, None
            self._writing.release()
            if held is not None:
                self._release(*held, broken=False)  # of the generation before: closed
        for conn in closing:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def _forget_parents() -> None:
    for database in list(_DATABASES):
        database._forget_parent()


os.register_at_fork(after_in_child=_forget_parents)
