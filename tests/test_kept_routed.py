"""A fan-out's further branches given by the gateway to a worker's runners (faasflow/runtime/
kepthub.py, ``KeptHub._route``): the row the worker committed is made the chosen worker's in the
queue file before that worker hears of it, so a death of either worker leaves it to deliver.

The queue-level tests write through a second SQLite connection, as a worker does; the last two
run a real ``faasflow up`` with two workers."""

from __future__ import annotations

import os
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from faasflow.runtime.kepthub import ROUTED_PER_WORKER
from faasflow.runtime.process import GatewayProcess
from faasflow.runtime.queue import DurableQueue, Job, held_job, insert_job, open_db


def job(call_id: str = "c1") -> Job:
    return Job(id=call_id, function="flow", path="/flow/r1/forward", query="", method="POST",
               headers=(("X-Call-Id", call_id),), body=b"{}")


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


def test_a_handed_over_row_is_held_by_its_new_holder(
    queue: DurableQueue, worker_db: sqlite3.Connection,
) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    assert queue.hand_over("c1", "shared-0:a", "shared-1:b")
    assert held_job(worker_db, "c1", "shared-0:a") is None
    found = held_job(worker_db, "c1", "shared-1:b")
    assert found is not None and found.path == "/flow/r1/forward"
    assert queue.take(timeout=0.2) is None  # still held: the gateway does not deliver it


def test_a_row_its_holder_no_longer_holds_is_not_handed_over(
    queue: DurableQueue, worker_db: sqlite3.Connection,
) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    queue.release_holder("shared-0:a")  # the worker died meanwhile: the row is delivered
    assert not queue.hand_over("c1", "shared-0:a", "shared-1:b")
    assert held_job(worker_db, "c1", "shared-1:b") is None


def test_a_handed_over_row_is_delivered_when_its_new_holder_dies(
    queue: DurableQueue, worker_db: sqlite3.Connection,
) -> None:
    insert_job(worker_db, job(), "shared-0:a")
    queue.hand_over("c1", "shared-0:a", "shared-1:b")
    assert queue.release_holder("shared-0:a") == 0  # the committing worker's death: not its
    assert queue.release_holder("shared-1:b") == 1
    taken = queue.take(timeout=1)
    assert taken is not None and (taken.id, taken.attempts) == ("c1", 1)


BRANCHES = 6
WIDE = 2 * ROUTED_PER_WORKER + 8

# every branch waits for the test's go file, so the rows of all of them are in flight at once
FAN = """
    import os
    import time

    GO = "GO_FILE"

    def branch(data):
        deadline = time.monotonic() + 30
        while not os.path.exists(GO) and time.monotonic() < deadline:
            time.sleep(0.02)
        return data

    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda data: data)
        dag.node("j", aggregator=lambda inputs: str(len(inputs)).encode()).modify(
            lambda data: data)
        for i in range(BRANCHES):
            dag.node(f"b{i}").modify(branch)
            dag.edge("a", f"b{i}")
            dag.edge(f"b{i}", "j")
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    lines = ["functions:"]
    for branches in (BRANCHES, WIDE):
        name = f"fan{branches}"
        (tmp_path / name).mkdir()
        source = textwrap.dedent(FAN).lstrip().replace("GO_FILE", str(tmp_path / "go"))
        (tmp_path / name / "handler.py").write_text(f"BRANCHES = {branches}\n" + source)
        lines += [f"  {name}:", "    lang: faasflow", f"    handler: ./{name}"]
    stack = tmp_path / "stack.yml"
    stack.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    with GatewayProcess(stack, data_dir=tmp_path / "data", processes=2, env=env) as gateway:
        yield gateway


def held_rows(path: Path) -> list[str | None]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT holder FROM jobs")]
    finally:
        db.close()


def test_fan_out_branches_in_flight_are_held_by_both_workers(gateway: GatewayProcess,
                                                             tmp_path: Path) -> None:
    run_blocked_fan_out(gateway, tmp_path, BRANCHES)


def test_branches_past_the_workers_fill_wait_held_and_all_run(gateway: GatewayProcess,
                                                              tmp_path: Path) -> None:
    # 2 workers x ROUTED_PER_WORKER rows given at most: the rest wait in the gateway, still
    # held by the worker that committed them, never given to the dispatcher
    run_blocked_fan_out(gateway, tmp_path, WIDE)


def run_blocked_fan_out(gateway: GatewayProcess, tmp_path: Path, branches: int) -> None:
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(requests.post, f"{gateway.url}/function/fan{branches}", data=b"x",
                            timeout=60, headers={"X-Faas-Flow-Wait": "40"})
        deadline = time.monotonic() + 20
        holders = held_rows(tmp_path / "data" / "queue.db")
        while len(holders) < branches and time.monotonic() < deadline:
            time.sleep(0.05)
            holders = held_rows(tmp_path / "data" / "queue.db")
        (tmp_path / "go").touch()
        answer = reply.result()
    assert answer.status_code == 200, answer.text
    assert answer.content == str(branches).encode()
    # none waited for the gateway's dispatcher (its rows have no holder), and the workers
    # shared the branches
    assert len(holders) == branches
    assert None not in holders
    assert len(set(holders)) == 2


def test_no_row_stays_held_after_a_fan_out(gateway: GatewayProcess, tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    answer = requests.post(f"{gateway.url}/function/fan{BRANCHES}", data=b"x", timeout=60,
                           headers={"X-Faas-Flow-Wait": "30"})
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while held_rows(tmp_path / "data" / "queue.db") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held_rows(tmp_path / "data" / "queue.db") == []
