"""Iterations kept on the worker (faasflow/runtime/kept.py) under kill -9: chains whose next
iteration a worker commits to the gateway's queue itself and runs on its own threads, while
workers (and once the gateway) are killed with SIGKILL.

Every step of the chain calls the python3-http function ``count``, which logs its idempotency
key and tag before it answers (faasflow.testing.calllog). The test asserts that every
submission became exactly one request that succeeded with the right output, none is stuck, and
no step ran twice unless a kill came between the two runs; and that held rows were there to
release (a worker died holding some), so the kept path is the one that was crashed.

Sizes: ``FAASFLOW_CRASH_HANDOFF_REQUESTS`` (default 150) chains of ``STEPS`` steps,
``FAASFLOW_CRASH_KILLS`` worker kills (default 12).
"""

from __future__ import annotations

import collections
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from test_crash_gateway import KILLS, WAIT, Chaos, _env, read, read_calls, troubled

from faasflow.runtime.process import GatewayProcess
from faasflow.testing import calllog

pytestmark = pytest.mark.slow

REQUESTS = int(os.environ.get("FAASFLOW_CRASH_HANDOFF_REQUESTS", "150"))
STEPS = 8
FLOW = f"chain{uuid.uuid4().hex[:8]}"

# the tag names the flow worker making the call (define runs in it): a call that worker had
# sent when it was killed may still run after its death (the gateway holds it while the
# function's worker restarts), so its repeat is the kill's doing
CHAIN = f"""
    import os

    def define(flow, context):
        dag = flow.dag()
        for i in range({STEPS}):
            dag.node(f"n{{i}}").apply("count", headers={{"X-Tag": f"n{{i}}@{{os.getpid()}}"}})
            if i:
                dag.edge(f"n{{i - 1}}", f"n{{i}}")
"""


def expected_output(body: str) -> str:
    return body + "".join(f".n{i}" for i in range(STEPS))


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    return calllog.write_stack(tmp_path, FLOW, CHAIN,
                               {"COUNT_LOG": str(tmp_path / "calls.log")})


def submit(gateway: GatewayProcess, count: int) -> list[str]:
    bodies = [f"c{i:04d}" for i in range(count)]

    def one(body: str) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                reply = requests.post(f"{gateway.url}/async-function/{FLOW}", data=body,
                                      timeout=30)
                if reply.status_code == 202:
                    return body
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the gateway never accepted {body}")

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, bodies))


def wait_done(gateway: GatewayProcess, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found, cursor = [], None
        while True:
            page = read(gateway, f"/function/{FLOW}/flow?limit=1000"
                        + (f"&cursor={cursor}" if cursor else ""))
            found += page["requests"]
            cursor = page.get("next")
            if not cursor:
                break
        if len(found) >= count and all(r["status"] not in ("running", "paused") for r in found):
            break
        time.sleep(0.5)
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda r: read(gateway, f"/function/{FLOW}/flow/{r['id']}"), found))


def check(log: Path, found: list[dict[str, Any]], bodies: list[str], kill_times: list[float],
          killed: list[int], output: str) -> dict[str, int]:
    stuck = [r["id"] for r in found if r["status"] in ("running", "paused")]
    assert not stuck, f"{len(stuck)} requests stuck: {stuck[:5]}"
    failed = [(r["id"], r.get("error")) for r in found if r["status"] != "success"]
    assert not failed, f"{len(failed)} requests did not succeed: {failed[:5]}"
    outputs = collections.Counter(re.sub(r"@\d+", "", r["output"]) for r in found)
    wanted = collections.Counter(expected_output(b) for b in bodies)
    assert outputs == wanted, (
        f"{len(found)} records for {len(bodies)} submissions; unexpected "
        f"{list((outputs - wanted).items())[:3]}, missing {list((wanted - outputs).items())[:3]}"
    )
    calls = read_calls(log)
    starts: dict[str, set[str]] = collections.defaultdict(set)
    for key, tag, _, _, body in calls:
        if tag.startswith("n0@"):
            starts[body].add(key.split("/", 1)[0])
    twice = {body: ids for body, ids in starts.items() if len(ids) > 1}
    assert not twice, f"{len(twice)} submissions made more than one request: {list(twice)[:5]}"
    runs: dict[tuple[str, str], list[tuple[float, int]]] = collections.defaultdict(list)
    for key, tag, _, when, _ in calls:
        node, _, caller = tag.partition("@")
        runs[(key, node)].append((when, int(caller)))
    reported = troubled(output)
    excused = 0
    unexcused = []
    for (key, tag), times in runs.items():
        times.sort()
        for (first, caller), (second, _) in zip(times, times[1:], strict=False):
            if any(first <= k <= second for k in kill_times) or caller in killed or \
                    key.split("/")[0] in reported:
                excused += 1
            else:
                unexcused.append((key, tag, len(times)))
    assert not unexcused, (
        f"{len(unexcused)} steps ran again with no kill in between: {unexcused[:5]}"
    )
    return {"requests": len(found), "calls": len(calls), "repeats_excused": excused}


def test_kill_9_of_workers_and_the_gateway_mid_kept_chains_loses_nothing(stack: Path) -> None:
    run_batch(stack, _env(), kept=True)


def test_kill_9_mid_chains_with_the_opt_out_loses_nothing(stack: Path) -> None:
    run_batch(stack, _env(FAASFLOW_SAME_WORKER_ITERATIONS="0"), kept=False)


def run_batch(stack: Path, env: dict[str, str], *, kept: bool) -> None:
    log = stack.parent / "calls.log"
    data = stack.parent / "data"
    gateway = GatewayProcess(stack, data_dir=data, env=env).start()
    gateways = [gateway]
    chaos = Chaos(KILLS, interval=0.5, seed=17)
    try:
        chaos.start(gateway)
        bodies = submit(gateway, REQUESTS)
        while len(chaos.killed) < KILLS // 2 and chaos._thread.is_alive():
            time.sleep(0.1)
        gateway.kill()
        chaos.note()
        gateway = GatewayProcess(stack, data_dir=data, env=env).start()
        gateways.append(gateway)
        chaos.gateway = gateway
        found = wait_done(gateway, len(bodies))
        chaos.stop()
        output = "".join(g.text for g in gateways)
        figures = check(log, found, bodies, chaos.times, chaos.killed, output)
        held = [int(n) for n in re.findall(r"died holding (\d+) queued calls", output)]
        if kept:
            assert held, "no worker was killed holding a kept iteration: the test proves nothing"
        else:
            assert not held, "the opt-out kept iterations on a worker"
        figures["held_rows_released"] = sum(held)
    except BaseException:
        print("".join(g.text for g in gateways)[-20_000:])
        raise
    finally:
        chaos.stop()
        for g in gateways:
            g.stop()
    figures["kills"] = len(chaos.times)
    print(f"kept-chain crash batch: {figures}")
    assert figures["requests"] == REQUESTS
