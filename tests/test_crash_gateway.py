"""Hundreds of async fan-out requests through a real ``faasflow up`` while its worker processes
(and once the gateway itself) are killed with SIGKILL, on sqlite and on etcd; and etcd stopped
with SIGSTOP for 5 s in the middle of a batch.

No ``retry=`` in the flow and no client-chosen request ids. The functions count their own calls:
each logs its idempotency key, tag, pid, time and body (:mod:`faasflow.testing.calllog`) just
before it answers, and the flow's aggregator does the same from the flow's worker. The tests
then assert that every submission became exactly one request that succeeded with the right
output, that none is stuck, and that no node function and no aggregator ran twice -- except a
run that a kill or a visible failure interrupted: a second run of one idempotency key is
accepted only when a kill happened between the two runs (the first one's answer, or the
iteration that got it, died with the process), or when the gateway's output reports a failed
attempt of that request (a store call that timed out under load, say): at-least-once by design.
Those repeats are counted and printed.

Sizes come from ``FAASFLOW_CRASH_REQUESTS`` (default 500), ``FAASFLOW_CRASH_KILLS`` (default
12 worker kills per run) and ``FAASFLOW_CRASH_WAIT`` (seconds for the batch to finish, default
150).
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.runtime.process import GatewayProcess
from faasflow.testing import calllog

pytestmark = pytest.mark.slow

REQUESTS = int(os.environ.get("FAASFLOW_CRASH_REQUESTS", "500"))
KILLS = int(os.environ.get("FAASFLOW_CRASH_KILLS", "12"))
#: How long before a function's first run a kill may still have caused its repeat: the call
#: was on its way (through the gateway, queued for a busy worker) when its caller died.
CALL_IN_FLIGHT = 3.0
WAIT = float(os.environ.get("FAASFLOW_CRASH_WAIT", "150"))
#: The flow's name, new for each run: the shared etcd keeps the records of earlier runs.
FLOW = f"fan{uuid.uuid4().hex[:8]}"

FAN = """
    def define(flow, context):
        def join(inputs):
            out = inputs["l"] + b"+" + inputs["r"]
            append(COUNT_LOG, "agg", out.decode(), context.request_id + "/aggregator")
            return out

        dag = flow.dag()
        dag.node("s").apply("count", headers={"X-Tag": "s"})
        dag.node("l").apply("count", headers={"X-Tag": "l"})
        dag.node("r").apply("count", headers={"X-Tag": "r"})
        dag.node("j", aggregator=join).apply("count", headers={"X-Tag": "j"})
        dag.edge("s", "l")
        dag.edge("s", "r")
        dag.edge("l", "j")
        dag.edge("r", "j")
"""


def expected_output(body: str) -> str:
    return f"{body}.s.l+{body}.s.r.j"


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    log = tmp_path / "calls.log"
    # flows may share worker processes, so the flow's handler names the log itself
    fan = calllog.append_source() + textwrap.dedent(FAN) + f"\nCOUNT_LOG = {str(log)!r}\n"
    return calllog.write_stack(tmp_path, FLOW, fan, {"COUNT_LOG": str(log)})


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def worker_pids(gateway: GatewayProcess) -> list[int]:
    """The gateway's worker processes (its children running faasflow.runtime.worker)."""
    assert gateway.process is not None
    pids = []
    for child in _children(gateway.process.pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"faasflow.runtime.worker" in cmdline:
            pids.append(child)
    return pids


class Chaos:
    """Kills random workers of the current gateway every ``interval`` seconds, ``kills`` times;
    remembers when (``times``) and whom."""

    def __init__(self, kills: int, interval: float, seed: int = 11) -> None:
        self.kills = kills
        self.interval = interval
        self.random = random.Random(seed)
        self.times: list[float] = []
        self.killed: list[int] = []
        self.gateway: GatewayProcess | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self._thread.start()

    def note(self) -> None:
        """Record a kill made elsewhere (the gateway itself)."""
        self.times.append(time.time())

    def _run(self) -> None:
        while len(self.killed) < self.kills and not self._stop.wait(self.interval):
            gateway = self.gateway
            pids = worker_pids(gateway) if gateway is not None else []
            if not pids:
                continue
            victim = self.random.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.times.append(time.time())
            self.killed.append(victim)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def submit(gateway: GatewayProcess, count: int) -> list[str]:
    """POST ``count`` async starts (bodies ``b0000`` ...); return the bodies the gateway took.
    A start refused while workers restart is sent again, as a client would."""
    bodies = [f"b{i:04d}" for i in range(count)]

    def one(body: str) -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = requests.post(f"{gateway.url}/async-function/{FLOW}", data=body, timeout=30)
                if reply.status_code == 202:
                    return body
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway never accepted {body}")
            time.sleep(0.1)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, bodies))


