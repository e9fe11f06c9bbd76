"""Rows of the durable queue held by a worker process (faasflow/runtime/kept.py): written through
a second SQLite connection, as a worker does, and seen by the gateway's DurableQueue."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from faasflow.runtime.dispatch import Dispatcher
from faasflow.runtime.kept import KeptHub
from faasflow.runtime.queue import (
    CallIdInUse,
    DurableQueue,
    Job,
    finish_job,
    insert_job,
    open_db,
)


def job(call_id: str = "c1", body: bytes = b"{}") -> Job:
    return Job(id=call_id, function="flow", path="/flow/r1/forward", query="", method="POST",
               headers=(("X-Call-Id", call_id),), body=body)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[DurableQueue]:
    q = DurableQueue(tmp_path / "queue.db")
    yield q
    q.close()


@pytest.fixture
def worker_db(queue: DurableQueue) -> Iterator[sqlite3.Connection]:
    db = open_db(queue.path)
    yield db
    db.close()


def test_a_held_row_is_not_delivered_by_the_gateway(queue, worker_db) -> None:
    assert insert_job(worker_db, job(), "shared-0:a")
    assert queue.take(timeout=0.2) is None


def test_a_held_row_counts_as_pending(queue, worker_db) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    assert queue.pending() == 1
    finish_job(worker_db, job())
    assert queue.pending() == 0


def test_the_rows_of_a_dead_worker_are_delivered_with_one_attempt_more(queue,
                                                                        worker_db) -> None:
    insert_job(worker_db, job("c1"), "shared-0:a")
    insert_job(worker_db, job("c2"), "shared-1:b")
    assert queue.release_holder("shared-0:a") == 1
    taken = queue.take(timeout=1)
    assert taken is not None and (taken.id, taken.attempts) == ("c1", 1)
    assert queue.take(timeout=0.2) is None  # the other worker's row stays its own


def test_rows_held_past_the_limit_are_delivered_and_fresh_ones_stay_held(queue,
                                                                          worker_db) -> None:
    # a worker that hangs (SIGSTOP) never closes its pipe: its old rows go back by age
    insert_job(worker_db, attrs.evolve(job("old"), enqueued=time.time() - 60), "shared-0:a")
    insert_job(worker_db, job("new"), "shared-0:a")
    assert queue.release_stale(30.0) == ["shared-0:a"]
    taken = queue.take(timeout=1)
    assert taken is not None and (taken.id, taken.attempts) == ("old", 1)
    assert queue.take(timeout=0.2) is None
    assert queue.release_stale(30.0) == []


def test_a_gateway_start_delivers_held_rows(tmp_path: Path) -> None:
    first = DurableQueue(tmp_path / "queue.db")
    db = open_db(first.path)
    insert_job(db, job(), "shared-0:a")
    db.close()
    first.close()
    again = DurableQueue(tmp_path / "queue.db")
    try:
        assert again.recovered == 1
        taken = again.take(timeout=1)
        assert taken is not None and taken.id == "c1"
    finally:
        again.close()


def test_a_handed_back_row_is_taken_over_only_from_its_holder(queue, worker_db) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    assert queue.take_over("c1", "shared-0:other-start") is None
    taken = queue.take_over("c1", "shared-0:a")
    assert taken is not None and taken.id == "c1"
    assert queue.take_over("c1", "shared-0:a") is None  # once


def test_a_call_id_kept_by_a_worker_is_a_duplicate_for_the_gateway(queue, worker_db) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    assert queue.put(job()) is False


def test_a_call_id_kept_by_a_worker_for_another_call_is_refused(queue, worker_db) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    with pytest.raises(CallIdInUse):
        queue.put(job(body=b'{"other": 1}'))


def test_a_call_id_the_gateway_queued_is_a_duplicate_for_a_worker(queue, worker_db) -> None:
    queue.put(job())
    assert insert_job(worker_db, job(), "shared-0:a") is False


def test_a_call_id_a_worker_finished_is_remembered(queue, worker_db) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    finish_job(worker_db, job())
    assert queue.put(job()) is False
    assert queue.pending() == 0


def test_a_queue_file_without_holders_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            function TEXT NOT NULL, path TEXT NOT NULL, query TEXT NOT NULL,
            method TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, callback TEXT,
            enqueued REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, function, path, query, method, headers, body, enqueued)
            VALUES ('old', 'flow', '/flow/r/forward', '', 'POST', '[]', x'7b7d', 1.0);
    """)
    old.close()
    queue = DurableQueue(path)
    try:
        taken = queue.take(timeout=1)
        assert taken is not None and taken.id == "old"
        db = open_db(path)
        assert insert_job(db, job(), "shared-0:a")
        db.close()
    finally:
        queue.close()


def _hub(queue: DurableQueue, max_attempts: int) -> KeptHub:
    hub = KeptHub(queue, lambda name, times: None)
    hub.dispatcher = Dispatcher(queue, {}, threads=1, max_attempts=max_attempts,
                                closing=threading.Event(), stack_name="stack.yml")
    return hub


def test_a_kept_iteration_answered_503_is_retried_after_a_backoff(queue, worker_db) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    _hub(queue, 3).report("shared-0:a", {"hand_back": "c1", "status": 503, "why": "busy"})
    assert queue.take(timeout=0.05) is None  # not before its backoff
    taken = queue.take(timeout=2)
    assert taken is not None and (taken.id, taken.attempts) == ("c1", 1)


def test_a_kept_iteration_past_its_attempts_is_a_dead_letter(queue, worker_db) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    _hub(queue, 1).report("shared-0:a", {"hand_back": "c1", "status": 429, "why": "slow"})
    assert queue.dead() == 1
    assert queue.pending() == 0


def test_kept_iterations_are_counted_for_their_flow(queue) -> None:
    counted: list[tuple[str, int]] = []
    KeptHub(queue, lambda name, times: counted.append((name, times))).report(
        "shared-0:a", {"kept": {"flow": 3}})
    assert counted == [("flow", 3)]
