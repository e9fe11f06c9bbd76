"""W1-W3 on DBOS with its SQLite system database, run inside bench/.venvs/dbos.

`python dbos_bench.py DBFILE REPEAT` prints one JSON line {workload: [seconds, ...]} after one
warm-up per workload. A step is a @DBOS.step that adds 1 (checkpointed in SQLite); W1 is one
workflow calling N steps in turn; W2 a workflow starting N child workflows of one step each
(DBOS.start_workflow, the library's own fan-out) and summing their results; W3 a workflow
starting 10 such fan-outs of 10 as child workflows. Results are checked.
"""

from __future__ import annotations

import json
import sys
import time

from dbos import DBOS, DBOSConfig


@DBOS.step()
def inc(x: int) -> int:
    return x + 1


@DBOS.workflow()
def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@DBOS.workflow()
def one(x: int) -> int:
    return inc(x)


@DBOS.workflow()
def fan(n: int) -> int:
    handles = [DBOS.start_workflow(one, 0) for _ in range(n)]
    return sum(h.get_result() for h in handles)


@DBOS.workflow()
def nested(outer: int, inner: int) -> int:
    handles = [DBOS.start_workflow(fan, inner) for _ in range(outer)]
    return sum(h.get_result() for h in handles)


WORKLOADS = {
    "W1 10": (chain, (10,), 10), "W1 100": (chain, (100,), 100),
    "W2 100": (fan, (100,), 100), "W2 1000": (fan, (1000,), 1000),
    "W3 10x10": (nested, (10, 10), 100),
}


def main() -> int:
    db, repeat = sys.argv[1], int(sys.argv[2])
    config: DBOSConfig = {"name": "faasflow-peers", "system_database_url": f"sqlite:///{db}",
                          "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    try:
        results: dict[str, list[float]] = {}
        for name, (workflow, args, expected) in WORKLOADS.items():
            times = []
            for i in range(repeat + 1):  # the first is a warm-up
                t0 = time.perf_counter()
                got = DBOS.start_workflow(workflow, *args).get_result()
                elapsed = time.perf_counter() - t0
                if got != expected:
                    raise SystemExit(f"dbos {name}: result {got!r}, expected {expected!r}")
                if i:
                    times.append(elapsed)
            results[name] = times
        print(json.dumps(results))
    finally:
        DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
