"""W1-W3 on Celery + Redis (prefork, 2 worker processes), run inside bench/.venvs/celery.

`python celery_bench.py REDIS_URL REPEAT` starts a prefork worker (`-c 2`) on this module,
runs every workload REPEAT times after one warm-up, checks each result, and prints one JSON
line {workload: [seconds, ...]}. Redis is both the broker and the result backend (chords
need one). Tasks are no-ops that add 1, so the checked totals prove every step ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from celery import Celery, chain, chord, group

URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6399/0")
app = Celery("celery_bench", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    worker_prefetch_multiplier=4, broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task
def inc(x: int) -> int:
    return x + 1


@app.task
def total(xs: list[int]) -> int:
    return sum(xs)


def w1(n: int) -> tuple[Any, int]:
    return chain(inc.s(0), *(inc.s() for _ in range(n - 1))), n


def w2(n: int) -> tuple[Any, int]:
    return chord(group(inc.s(0) for _ in range(n)), total.s()), n


def w3(outer: int, inner: int) -> tuple[Any, int]:
    leaves = [chord(group(inc.s(0) for _ in range(inner)), total.s()) for _ in range(outer)]
    return chord(group(leaves), total.s()), outer * inner


WORKLOADS = {
    "W1 10": lambda: w1(10), "W1 100": lambda: w1(100),
    "W2 100": lambda: w2(100), "W2 1000": lambda: w2(1000),
    "W3 10x10": lambda: w3(10, 10),
}


def run(make: Any) -> float:
    canvas, expected = make()
    t0 = time.perf_counter()
    got = canvas.apply_async().get(timeout=300, disable_sync_subtasks=False)
    elapsed = time.perf_counter() - t0
    if got != expected:
        raise SystemExit(f"celery: result {got!r}, expected {expected!r}")
    return elapsed


def main() -> int:
    repeat = int(sys.argv[1])
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "-P", "prefork",
         "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-l", "warning"], cwd=here, env={**os.environ, "PYTHONPATH": here},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("celery worker did not start")
        results: dict[str, list[float]] = {}
        for name, make in WORKLOADS.items():
            run(make)  # warm-up
            results[name] = [run(make) for _ in range(repeat)]
        print(json.dumps(results))
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
