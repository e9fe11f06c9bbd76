"""The local gateway's durable queue of asynchronous invocations.

Every call accepted on ``/async-function/...`` is committed to SQLite before the gateway answers
202, and its row is deleted only after the function has answered (and its callback was sent).
On start every row left by a previous run is delivered again: at-least-once, as OpenFaaS's
queue-worker. Claims live in memory because one gateway process owns the queue (a lock file in
the data directory makes sure of that).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import sqlite3
import threading
import time
from pathlib import Path

import attrs

__all__ = ["DurableQueue", "Job"]

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
)
"""


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


class DurableQueue:
    """A FIFO of :class:`Job` rows in ``<path>``; thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
        self._db.execute(_SCHEMA)
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

    def put(self, job: Job) -> None:
        """Store ``job``; it is durable when this returns."""
        with self._lock:
            if self._db_closed:
                raise RuntimeError("the queue is closed")
            self._db.execute(
                "INSERT INTO jobs (id, function, path, query, method, headers, body, callback,"
                " enqueued, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.function, job.path, job.query, job.method,
                 json.dumps(job.headers), job.body, job.callback, job.enqueued, job.attempts),
            )
            self._ready.append(job)
            self._changed.notify()

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
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

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