def read(gateway: GatewayProcess, path: str) -> Any:
    """GET a flow route, again while the worker that serves it restarts (502/503)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            reply = requests.get(f"{gateway.url}{path}", timeout=60)
            if reply.status_code == 200:
                return reply.json()
            problem = f"{reply.status_code} {reply.text}"
            if reply.status_code < 500:
                raise AssertionError(f"GET {path}: {problem}")
        except requests.RequestException as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise AssertionError(f"GET {path} kept failing: {problem}")
        time.sleep(0.2)


def records(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """Every request of the flow, page after page."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = "?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = read(gateway, f"/function/{FLOW}/flow{query}")
        found += page["requests"]
        cursor = page.get("next")
        if not cursor:
            return found


def wait_done(gateway: GatewayProcess, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = records(gateway)
        if len(found) >= count and all(r["status"] not in ("running", "paused") for r in found):
            break
        time.sleep(0.5)
    # the listing leaves outputs out; each request's own record has it
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda r: full_record(gateway, r["id"]), found))


def full_record(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = read(gateway, f"/function/{FLOW}/flow/{request_id}")
    return doc


def read_calls(log: Path) -> list[tuple[str, str, int, float, str]]:
    return [(c.key, c.tag, c.pid, c.time, c.body) for c in calllog.read(log)]


# a failed attempt: a 5xx, a timeout, a store failure (not a refused duplicate: 409/410)
_TROUBLE = re.compile(
    r"(?i)answered 5\d\d|timed? ?out|backend ?error|backend failure|\b50[234]\b|retrying"
)


def troubled(output: str) -> set[str]:
    """Request ids the gateway's output reports trouble for (a failed attempt, a retry)."""
    found: set[str] = set()
    for line in output.splitlines():
        if _TROUBLE.search(line):
            found.update(re.findall(r"\b[0-9a-v]{20,23}\b", line))
    return found


def check_batch(
    log: Path,
    found: list[dict[str, Any]],
    bodies: list[str],
    kill_times: list[float],
    output: str = "",
) -> dict[str, int]:
    """Assert the batch converged; return the figures (repeats excused by a kill)."""
    by_status = collections.Counter(r["status"] for r in found)
    stuck = [r["id"] for r in found if r["status"] in ("running", "paused")]
    assert not stuck, f"{len(stuck)} requests stuck: {stuck[:5]} (statuses {dict(by_status)})"
    failed = [(r["id"], r.get("error")) for r in found if r["status"] != "success"]
    assert not failed, f"{len(failed)} requests did not succeed: {failed[:5]}"
    outputs = collections.Counter(r["output"] for r in found)
    wanted = collections.Counter(expected_output(b) for b in bodies)
    assert outputs == wanted, (
        f"{len(found)} records for {len(bodies)} submissions; unexpected outputs "
        f"{list((outputs - wanted).items())[:3]}, missing {list((wanted - outputs).items())[:3]}"
    )

    calls = read_calls(log)
    # one request per submission: the first node saw each body under one request id only
    starts: dict[str, set[str]] = collections.defaultdict(set)
    for key, tag, _, _, body in calls:
        if tag == "s":
            starts[body].add(key.split("/", 1)[0])
    twice = {body: ids for body, ids in starts.items() if len(ids) > 1}
    assert not twice, f"{len(twice)} submissions made more than one request: {list(twice)[:5]}"
    assert set(starts) == set(bodies)

    runs: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for key, tag, _, when, _ in calls:
        runs[(key, tag)].append(when)
    excused: collections.Counter[str] = collections.Counter()
    after_failure: collections.Counter[str] = collections.Counter()
    unexcused = []
    reported = troubled(output)
    for (key, tag), times in runs.items():
        times.sort()
        for first, second in zip(times, times[1:], strict=False):
            # a call in flight when its caller (or the gateway) was killed still reaches its
            # function, which may run after the kill: a kill shortly before the first run
            # can cause the repeat as well as one between the runs
            if any(first - CALL_IN_FLIGHT <= k <= second for k in kill_times):
                excused[tag] += 1
            elif key.split("/", 1)[0] in reported:
                # an attempt failed visibly (a store timeout under load, say): at least once
                after_failure[tag] += 1
            else:
                unexcused.append((key, tag, len(times)))
    assert not unexcused, (
        f"{len(unexcused)} node functions or aggregators ran again with no kill in between "
        f"(or up to {CALL_IN_FLIGHT} s before; kills at {sorted(kill_times)}): "
        f"{unexcused[:5]}"
    )
    figures = {"requests": len(found), "calls": len(calls)}
    figures.update({f"repeats_after_a_kill[{tag}]": n for tag, n in sorted(excused.items())})
    figures.update(
        {f"repeats_after_a_failure[{tag}]": n for tag, n in sorted(after_failure.items())}
    )
    return figures


def run_batch(
    stack: Path, data_dir: Path, env: dict[str, str], *, kill_gateway: bool
) -> dict[str, int]:
    log = stack.parent / "calls.log"
    gateway = GatewayProcess(stack, data_dir=data_dir, env=env).start()
    chaos = Chaos(KILLS, interval=0.6)
    gateways = [gateway]
    try:
        chaos.start(gateway)
        bodies = submit(gateway, REQUESTS)
        if kill_gateway:
            while len(chaos.killed) < KILLS // 2 and chaos._thread.is_alive():
                time.sleep(0.1)
            gateway.kill()
            chaos.note()
            gateway = GatewayProcess(stack, data_dir=data_dir, env=env).start()
            gateways.append(gateway)
            chaos.gateway = gateway
        found = wait_done(gateway, len(bodies))
        chaos.stop()
        figures = check_batch(
            log, found, bodies, chaos.times, "".join(g.text for g in gateways)
        )
    except BaseException:
        text = "".join(g.text for g in gateways)
        (stack.parent / "gateway.log").write_text(text)  # all of it, beside the call log
        print(text[-20_000:])
        raise
    finally:
        chaos.stop()
        for g in gateways:
            g.stop()
    figures["kills"] = len(chaos.times)
    print(f"crash batch: {figures}")
    return figures


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    env.update(extra)
    return env


def test_kill_9_of_workers_and_the_gateway_on_sqlite_loses_nothing(stack: Path) -> None:
    figures = run_batch(stack, stack.parent / "data", _env(), kill_gateway=True)
    assert figures["requests"] == REQUESTS


@pytest.mark.integration
def test_kill_9_of_workers_and_the_gateway_on_etcd_loses_nothing(stack: Path) -> None:
    endpoints = os.environ.get("ETCD_ENDPOINTS")
    if not endpoints:
        pytest.fail("ETCD_ENDPOINTS is not set: run `bash .ci/services up` and source its env")
    env = _env(FAASFLOW_STATE_STORE="etcd", FAASFLOW_ETCD_ENDPOINTS=endpoints)
    try:
        figures = run_batch(stack, stack.parent / "data", env, kill_gateway=True)
    finally:  # the shared server keeps records for a day otherwise
        from faasflow_etcd.store import EtcdStateStore

        store = EtcdStateStore.from_options({"endpoints": endpoints})
        store.scoped(FLOW, "~records").cleanup()
        store.close()
    assert figures["requests"] == REQUESTS


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[Any]:
    import sys

    here = str(Path(__file__).parent.parent / "plugins" / "faasflow_etcd" / "tests")
    sys.path.insert(0, here)
    try:
        from etcd_server import EtcdServer
    finally:
        sys.path.remove(here)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    workdir = base / f"faasflow-crash-etcd-{os.getpid()}-{time.monotonic_ns()}"
    workdir.mkdir()
    server = EtcdServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_etcd_stopped_for_5_s_mid_batch_every_request_completes(
    stack: Path, private_etcd: Any
) -> None:
    env = _env(FAASFLOW_STATE_STORE="etcd", FAASFLOW_ETCD_ENDPOINTS=private_etcd.endpoint)
    log = stack.parent / "calls.log"
    count = max(REQUESTS // 2, 1)
    with GatewayProcess(stack, data_dir=stack.parent / "data", env=env) as gateway:
        paused = threading.Event()

        def pause_when_busy() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if len(read_calls(log)) >= count // 4:
                    break
                time.sleep(0.05)
            private_etcd.pause()
            paused.set()
            time.sleep(5)
            private_etcd.resume()

        pauser = threading.Thread(target=pause_when_busy, daemon=True)
        pauser.start()
        bodies = submit(gateway, count)
        pauser.join(90)
        assert paused.is_set(), "etcd was never paused"
        found = wait_done(gateway, len(bodies))
        try:
            figures = check_batch(log, found, bodies, [], gateway.text)
        except BaseException:
            print(gateway.text[-20_000:])
            raise
    print(f"SIGSTOP batch: {figures}")
