"""The sqlite state store's locked transaction against a committed write: `python
bench/stores_sqlite.py [--arrivals N] [--rounds R]`.

A fan-in arrival as the engine makes it (reads the counter, the member's key, the request's
state and the member's marker; writes the member, the counter and the marker), by 1 thread, 8
threads of one process and 2 processes of 4 threads, all into one counter. Floor, measured in
the same run on the same file: one committed write of one row through the same store
(``set``), by the same threads or processes. Printed: wall and CPU time per arrival (CPU of
the process, all its threads) and their ratio to the floor; the median of the rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from faasflow.default_plugins.sqlite import SqliteStateStore

STATE = '{"s":"running","t":1764660000.123}'
DONE = '{"p":"done","token":"abcdefghijklmnopqrstu","n":"abcdefghijkl"}'
HANDED = '{"p":"handed","token":"abcdefghijklmnopqrstu","n":"abcdefghijkl"}'


def arrive(store: Any, member: str) -> None:
    marker, node = f"joined@{member}", f"node--{member}"

    def decide(values: Mapping[str, str | None]) -> dict[str, str] | None:
        if values[marker] is not None:
            return None
        count = int(values["joined"] or 0) + 1
        writes = {marker: str(count), "joined": str(count)}
        if values["state"] == STATE and values[node] == DONE:
            writes[node] = HANDED
        return writes

    store.locked_transaction(["joined", marker, "state", node], decide)


def write(store: Any, member: str) -> None:
    store.set(f"floor--{member}", DONE)


OPERATIONS: dict[str, Callable[[Any, str], None]] = {"arrival": arrive, "floor": write}


def run_threads(path: str, request: str, operation: str, threads: int, each: int,
                worker: str = "p") -> tuple[float, float]:
    """Wall and CPU seconds of ``threads`` threads making ``each`` operations."""
    backend = SqliteStateStore.from_options({"path": path})
    store = backend.scoped("bench", request)
    for thread in range(threads):
        for index in range(each):
            store.set(f"node--{worker}{thread}-{index}", DONE)
    store.set("state", STATE)
    do = OPERATIONS[operation]
    barrier = threading.Barrier(threads + 1)

    def work(thread: int) -> None:
        handle = backend.scoped("bench", request)
        barrier.wait()
        for index in range(each):
            do(handle, f"{worker}{thread}-{index}")

    running = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in running:
        thread.start()
    barrier.wait()
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in running:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    backend.close()
    return wall, cpu


def _child(args: tuple[str, str, str, int, int, str], results: Any) -> None:
    results.put(run_threads(*args))


def run_processes(path: str, request: str, operation: str, processes: int, threads: int,
                  each: int) -> tuple[float, float]:
    """The slowest child's wall seconds (from its own start signal: a spawn and its imports
    are not the store's time) and the children's CPU seconds summed."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    children = [
        ctx.Process(target=_child,
                    args=((path, request, operation, threads, each, f"c{p}-"), results))
        for p in range(processes)
    ]
    for child in children:
        child.start()
    found = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return max(wall for wall, _ in found), sum(cpu for _, cpu in found)


def check(path: str, request: str, total: int) -> None:
    backend = SqliteStateStore.from_options({"path": path})
    store = backend.scoped("bench", request)
    assert store.get("joined") == str(total), "an arrival was lost or counted twice"
    store.cleanup()
    backend.close()


def measure(path: str, shape: tuple[int, int], arrivals: int, rounds: int) -> dict[str, Any]:
    processes, threads = shape
    each = max(1, arrivals // (processes * threads))
    found: dict[str, list[tuple[float, float]]] = {"floor": [], "arrival": []}
    for round_ in range(rounds):
        order = ("floor", "arrival") if round_ % 2 == 0 else ("arrival", "floor")
        for operation in order:
            request = f"{operation}-{processes}x{threads}-{round_}"
            if processes == 1:
                wall, cpu = run_threads(path, request, operation, threads, each)
            else:
                wall, cpu = run_processes(path, request, operation, processes, threads, each)
            if operation == "arrival":
                check(path, request, processes * threads * each)
            done = processes * threads * each
            found[operation].append((wall / done * 1e6, cpu / done * 1e6))
    return {
        operation: (statistics.median(w for w, _ in samples),
                    statistics.median(c for _, c in samples))
        for operation, samples in found.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrivals", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "state.db")
        print(f"{'shape':22s} {'floor us':>18s} {'arrival us':>18s} {'x floor':>14s}")
        for shape in ((1, 1), (1, 8), (2, 4)):
            got = measure(path, shape, args.arrivals, args.rounds)
            (fw, fc), (aw, ac) = got["floor"], got["arrival"]
            name = f"{shape[0]} process x {shape[1]} thread"
            print(f"{name:22s} {fw:7.1f} wall {fc:5.1f} cpu {aw:7.1f} wall {ac:5.1f} cpu"
                  f"  {aw / fw:4.2f} / {ac / fc:4.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
