"""The local gateway's durable queue of asynchronous invocations.

Every call accepted on ``/async-function/...`` is committed to SQLite before the gateway answers
202, and its row is deleted only after the function has answered (and its callback was sent).
On start every row left by a previous run is delivered again: at-least-once, as OpenFaaS's
queue-worker. Claims live in memory because one gateway process owns the queue (a lock file in
the data directory makes sure of that).

A call id (``X-Call-Id``) names one call: a second put with the same id and the same call
(function, path, query, body) is the same job, while it is queued and for an hour after it was
delivered; with another call it is refused (:class:`CallIdInUse`). A job that used up its
attempts moves to the ``dead`` table (``/system/queue`` counts them).

A worker process may commit a job itself, *held* by it (the ``holder`` column names the worker
process; see :mod:`~faasflow.runtime.kept`): the gateway does not deliver a held row, and
takes it over when the worker hands it back (:meth:`DurableQueue.take_over`) or dies
(:meth:`DurableQueue.release_holder`). On start every row is delivered again, held or not: the
workers died with the previous gateway.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import json
import sqlite3
import threading
import time
from pathlib import Path

import attrs

__all__ = ["CallIdInUse", "DurableQueue", "Job", "finish_job", "held_job", "insert_job",
           "open_db"]

#: Seconds a delivered call's id is remembered, so a repeated put is recognised.
SEEN_FOR = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    method TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    callback TEXT,
    enqueued REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    holder TEXT
);
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    path TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
)
"""


class CallIdInUse(Exception):
    """A call id already names another call."""


@attrs.frozen
class Job:
    """One accepted asynchronous invocation."""

    id: str
    function: str
    path: str
    query: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    callback: str | None = None
    enqueued: float = attrs.field(factory=time.time)
    attempts: int = 0
    """Deliveries tried before this one."""

    @property
    def digest(self) -> str:
        """What makes two puts the same call."""
        return _digest(self.function, self.path, self.query, self.body)


def _digest(function: str, path: str, query: str, body: bytes) -> str:
    hasher = hashlib.sha256()
    for part in (function.encode(), path.encode(), query.encode()):
        hasher.update(part + b"\0")
    hasher.update(body)
    return hasher.hexdigest()


