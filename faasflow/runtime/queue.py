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

__all__ = ["CallIdInUse", "DurableQueue", "Job"]

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
    attempts INTEGER NOT NULL DEFAULT 0
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
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._ready: collections.deque[Job] = collections.deque()
        self._later: list[tuple[float, int, Job]] = []
        self._tie = itertools.count()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._db_closed = False
        self._claimed = 0
        for row in self._db.execute(
            "SELECT id, function, path, query, method, headers, body, callback, enqueued, "
            "attempts FROM jobs ORDER BY seq"
        ):
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
            row = self._db.execute(
                "SELECT function, path, query, body FROM jobs WHERE id = ?", (job.id,)
            ).fetchone()
            known: str | None = None
            if row is not None:
                known = _digest(str(row[0]), str(row[1]), str(row[2]), bytes(row[3]))
            else:
                found = self._db.execute(
                    "SELECT digest FROM seen WHERE id = ? AND at > ?",
                    (job.id, time.time() - SEEN_FOR),
                ).fetchone()
                known = None if found is None else str(found[0])
            if known is not None:
                if known != job.digest:
                    raise CallIdInUse(job.id)
                return False
            self._db.execute(
                "INSERT INTO jobs (id, function, path, query, method, headers, body, callback,"
                " enqueued, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.function, job.path, job.query, job.method,
                 json.dumps(job.headers), job.body, job.callback, job.enqueued, job.attempts),
            )
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
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
                    self._remember(job)

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
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
                self._db.execute(
                    "INSERT OR REPLACE INTO dead (id, function, path, attempts, reason, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (job.id, job.function, job.path, job.attempts + 1, reason, time.time()),
                )
                self._remember(job)

    def _remember(self, job: Job) -> None:
        now = time.time()
        self._db.execute("INSERT OR REPLACE INTO seen (id, digest, at) VALUES (?, ?, ?)",
                         (job.id, job.digest, now))
        if next(self._tie) % 256 == 0:
            self._db.execute("DELETE FROM seen WHERE at < ?", (now - SEEN_FOR,))

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
        """Jobs not yet finished (waiting, delayed or being delivered)."""
        with self._lock:
            return len(self._ready) + len(self._later) + self._claimed

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
