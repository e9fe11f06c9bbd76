"""faasflow's side of the peer comparison (W1-W3 of issue 17): `python bench/workloads.py`.

The same workloads as bench/peers/: W1 a chain of N steps, W2 a fan-out of N branches into one
aggregator, W3 a 10x10 nested foreach aggregated at both levels. Every step adds 1 to its
input, so each result is checked (W1 = N, W2 = N, W3 = 100). Four deployments:

  memory   in-process engine, memory stores (steps are inline `modify` nodes)
  sqlite   in-process engine, sqlite state + filesystem data (steps inline)
  up       `faasflow up` (2 worker processes, sqlite + filesystem), every step a call of a
           python3-http function through the gateway, the request waited for with
           X-Faas-Flow-Wait
  up-etcd  the same on the etcd state store of .ci/services (only when ETCD_ENDPOINTS is set)
  up-http-calls, up-http-handoff, up-http
           `up` with FAASFLOW_SAME_PROCESS_CALLS=0 (every call through the gateway), with
           FAASFLOW_SAME_WORKER_ITERATIONS=0 (every hand-off through the gateway), and with
           both: what each shortcut buys

Prints one JSON object {deployment: {workload: [seconds, ...]}} on stdout (--json) or a table.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.plugins import Registry
from faasflow.runtime.process import GatewayProcess
from faasflow.runtime.python3http import wsgi_app
from faasflow.settings import Settings

#: (name, flow source key, N, units the time is divided by, the checked output)
WORKLOADS: list[tuple[str, str, int, int, int]] = [
    ("W1 10", "chain", 10, 10, 10),
    ("W1 100", "chain", 100, 100, 100),
    ("W2 100", "fan", 100, 100, 100),
    ("W2 1000", "fan", 1000, 1000, 1000),
    ("W3 10x10", "nested", 10, 100, 100),
]

# The flows as handler source: `step(node)` makes a node one no-op step; in-process it is an
# inline modifier, behind `faasflow up` a call of the python3-http function `inc`.
FLOWS = {
    "chain": '''
def define(flow, context):
    dag = flow.dag()
    dag.node("n0").modify(lambda d: b"0")
    for i in range(1, N + 1):
        step(dag.node(f"n{i}"))
        dag.edge(f"n{i - 1}", f"n{i}")
''',
    "fan": '''
def define(flow, context):
    dag = flow.dag()
    dag.node("start").modify(lambda d: b"0")
    dag.node("join", aggregator=lambda found: str(sum(int(v) for v in found.values())).encode())
    for i in range(N):
        step(dag.node(f"b{i}"))
        dag.edge("start", f"b{i}")
        dag.edge(f"b{i}", "join")
''',
    "nested": '''
def total(found):
    return str(sum(int(v) for v in found.values())).encode()


def define(flow, context):
    dag = flow.dag()
    outer = dag.foreach_branch("outer", lambda d: {str(i): b"0" for i in range(N)},
                               aggregator=total)
    inner = outer.foreach_branch("inner", lambda d: {str(i): b"0" for i in range(N)},
                                 aggregator=total)
    step(inner.node("leaf"))
''',
}

INLINE_STEP = '''
def step(node):
    node.modify(lambda d: str(int(d) + 1).encode())
'''
CALL_STEP = '''
def step(node):
    node.apply("inc")
'''
INC = '''
def handle(event, context):
    return str(int(event.body) + 1)
'''


def flow_source(key: str, n: int, step: str) -> str:
    return f"N = {n}\n" + step + textwrap.dedent(FLOWS[key])


def define_of(key: str, n: int) -> Callable[[Any, Any], None]:
    namespace: dict[str, Any] = {}
    exec(compile(flow_source(key, n, INLINE_STEP), f"<{key}>", "exec"), namespace)
    return namespace["define"]  # type: ignore[no-any-return]


def check(got: bytes, expected: int, what: str) -> None:
    if got.strip() != str(expected).encode():
        raise SystemExit(f"faasflow {what}: output {got[:200]!r}, expected {expected}")


def in_process(stores: str, repeat: int, workdir: Path) -> dict[str, list[float]]:
    """Each workload on one engine, as a server keeps it: its stores open, its pool started
    (the warm-up run opens them; a new engine per request paid ~5 ms of connections and
    threads, as neither peer does)."""
    results: dict[str, list[float]] = {}
    for name, key, n, _, expected in WORKLOADS:
        env = {"FAASFLOW_LOCAL_WORKERS": "8"}
        if stores == "sqlite":
            run_dir = workdir / f"{key}-{n}"
            env.update(FAASFLOW_SQLITE_PATH=str(run_dir / "state.db"),
                       FAASFLOW_FILESYSTEM_PATH=str(run_dir / "data"))
        settings = Settings(environ=env)
        registry = Registry.shared(settings)
        backends = Backends(
            registry.create(Kind.STATE_STORE, settings, stores),
            registry.create(Kind.DATA_STORE, settings,
                            "filesystem" if stores == "sqlite" else "memory"),
            registry.create(Kind.TRACER, settings, "none"),
            registry.create(Kind.INVOKER, settings, "local"),
        )
        engine = Engine(Flow(define_of(key, n), name=f"w-{key}"), settings, backends)
        times = []
        try:
            for i in range(repeat + 1):  # the first is a warm-up
                t0 = time.perf_counter()
                started = engine.start(b"")
                record = engine.wait(started.request_id, timeout=600)
                elapsed = time.perf_counter() - t0
                if record is None or record.status != "success":
                    raise SystemExit(
                        f"faasflow {stores} {name}: request did not succeed: {record}")
                check(record.output or b"", expected, f"{stores} {name}")
                if i:
                    times.append(elapsed)
        finally:
            engine.close()
        results[name] = times
    return results


def write_stack(root: Path, environment: dict[str, str] | None, suffix: str = "") -> Path:
    lines = ["version: 1.0", "provider:", "  name: openfaas", "functions:"]
    for key, n in {(key, n) for _, key, n, _, _ in WORKLOADS}:
        name = f"w-{key}-{n}{suffix}"
        (root / name).mkdir(parents=True)
        (root / name / "handler.py").write_text(flow_source(key, n, CALL_STEP))
        lines += [f"  {name}:", "    lang: faasflow", f"    handler: ./{name}"]
        if environment:
            lines.append("    environment:")
            lines += [f"      {k}: {json.dumps(v)}" for k, v in environment.items()]
    (root / "inc").mkdir(parents=True)
    (root / "inc" / "handler.py").write_text(INC.lstrip())
    lines += ["  inc:", "    lang: python3-http", "    handler: ./inc"]
    stack = root / "stack.yml"
    stack.write_text("\n".join(lines) + "\n")
    return stack


#: The `faasflow up` deployments that turn shortcuts off, and the gateway's environment.
OPT_OUTS = {
    "up-http-calls": {"FAASFLOW_SAME_PROCESS_CALLS": "0"},
    "up-http-handoff": {"FAASFLOW_SAME_WORKER_ITERATIONS": "0"},
    "up-http": {"FAASFLOW_SAME_PROCESS_CALLS": "0", "FAASFLOW_SAME_WORKER_ITERATIONS": "0"},
}


def start_gateway(workdir: Path, environment: dict[str, str] | None,
                  suffix: str = "", gateway_env: dict[str, str] | None = None
                  ) -> GatewayProcess:
    stack = write_stack(workdir / "stack", environment, suffix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    env.update(gateway_env or {})
    return GatewayProcess(stack, data_dir=workdir / "data", processes=2, env=env,
                          extra=["--concurrency", "8", "--quiet"]).start()


def through_up(repeat: int, workdir: Path, environment: dict[str, str] | None = None,
               gateway_env: dict[str, str] | None = None) -> dict[str, list[float]]:
    # a flow name of its own on a shared store, so runs never meet in a namespace
    suffix = f"-{uuid.uuid4().hex[:8]}" if environment else ""
    gateway = start_gateway(workdir, environment, suffix, gateway_env)
    session = requests.Session()
    results: dict[str, list[float]] = {}
    try:
        for name, key, n, _, expected in WORKLOADS:
            url = f"{gateway.url}/function/w-{key}-{n}{suffix}"
            times = []
            for i in range(repeat + 1):
                t0 = time.perf_counter()
                answer = session.post(url, data=b"", headers={"X-Faas-Flow-Wait": "600"},
                                      timeout=660)
                elapsed = time.perf_counter() - t0
                if answer.status_code != 200:
                    raise SystemExit(f"faasflow up {name}: {answer.status_code} {answer.text}")
                check(answer.content, expected, f"up {name}")
                if i:
                    times.append(elapsed)
            results[name] = times
    finally:
        session.close()
        gateway.stop()
        if environment:
            drop_records(environment, suffix)
    return results


def etcd_environment() -> dict[str, str] | None:
    endpoints = os.environ.get("ETCD_ENDPOINTS")
    if not endpoints:
        return None
    host, port = endpoints.split(",")[0].rsplit("/", 1)[-1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return None
    return {"FAASFLOW_STATE_STORE": "etcd", "FAASFLOW_ETCD_ENDPOINTS": endpoints}


def drop_records(environment: dict[str, str], suffix: str) -> None:
    """Request records are kept on purpose (FAASFLOW_RECORD_RETENTION): drop this run's from
    the shared etcd."""
    settings = Settings.from_env(environment)
    store = Registry.from_settings(settings).create(Kind.STATE_STORE, settings)
    try:
        for _, key, n, _, _ in WORKLOADS:
            store.scoped(f"w-{key}-{n}{suffix}", "~records").cleanup()
    except Exception as exc:  # the figures stand; say what is left behind
        print(f"could not drop the records of w-*{suffix} from etcd: {exc}", file=sys.stderr)
    finally:
        store.close()


def median_ms(call: Callable[[int], object], n: int, warmup: int = 20) -> float:
    for i in range(warmup):
        call(i)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def floors(workdir: Path, n: int = 300) -> dict[str, float]:
    """The costs a step must pay, measured in this run (ms, median of n)."""
    out: dict[str, float] = {}
    gateway = start_gateway(workdir / "floors", None)
    session = requests.Session()
    try:
        sync = f"{gateway.url}/function/inc"
        asynchronous = f"{gateway.url}/async-function/inc"

        def call(i: int) -> None:
            answer = session.post(sync, data=b"1", timeout=30)
            if answer.status_code != 200 or answer.content != b"2":
                raise SystemExit(f"floor call: {answer.status_code} {answer.content!r}")

        def accepted(i: int) -> None:
            answer = session.post(asynchronous, data=b"1", timeout=30)
            if answer.status_code != 202:
                raise SystemExit(f"floor async call: {answer.status_code} {answer.text}")

        out["python3-http call via gateway"] = median_ms(call, n)
        out["async call accepted (202)"] = median_ms(accepted, n)
    finally:
        session.close()
        gateway.stop()
    out["python3-http handler in-process (WSGI)"] = median_ms(_handler_in_process(), n)
    out[PYTHON_FLOOR] = median_ms(_python_work(), n) / PYTHON_ROUNDS
    db = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB)")
    out["sqlite write (WAL)"] = median_ms(
        lambda i: db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{i}", b"v")), n)
    db.close()
    endpoints = os.environ.get("ETCD_ENDPOINTS")
    if endpoints and etcd_environment() is not None:  # an etcd that answers, as for up-etcd
        import pyetcd  # type: ignore[import-untyped]

        host, port = endpoints.split(",")[0].rsplit("/", 1)[-1].rsplit(":", 1)
        client = pyetcd.client(host, int(port))
        key = f"bench-peers/{uuid.uuid4().hex}"
        client.put(key, "0")
        tx = client.transactions
        out["etcd txn CAS"] = median_ms(lambda i: client.transaction(
            compare=[tx.value(key) == "0"], success=[tx.put(key, "0")], failure=[]), n)
        client.delete(key)
        client.close()
    return out


def _handler_in_process() -> Callable[[int], object]:
    """One call of ``inc`` through the python3-http WSGI adapter, no socket: what a call
    served in the flow's own worker cannot avoid."""
    namespace: dict[str, Any] = {}
    exec(compile(INC, "<inc>", "exec"), namespace)
    app = wsgi_app(namespace["handle"], "inc")

    def call(i: int) -> None:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "QUERY_STRING": "",
                   "CONTENT_LENGTH": "1", "CONTENT_TYPE": "text/plain",
                   "wsgi.input": io.BytesIO(b"1"), "SERVER_PROTOCOL": "HTTP/1.1",
                   "HTTP_X_CALL_ID": f"floor-{i}"}
        status: list[str] = []

        def start_response(line: str, headers: Any, exc_info: Any = None
                           ) -> Callable[[bytes], object]:
            status.append(line)
            return lambda chunk: None

        body = b"".join(app(environ, start_response))
        if body != b"2" or not status[0].startswith("200"):
            raise SystemExit(f"floor handler: {status} {body!r}")

    return call


