"""Engine overhead on in-memory backends: `python bench/engine.py [--quick]`.

Shapes: a chain of 1,000 nodes, a fan-out/fan-in of 1,000, a foreach of 10,000 branches with an
aggregator, a nested foreach of 100 x 100. Functions are no-ops, so the time is orchestration.

For each shape it prints the engine's cost per node (microseconds), StateStore and DataStore
operations per node, and peak traced memory; and, as the floor measured in the same run, the
cost per step of handing work from one thread-pool task to the next (the least any engine that
runs steps on a worker pool pays), with the engine's cost as a ratio of it.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shapes import chain, fan, foreach, nested

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.plugins import Registry
from faasflow.settings import Settings

WORKERS = 8
#: Store calls counted: each is one round trip (a transaction too, however many keys it holds).
_COUNTED = ("set", "get", "update", "create", "delete", "scan", "cleanup", "increment",
            "transaction")


class Counting:
    """Counts every operation on a store (shared by its scoped handles)."""

    def __init__(self, inner: Any, counts: collections.Counter[str]) -> None:
        self._inner = inner
        self._counts = counts

    def scoped(self, flow: str, request_id: str) -> Any:
        return type(self)(self._inner.scoped(flow, request_id), self._counts)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in _COUNTED:

            def counted(*args: Any, **kwargs: Any) -> Any:
                self._counts[name] += 1
                return attr(*args, **kwargs)

            return counted
        return attr


def engine_for(
    define: Callable[[Any, Any], None], counts: collections.Counter[str] | None = None
) -> Engine:
    """An engine on the in-memory stores; with ``counts``, every store operation is counted
    (a wrapper that costs time of its own, so timed runs go without it)."""
    settings = Settings(environ={"FAASFLOW_LOCAL_WORKERS": str(WORKERS)})
    registry = Registry.shared(settings)
    states = registry.create(Kind.STATE_STORE, settings, "memory")
    data = registry.create(Kind.DATA_STORE, settings, "memory")
    if counts is not None:
        states, data = Counting(states, counts), Counting(data, counts)
    backends = Backends(
        states,
        data,
        registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    )
    return Engine(Flow(define, name="bench"), settings, backends)


def run_once(engine: Engine) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    started = engine.start(b"")
    record = engine.wait(started.request_id, timeout=600)
    elapsed = time.perf_counter() - t0
    if record is None or record.status != "success":
        raise SystemExit(f"benchmark request did not succeed: {record}")
    return elapsed, record.output or b""


def floor_per_step(steps: int) -> float:
    """Seconds per step of a bare chain of thread-pool tasks, each submitting the next."""
    pool = ThreadPoolExecutor(WORKERS)
    done = threading.Event()

    def step(i: int) -> None:
        if i == steps:
            done.set()
        else:
            pool.submit(step, i + 1)

    t0 = time.perf_counter()
    pool.submit(step, 0)
    done.wait()
    elapsed = time.perf_counter() - t0
    pool.shutdown()
    return elapsed / steps


def measure(
    name: str, define: Callable[[Any, Any], None], nodes: int, repeat: int
) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        engine = engine_for(define)
        elapsed, _ = run_once(engine)
        engine.close()
        times.append(elapsed)
    counts: collections.Counter[str] = collections.Counter()
    engine = engine_for(define, counts)
    run_once(engine)
    engine.close()
    engine = engine_for(define)
    tracemalloc.start()
    run_once(engine)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.close()
    best = min(times)
    state_ops = sum(
        counts[k]
        for k in _COUNTED
    )
    return {
        "shape": name,
        "nodes": nodes,
        "seconds": best,
        "median": statistics.median(times),
        "us_per_node": best / nodes * 1e6,
        "store_ops_per_node": state_ops / nodes,
        "peak_mib": peak / 2**20,
        "counts": dict(counts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tenth of the sizes, one run")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    repeat = 1 if args.quick else 3
    shapes = [
        ("chain", chain(1000 // scale), 1000 // scale),
        ("fan-out/fan-in", fan(1000 // scale), 1000 // scale + 2),
        ("foreach", foreach(10_000 // scale), 10_000 // scale + 1),
        ("nested foreach", nested(100 // scale, 100), (100 // scale) * 101 + 1),
    ]
    floor = min(floor_per_step(2000) for _ in range(3))
    print(f"floor: thread-pool hand-off {floor * 1e6:.1f} us/step ({WORKERS} workers)")
    print(
        f"{'shape':<16}{'nodes':>7}{'total s':>9}{'us/node':>9}{'x floor':>9}"
        f"{'ops/node':>10}{'peak MiB':>10}"
    )
    for name, define, nodes in shapes:
        r = measure(name, define, nodes, repeat)
        print(
            f"{name:<16}{nodes:>7}{r['seconds']:>9.3f}{r['us_per_node']:>9.1f}"
            f"{r['us_per_node'] / (floor * 1e6):>9.1f}{r['store_ops_per_node']:>10.2f}"
            f"{r['peak_mib']:>10.1f}"
        )
    # linearity: the foreach at two sizes should cost the same per node
    small = measure("foreach", foreach(1000 // scale), 1000 // scale + 1, repeat)
    large = measure("foreach", foreach(10_000 // scale), 10_000 // scale + 1, repeat)
    print(
        f"linearity: foreach per-node cost at {10_000 // scale} vs {1000 // scale} branches: "
        f"{large['us_per_node'] / small['us_per_node']:.2f}x (1.0 = linear)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