class DurableQueue:
    """A FIFO of :class:`Job` rows in ``<path>``; thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_db(self.path)
        self._db.execute("UPDATE jobs SET holder = NULL WHERE holder IS NOT NULL")
        self._lock = threading.Lock()
        self._ready: collections.deque[Job] = collections.deque()
        self._later: list[tuple[float, int, Job]] = []
        self._tie = itertools.count()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._db_closed = False
        self._claimed = 0
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY seq"):
            self._ready.append(_job(row))
        self.recovered = len(self._ready)
        """Jobs left by a previous run, delivered again."""

    def put(self, job: Job) -> bool:
        """Store ``job``; it is durable when this returns. False when the same call was put
        before under this id (nothing is queued again); :class:`CallIdInUse` when the id
        names another call."""
        with self._lock:
            if self._db_closed:
                raise RuntimeError("the queue is closed")
            if not insert_job(self._db, job):
                return False
            self._ready.append(job)
            self._changed.notify()
            return True

    def take(self, timeout: float | None = None) -> Job | None:
        """The oldest job that is due, claimed for the caller; ``None`` after ``timeout`` or
        once the queue is closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    self._ready.append(heapq.heappop(self._later)[2])
                if self._ready:
                    self._claimed += 1
                    return self._ready.popleft()
                wait = None if deadline is None else deadline - now
                if self._later:
                    due = self._later[0][0] - now
                    wait = due if wait is None else min(wait, due)
                if wait is not None and wait <= 0:
                    return None
                self._changed.wait(wait)
            return None

    def done(self, job: Job) -> None:
        """Forget a delivered job."""
        with self._lock:
            self._claimed -= 1
            if not self._db_closed:  # after close the row stays and is delivered next run
                finish_job(self._db, job)

    def release(self, job: Job) -> None:
        """Give a claimed job back undelivered (the gateway is stopping); its row stays for
        the next run."""
        with self._lock:
            self._claimed -= 1

    def dead_letter(self, job: Job, reason: str) -> None:
        """Give up on a claimed job: it moves to the ``dead`` table."""
        with self._lock:
            self._claimed -= 1
            if self._db_closed:
                return
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
                self._db.execute(
                    "INSERT OR REPLACE INTO dead (id, function, path, attempts, reason, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (job.id, job.function, job.path, job.attempts + 1, reason, time.time()),
                )
                _remember(self._db, job)

    def dead(self) -> int:
        """Jobs given up after their last attempt."""
        with self._lock:
            if self._db_closed:
                return 0
            return int(self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    def retry(self, job: Job, delay: float) -> Job:
        """Give a claimed job back to be delivered again after ``delay`` seconds."""
        again = attrs.evolve(job, attempts=job.attempts + 1)
        with self._lock:
            self._claimed -= 1
            if self._db_closed:
                return again
            self._db.execute("UPDATE jobs SET attempts = ? WHERE id = ?", (again.attempts, job.id))
            heapq.heappush(self._later, (time.monotonic() + delay, next(self._tie), again))
            self._changed.notify()
        return again

    def pending(self) -> int:
        """Jobs not yet finished (waiting, delayed, being delivered, or held by a worker)."""
        with self._lock:
            held = 0
            if not self._db_closed:
                held = int(self._db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE holder IS NOT NULL").fetchone()[0])
            return len(self._ready) + len(self._later) + self._claimed + held

    def held(self) -> int:
        """Jobs held by worker processes (kept iterations queued or running there)."""
        with self._lock:
            if self._db_closed:
                return 0
            return int(self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE holder IS NOT NULL").fetchone()[0])

    def take_over(self, job_id: str, holder: str, *, claim: bool = True) -> Job | None:
        """The job ``holder`` handed back, claimed for the caller (see :meth:`retry` to deliver
        it again), or with ``claim=False`` queued for delivery like a job just put; ``None``
        when that worker does not hold it (any more)."""
        with self._lock:
            if self._db_closed:
                return None
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND holder = ?",
                    (job_id, holder)).fetchone()
                if row is None:
                    return None
                self._db.execute("UPDATE jobs SET holder = NULL WHERE id = ?", (job_id,))
            job = _job(row)
            if claim:
                self._claimed += 1
            else:
                self._ready.append(job)
                self._changed.notify()
            return job

    def hand_over(self, job_id: str, holder: str, to: str) -> bool:
        """Make the job ``holder`` holds held by the worker process ``to`` instead (which is
        told to run it); False when ``holder`` does not hold it (any more)."""
        with self._lock:
            if self._db_closed:
                return False
            moved = self._db.execute("UPDATE jobs SET holder = ? WHERE id = ? AND holder = ?",
                                     (to, job_id, holder))
            return moved.rowcount == 1

    def release_holder(self, holder: str) -> int:
        """Deliver every job the (dead) worker process ``holder`` held; how many there were."""
        return self._release_where("holder = ?", (holder,))

    def release_stale(self, older_than: float) -> list[str]:
        """Deliver every held job committed more than ``older_than`` seconds ago (its worker
        hangs, or its run outlasted the delivery timeout it replaced); their holders."""
        with self._lock:
            if self._db_closed:
                return []
            holders = [str(h) for (h,) in self._db.execute(
                "SELECT DISTINCT holder FROM jobs WHERE holder IS NOT NULL AND enqueued < ?",
                (time.time() - older_than,))]
        if holders:
            self._release_where("holder IS NOT NULL AND enqueued < ?",
                                (time.time() - older_than,))
        return holders

    def _release_where(self, where: str, params: tuple[object, ...]) -> int:
        with self._lock:
            if self._db_closed:
                return 0
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY seq",
                    params).fetchall()
                # the worker's run of each was a delivery that died: one attempt more
                self._db.execute(
                    f"UPDATE jobs SET holder = NULL, attempts = attempts + 1 WHERE {where}",
                    params)
            for row in rows:
                job = _job(row)
                self._ready.append(attrs.evolve(job, attempts=job.attempts + 1))
            self._changed.notify(len(rows))
            return len(rows)

    def stop(self) -> None:
        """Hand out no more jobs: every waiting :meth:`take` returns ``None``. Jobs being
        delivered may still be marked :meth:`done`."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()

    def close(self) -> None:
        """Stop and close the database; unfinished rows stay for the next run."""
        with self._lock:
            self._closed = True
            self._db_closed = True
            self._changed.notify_all()
            self._db.close()


_COLUMNS = ("id, function, path, query, method, headers, body, callback, enqueued, attempts")


def open_db(path: Path) -> sqlite3.Connection:
    """A connection to the queue file, its schema created or migrated; autocommit, so every
    write names its own transaction. The gateway and its workers open it at once: WAL lets
    them, ``BEGIN IMMEDIATE`` orders their writes, and the busy timeout waits out the other's
    commit instead of failing it."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
    db.executescript(_SCHEMA)
    columns = {str(row[1]) for row in db.execute("PRAGMA table_info(jobs)")}
    if "holder" not in columns:  # a queue written before workers could hold rows
        try:
            db.execute("ALTER TABLE jobs ADD COLUMN holder TEXT")
        except sqlite3.OperationalError as exc:  # another process migrated it meanwhile
            if "duplicate column" not in str(exc):
                raise
    return db


def insert_job(db: sqlite3.Connection, job: Job, holder: str | None = None) -> bool:
    """Commit ``job`` (held by ``holder`` when given) unless its call id is known: False for
    the same call put before (queued, held, or delivered within :data:`SEEN_FOR`),
    :class:`CallIdInUse` for another call under that id."""
    with db:
        db.execute("BEGIN IMMEDIATE")  # the check and the insert as one, across processes
        row = db.execute(
            "SELECT function, path, query, body FROM jobs WHERE id = ?", (job.id,)
        ).fetchone()
        known: str | None = None
        if row is not None:
            known = _digest(str(row[0]), str(row[1]), str(row[2]), bytes(row[3]))
        else:
            found = db.execute(
                "SELECT digest FROM seen WHERE id = ? AND at > ?",
                (job.id, time.time() - SEEN_FOR),
            ).fetchone()
            known = None if found is None else str(found[0])
        if known is not None:
            if known != job.digest:
                raise CallIdInUse(job.id)
            return False
        db.execute(
            "INSERT INTO jobs (id, function, path, query, method, headers, body, callback,"
            " enqueued, attempts, holder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.function, job.path, job.query, job.method,
             json.dumps(job.headers), job.body, job.callback, job.enqueued, job.attempts,
             holder),
        )
        return True