#: The CPU floor's name, and how many rounds of its work one timed sample makes.
PYTHON_FLOOR = "python work (a marker encoded, signed, decoded)"
PYTHON_ROUNDS = 100


def _python_work() -> Callable[[int], object]:
    """Engine-free Python of the kind a step is made of: a marker's JSON written, an HMAC of
    it, the JSON read back, a few calls and f-strings. It measures the interpreter and the
    CPU, not faasflow: the in-process figures in units of it tell a faster engine from a
    calmer machine between runs."""
    key = b"k" * 32
    encode = json.JSONEncoder(separators=(",", ":")).encode

    def marker(i: int, round_: int) -> dict[str, Any]:
        return {"p": "claimed", "token": f"t{i}-{round_}", "until": 1.5 * i, "start": 0.5 * i,
                "att": 1, "n": f"n{round_}"}

    def call(i: int) -> None:
        for round_ in range(PYTHON_ROUNDS):
            raw = encode(marker(i, round_))
            signed = hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()
            if json.loads(raw)["token"] != f"t{i}-{round_}" or len(signed) != 64:
                raise SystemExit("python floor: marker did not read back")

    return call


def units() -> dict[str, int]:
    return {name: unit for name, _, _, unit, _ in WORKLOADS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", action="append",
                        help="memory, sqlite, up, up-etcd, " + ", ".join(OPT_OUTS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--floors", action="store_true", help="also measure the floors")
    args = parser.parse_args(argv)
    chosen = args.only or ["memory", "sqlite", "up", *OPT_OUTS, "up-etcd"]
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="faasflow-workloads-") as tmp:
        work = Path(tmp)
        floor = floors(work) if args.floors else {}
        for deployment in chosen:
            (work / deployment).mkdir()
            if deployment in ("memory", "sqlite"):
                out[deployment] = in_process(deployment, args.repeat, work / deployment)
            elif deployment == "up":
                out[deployment] = through_up(args.repeat, work / deployment)
            elif deployment in OPT_OUTS:
                out[deployment] = through_up(args.repeat, work / deployment,
                                             gateway_env=OPT_OUTS[deployment])
            elif deployment == "up-etcd":
                environment = etcd_environment()
                if environment is None:
                    print("up-etcd skipped: no etcd at ETCD_ENDPOINTS (run .ci/services up)",
                          file=sys.stderr)
                    continue
                out[deployment] = through_up(args.repeat, work / deployment, environment)
    if args.json:
        print(json.dumps({"faasflow": out, "floors": floor}))
    else:
        per = units()
        for deployment, results in out.items():
            cells = [f"{name} {statistics.median(t) / per[name] * 1e3:.3f}"
                     for name, t in results.items()]
            print(f"{deployment:<8} ms per unit: " + "  ".join(cells))
        for what, ms in floor.items():
            print(f"floor    {what}: {ms:.3f} ms")
        print_goals(out, floor)
    return 0


#: Issue 17's in-process goals: (deployment, workload, most ms per unit).
GOALS = (("memory", "W1 100", 0.030), ("memory", "W2 1000", 0.020),
         ("sqlite", "W1 100", 0.05), ("sqlite", "W2 1000", 0.2))
#: The floors issue 17 measured in the run beside its goals (ms), by this file's names.
ISSUE_FLOORS = {
    "python3-http call via gateway": 0.55,
    "async call accepted (202)": 0.57,
    "sqlite write (WAL)": 0.007,
}


def machine_factor(floor: dict[str, float]) -> float | None:
    """How many times longer this run's floors took than issue 17's (geometric mean of the
    floors both measured), or None without floors.

    The issue set its goals in milliseconds on a faster machine. Its own floors are the only
    record of that machine's speed, so each goal is also judged scaled by this factor."""
    ratios = [floor[name] / ms for name, ms in ISSUE_FLOORS.items() if floor.get(name)]
    if not ratios:
        return None
    return float(statistics.geometric_mean(ratios))


def print_goals(out: dict[str, dict[str, list[float]]], floor: dict[str, float]) -> None:
    """Each figure against issue 17's goal, and `faasflow up` against the floors it pays."""
    per = units()

    def ms(deployment: str, workload: str) -> float:
        return statistics.median(out[deployment][workload]) / per[workload] * 1e3

    write = floor.get("sqlite write (WAL)")
    python = floor.get(PYTHON_FLOOR)
    factor = machine_factor(floor)
    if factor is not None:
        print(f"machine  this run's floors took {factor:.2f}x issue 17's (geometric mean of "
              + ", ".join(f"{name} {floor[name]:.3f}/{ms:g} ms" for name, ms in
                          ISSUE_FLOORS.items() if floor.get(name)) + ")")
    for deployment, workload, goal in GOALS:
        if deployment not in out:
            continue
        got = ms(deployment, workload)
        verdict = "met" if got <= goal else "not met"
        print(f"goal     {deployment} {workload}: {got:.3f} ms per unit, goal <= {goal:g} "
              f"({got / goal:.2f}x the goal: {verdict})")
        if factor is not None:
            scaled = goal * factor
            verdict = "met" if got <= scaled else "not met"
            print(f"goal     {deployment} {workload} on issue 17's machine: {got / factor:.3f} ms "
                  f"per unit (this run / {factor:.2f}), goal <= {goal:g}: {verdict}")
        if deployment == "memory" and python:
            print(f"figure   {deployment} {workload} in python floors: {got / python:.1f} "
                  f"floors of this run ({python * 1e3:.2f} us; compares runs, not machines)")
        if deployment == "sqlite" and write:
            # the goal in sqlite writes (as many as it allowed), at this run's write
            allowed = goal / ISSUE_FLOORS["sqlite write (WAL)"]
            verdict = "met" if got / write <= allowed else "not met"
            print(f"goal     {deployment} {workload} in sqlite writes: "
                  f"{got / write:.1f} writes of this run ({write:.3f} ms), goal <= "
                  f"{allowed:.1f} (issue 17's write: "
                  f"{ISSUE_FLOORS['sqlite write (WAL)']} ms): {verdict}")
    handler = floor.get("python3-http handler in-process (WSGI)")
    call = floor.get("python3-http call via gateway")
    hand_off = floor.get("async call accepted (202)")
    for deployment in ("up", *OPT_OUTS):
        if deployment not in out:
            continue
        cells = []
        if handler and write and deployment == "up":
            kept = handler + 4 * write  # the handler, the queue row in and out, two state txns
            cells += [f"{w} {ms(deployment, w) / kept:.1f}x" for w in out[deployment]]
            print(f"floor x  {deployment} (a kept step: handler in-process + 4 sqlite writes = "
                  f"{kept:.3f} ms): " + "  ".join(cells))
        if call and hand_off:
            over_http = call + hand_off
            cells = [f"{w} {ms(deployment, w) / over_http:.2f}x" for w in out[deployment]]
            print(f"floor x  {deployment} (a step over HTTP: call + hand-off through the "
                  f"gateway = {over_http:.3f} ms): " + "  ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
