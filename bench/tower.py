"""Dashboard pages with 100,000 kept requests: `python bench/tower.py [--quick]`.

A real `faasflow up` on examples/stack.yml with faasflow-tower mounted at /ui; before it starts,
100,000 ended requests of the flow `report` (90 % success, 10 % failure, created over the last
48 hours) are loaded straight into the request index of its sqlite state store, and one real
request runs through it. Then, over one kept-alive connection, each page is timed next to its
floor, the flow route the page reads its data from (measured in the same run):

- first page of the request list  vs  GET /function/report/flow?limit=50
- status=failure page             vs  GET /function/report/flow?status=failure&limit=50
- the request page                vs  GET /function/report/flow/<id>
- the flow list (last hour's figures of every flow: up to 1,000 entries per flow)

Every page also asks the gateway for /system/functions first (the auth gate), which the floors
do not. --quick keeps 10,000.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from faasflow.engine.index import IndexEntry, RequestIndex
from faasflow.engine.records import RECORDS
from faasflow.runtime.process import GatewayProcess

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "examples" / "stack.yml"
BATCH = 200
RUNS = 30


def load(path: Path, flow: str, count: int) -> float:
    from faasflow.default_plugins.sqlite import SqliteStateStore

    started = time.perf_counter()
    states = SqliteStateStore.from_options({"path": str(path)})
    book = states.scoped(flow, RECORDS)
    now = time.time()
    batch: dict[str, str] = {}
    for i in range(count):
        failed = i % 10 == 0
        created = now - 48 * 3600 + i * (48 * 3600 / count)
        entry = IndexEntry(f"b{i:08d}", "failure" if failed else "success", created,
                           created + 0.2, "0_2_words" if failed else None,
                           "ValueError: refused input" if failed else None)
        batch.update(RequestIndex.keys_of_ended(entry))
        if len(batch) >= BATCH or i == count - 1:
            book.transaction({}, batch)
            batch = {}
    states.close()
    return time.perf_counter() - started


def timer(url: str) -> Callable[[str], float]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

    def median_ms(path: str) -> float:
        def get() -> None:
            conn.request("GET", path)
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 200, (path, reply.status, body[:300])

        get()
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            get()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    return median_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 kept requests")
    args = parser.parse_args()
    count = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="faasflow-bench-tower-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        loaded = load(data / "state.db", "report", count)
        with GatewayProcess(STACK, data_dir=data, processes=2) as gateway:
            if f"{gateway.url}/ui/" not in gateway.text:
                print("faasflow-tower is not installed: pip install -e plugins/faasflow_tower",
                      file=sys.stderr)
                return 2
            rid = gateway.post("/function/report", data=b"a few words",
                               headers={"X-Faas-Flow-Wait": "30"}).headers["X-Faas-Flow-Reqid"]
            ms = timer(gateway.url)
            print(f"{count:,} kept requests of `report` (loaded into sqlite in {loaded:.1f} s); "
                  f"ms per page, median of {RUNS}, with its floor in the same run")
            rows = [
                ("first page", "/ui/flows/report/requests", "/function/report/flow?limit=50"),
                ("status=failure", "/ui/flows/report/requests?status=failure",
                 "/function/report/flow?status=failure&limit=50"),
                ("request page", f"/ui/flows/report/requests/{rid}",
                 f"/function/report/flow/{rid}"),
                ("flow list", "/ui/", "/function/report/flow?since=" +
                 f"{time.time() - 3600:.0f}&limit=1000"),
            ]
            for name, page, floor in rows:
                page_ms, floor_ms = ms(page), ms(floor)
                print(f"  {name:<15} {page_ms:7.2f} ms | floor {floor_ms:6.2f} ms "
                      f"({page_ms / floor_ms:4.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