def held_job(db: sqlite3.Connection, job_id: str, holder: str) -> Job | None:
    """The job ``holder`` holds under ``job_id``, if it does."""
    row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND holder = ?",
                     (job_id, holder)).fetchone()
    return None if row is None else _job(row)


def finish_job(db: sqlite3.Connection, job: Job) -> None:
    """Delete a delivered job's row and remember its call id (see :data:`SEEN_FOR`)."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
        _remember(db, job)


_sweeps = itertools.count()


def _remember(db: sqlite3.Connection, job: Job) -> None:
    now = time.time()
    db.execute("INSERT OR REPLACE INTO seen (id, digest, at) VALUES (?, ?, ?)",
               (job.id, job.digest, now))
    if next(_sweeps) % 256 == 0:
        db.execute("DELETE FROM seen WHERE at < ?", (now - SEEN_FOR,))


def _job(row: tuple[object, ...]) -> Job:
    (id_, function, path, query, method, headers, body, callback, enqueued, attempts) = row
    return Job(
        id=str(id_), function=str(function), path=str(path), query=str(query),
        method=str(method),
        headers=tuple((str(k), str(v)) for k, v in json.loads(str(headers))),
        body=bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else b"",
        callback=None if callback is None else str(callback),
        enqueued=float(enqueued),  # type: ignore[arg-type]
        attempts=int(attempts),  # type: ignore[call-overload]
    )
