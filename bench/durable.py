"""A foreach of N branches in-process on durable stores: `python bench/durable.py`.

Issue 17 asks for a 100,000-branch foreach on sqlite state + filesystem data in bounded memory,
linear in branches. Each size runs in a child process of its own (so its peak RSS is its own):
a foreach node fans out N branches of one inline step each (adds 1) into an aggregator that
sums them; the output is checked (= N). Printed per size: ms per branch, the child's peak RSS
above what it held before the request, and that per branch; with --tracemalloc a second child
reports the peak of Python allocations (slower: traced runs are not timed).

Floors, measured in the same run in the same directory: one raw SQLite write (WAL,
synchronous=NORMAL, autocommit) and one raw file write (a new file, written and closed), and
the same foreach on memory stores (the engine's own cost) for the sizes up to --memory-max.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLOW = '''
def total(found):
    return str(sum(int(v) for v in found.values())).encode()


def define(flow, context):
    dag = flow.dag()
    each = dag.foreach_branch("each", lambda d: {str(i): b"0" for i in range(N)},
                              aggregator=total)
    each.node("step").modify(lambda d: str(int(d) + 1).encode())
'''


def _rss_kb() -> int:
    """Resident set size now (the peak is ru_maxrss)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(n: int, stores: str, workdir: Path, traced: bool) -> dict[str, Any]:
    """One request of the N-branch foreach in this process; its figures."""
    import tracemalloc

    from faasflow import Flow
    from faasflow.backends import Kind
    from faasflow.engine import Backends, Engine
    from faasflow.plugins import Registry
    from faasflow.settings import Settings

    namespace: dict[str, Any] = {}
    exec(compile(f"N = {n}\n" + FLOW, "<foreach>", "exec"), namespace)
    env = {"FAASFLOW_LOCAL_WORKERS": "8",
           "FAASFLOW_SQLITE_PATH": str(workdir / "state.db"),
           "FAASFLOW_FILESYSTEM_PATH": str(workdir / "data")}
    settings = Settings(environ=env)
    registry = Registry.shared(settings)
    durable = stores == "sqlite"
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "sqlite" if durable else "memory"),
        registry.create(Kind.DATA_STORE, settings, "filesystem" if durable else "memory"),
        registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    )
    engine = Engine(Flow(namespace["define"], name="foreach"), settings, backends)
    base = _rss_kb()
    if traced:
        tracemalloc.start()
    try:
        t0 = time.perf_counter()
        started = engine.start(b"")
        record = engine.wait(started.request_id, timeout=3600)
        elapsed = time.perf_counter() - t0
    finally:
        engine.close()
    if record is None or record.status != "success":
        raise SystemExit(f"foreach {n} on {stores}: request did not succeed: {record}")
    if (record.output or b"").strip() != str(n).encode():
        raise SystemExit(f"foreach {n} on {stores}: output {record.output!r}, expected {n}")
    out: dict[str, Any] = {
        "seconds": elapsed,
        "rss_base_kb": base,
        "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    if traced:
        out["tracemalloc_peak_kb"] = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()
    return out


def run_child(n: int, stores: str, workdir: Path, traced: bool = False) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", str(n), stores, str(workdir)]
    if traced:
        command.append("--traced")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"foreach {n} on {stores} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _median_us(call: Any, n: int) -> float:
    for i in range(20):
        call(-1 - i)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def floors(workdir: Path, n: int = 2000) -> dict[str, float]:
    """Microseconds, median of n: one raw SQLite write and one raw file write."""
    db = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB)")
    out = {"sqlite write (WAL, NORMAL)": _median_us(
        lambda i: db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{i}", b"v")), n)}
    db.close()
    files = workdir / "floor-files"
    files.mkdir()

    def write(i: int) -> None:
        with open(files / f"f{i}", "wb") as file:
            file.write(b"v")

    out["file write (new file)"] = _median_us(write, n)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="comma-separated branch counts (default 1000,10000,100000)")
    parser.add_argument("--memory-max", type=int, default=10000,
                        help="largest size also run on memory stores (default 10000)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also report each size's peak of traced Python allocations")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("N", "STORES", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        n, stores, workdir = args.child
        print(json.dumps(child(int(n), stores, Path(workdir), args.traced)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="faasflow-durable-") as tmp:
        work = Path(tmp)
        floor = floors(work)
        for n in sizes:
            figures: dict[str, Any] = {"sqlite": run_child(n, "sqlite", work / f"sqlite-{n}")}
            if n <= args.memory_max:
                figures["memory"] = run_child(n, "memory", work / f"memory-{n}")
            if args.tracemalloc:
                traced = run_child(n, "sqlite", work / f"traced-{n}", traced=True)
                figures["sqlite"]["tracemalloc_peak_kb"] = traced["tracemalloc_peak_kb"]
            results[str(n)] = figures
    if args.json:
        print(json.dumps({"floors_us": floor, "foreach": results}))
        return 0
    for what, us in floor.items():
        print(f"floor  {what}: {us:.1f} us")
    for n, figures in results.items():
        durable = figures["sqlite"]
        per = durable["seconds"] / int(n) * 1e3
        grown = max(0, durable["rss_peak_kb"] - durable["rss_base_kb"])
        line = (f"foreach {int(n):>7}: {per:.3f} ms/branch on sqlite+filesystem, "
                f"peak RSS +{grown / 1024:.1f} MiB ({grown * 1024 / int(n):.0f} B/branch)")
        if "tracemalloc_peak_kb" in durable:
            line += f", tracemalloc peak {durable['tracemalloc_peak_kb'] / 1024:.1f} MiB"
        if "memory" in figures:
            mem = figures["memory"]["seconds"] / int(n) * 1e3
            line += f"; memory stores {mem:.3f} ms/branch (x{per / mem:.2f})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
