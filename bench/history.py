"""The request index at scale: `python bench/history.py [--quick]`.

Kept requests of one flow (90 % success, 10 % failure at one of two nodes; 100,000 a day, the
newest a second ago, as a busy flow keeps them under the default one-day retention) are loaded
straight into the index in bulk transactions, then the first page and a status-filtered page
(``GET /flow?limit=50`` and ``GET /flow?status=failure&limit=50``) are timed through the same
WSGI server `faasflow up` runs its flows on, over a kept-alive HTTP connection. It does so at
1,000, 10,000 and 100,000 kept requests (1,000 and 10,000 with --quick), on sqlite and on a
private etcd started for the run in a temporary directory (the etcd of .ci/services is shared:
a benchmark's hundreds of thousands of writes would stay in its history until a compaction).

Floors, measured in the same run: on etcd one raw range read of 51 keys with the etcd client,
from the newest to the end of the index's range, as any client would ask (the target is a page
under 10x of it); on sqlite the same raw SELECT of 51 rows with sqlite3
(the target is a page under 100 ms).
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from faasflow.engine.index import IndexEntry, RequestIndex
from faasflow.engine.records import RECORDS
from faasflow.interfaces import StateStore
from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import serve
from faasflow.settings import Settings

BATCH = 25  # entries per load transaction (etcd allows 128 operations per txn)
RUNS = 30


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(lambda data: data)
    dag.node("b").modify(lambda data: data)
    dag.edge("a", "b")


SPACING = 86400 / 100_000  # seconds between two starts: 100,000 a day


def load(states: StateStore, first: int, last: int, newest: float) -> None:
    """Index requests ``first`` .. ``last - 1`` as ended (request ``i`` started ``i`` spacings
    before ``newest``, so each load adds older ones), in bulk transactions from 8 threads."""
    batches: list[dict[str, str]] = [{}]
    for i in range(first, last):
        failed = i % 10 == 0
        started = newest - i * SPACING
        entry = IndexEntry(
            f"r{i:07d}", "failure" if failed else "success", started, started + 0.2,
            ("0_1_a" if i % 20 == 0 else "0_2_b") if failed else None,
            "ValueError: refused input" if failed else None,
        )
        batches[-1].update(RequestIndex.keys_of_ended(entry))
        if (i + 1 - first) % BATCH == 0:
            batches.append({})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda batch: states.transaction({}, batch), filter(None, batches)))


def medians_ms(*fns: Callable[[], object], runs: int = RUNS) -> list[float]:
    """Median time of each of ``fns``, run in turn (interleaved, so a change of load on the
    shared machine or server weighs on every figure alike)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, kept in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def page_timer(port: int, query: str) -> Callable[[], object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get() -> object:
        conn.request("GET", f"/flow?{query}")
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200, body[:300]
        return body

    return get


def run(backend: str, env: dict[str, str], states: StateStore, floor: Callable[[], object],
        sizes: list[int]) -> None:
    flow = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env({**env, "FAASFLOW_FLOW_NAME": flow})
    app = FlowApp(define, settings)
    server = serve(app).start()
    book_states = states.scoped(flow, RECORDS)
    newest = time.time() - 1
    kept = 0
    try:
        print(f"\n{backend}: ms per page (median of {RUNS}) | floor ms | x floor")
        for size in sizes:
            loading = time.perf_counter()
            load(book_states, kept, size, newest)
            kept = size
            loaded = time.perf_counter() - loading
            floor_ms, first, failed = medians_ms(
                lambda: floor(book_states),
                page_timer(server.port, "limit=50"),
                page_timer(server.port, "status=failure&limit=50"),
            )
            print(f"  {size:>7,} kept (loaded in {loaded:5.1f} s): first page {first:6.2f} ms "
                  f"({first / floor_ms:4.1f}x) | status=failure {failed:6.2f} ms "
                  f"({failed / floor_ms:4.1f}x) | floor {floor_ms:5.2f} ms")
    finally:
        server.close()
        app.close()
        book_states.cleanup()


def sqlite_floor(path: Path) -> Callable[[StateStore], object]:
    db = sqlite3.connect(str(path), check_same_thread=False)

    def read(states: StateStore) -> object:
        low = states.namespace + "ix/t/"
        return db.execute("SELECT key, value FROM faasflow_state WHERE key > ? AND key < ? "
                          "ORDER BY key LIMIT 51", (low, low[:-1] + "0")).fetchall()

    return read


def etcd_floor(endpoint: str) -> Callable[[StateStore], object]:
    import pyetcd
    from pyetcd.utils import prefix_range_end

    host, _, port = endpoint.partition(":")
    client = pyetcd.client(host=host, port=int(port or 2379))

    def read(states: StateStore) -> object:
        low = (states.namespace + "ix/t/").encode()
        return list(client.get_range(low, prefix_range_end(low), limit=51))

    return read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 kept only")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]

    from faasflow.default_plugins.sqlite import SqliteStateStore

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        states = SqliteStateStore.from_options({"path": str(path)})
        env = {"FAASFLOW_STATE_STORE": "sqlite", "FAASFLOW_DATA_STORE": "sqlite",
               "FAASFLOW_SQLITE_PATH": str(path)}
        try:
            run("sqlite", env, states, sqlite_floor(path), sizes)
        finally:
            states.close()

    if shutil.which("etcd") is None:
        print("\netcd: skipped (no etcd binary; .ci/services installs it)")
        return 0
    from faasflow_etcd.store import EtcdStateStore

    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        server, endpoint = private_etcd(Path(tmp))
        server.start()
        states = EtcdStateStore.from_options({"endpoints": endpoint})
        env = {"FAASFLOW_STATE_STORE": "etcd", "FAASFLOW_ETCD_ENDPOINTS": endpoint}
        try:
            run("etcd", env, states, etcd_floor(endpoint), sizes)
        finally:
            states.close()
            server.stop()
    return 0


def private_etcd(workdir: Path) -> tuple[Any, str]:
    """One etcd member on free loopback ports, its data in ``workdir``, and its endpoint."""
    import urllib.request

    from faasflow.testing import ServerProcess, free_port

    client, peer, metrics = free_port(), free_port(), free_port()

    def command() -> list[str]:
        return [
            "etcd", "--name", "bench", "--data-dir", str(workdir / "data"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{metrics}", "--log-level", "warn",
            "--logger", "zap",
        ]

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/health", timeout=1) as answer:
            return b'"health":"true"' in answer.read()

    server = ServerProcess("bench etcd", command=command, ready=healthy,
                           log=workdir / "etcd.log", ready_timeout=30.0)
    return server, f"127.0.0.1:{client}"


if __name__ == "__main__":
    sys.exit(main())
