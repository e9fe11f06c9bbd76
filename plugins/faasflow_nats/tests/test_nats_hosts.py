"""Three hosts (network namespaces of this machine, or loopback processes where namespaces
cannot be made), each with a nats-server member (R3 stream), an etcd member and ``faasflow up
--queue nats://...``: a batch of fan-out requests, then the same with a whole host killed
(``kill -9`` of all its processes) mid-run and restarted.

Sizes: ``FAASFLOW_NATS_HOSTS_REQUESTS`` (default 300); ``FAASFLOW_NATS_HOSTS_MODE=loopback``
forces the fallback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from flows import expected_output, read_calls, read_calls_timed
from hosts import HERE, Cluster
from nats_server import scratch

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REQUESTS = int(os.environ.get("FAASFLOW_NATS_HOSTS_REQUESTS", "300"))
#: The issue's goal is under 10 s; the test allows more, since the 2 cores are shared.
MAX_GAP = float(os.environ.get("FAASFLOW_NATS_HOSTS_MAX_GAP", "15"))


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = scratch("hosts")
    made = Cluster(root, 3, sleep=0.1, flow="fan" + uuid.uuid4().hex[:6])
    try:
        made.start()
        print(f"hosts: {made.mode}" + (
            "" if made.mode == "netns" else
            " (no network namespaces here, or FAASFLOW_NATS_HOSTS_MODE=loopback): 3 process "
            "groups on loopback ports"))
        yield made
    except BaseException:
        for host in made.hosts:
            for log in sorted(host.dir.glob("*.log")):
                print(f"--- {host.name} {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        made.close()
        shutil.rmtree(root, ignore_errors=True)


def urls(cluster: Cluster) -> str:
    return ",".join(h.url for h in cluster.hosts)


def check(cluster: Cluster, result: dict[str, Any], prefix: str, count: int,
          kill: tuple[float, float] | None) -> dict[str, Any]:
    """``kill`` is the window from the first signal to the last process of the host reaped: a
    call that answered inside it may have been lost with its host and made again later."""
    records = result["records"]
    states = Counter(r["status"] for r in records)
    assert states == {"success": count}, states
    bodies = [f"{prefix}{i:05d}" for i in range(count)]
    assert Counter(r["output"] for r in records) == Counter(expected_output(b) for b in bodies)
    runs: dict[tuple[str, str], list[float]] = defaultdict(list)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for body, tag, host, when in read_calls_timed(cluster.log):
        if body.startswith(prefix):
            runs[(body, tag)].append(when)
            where[(body, tag)].append(f"{host}@{when:.3f}")
    assert len(runs) == 5 * count
    repeats = [(k, t) for k, t in runs.items() if len(t) > 1]
    # a start sent again (a client retry, the re-post) while its first node still runs is a
    # concurrent copy under the same call id: that node may run again (docs/engine.md), a done
    # node never
    again = set(result.get("sent_again", ()))
    unexcused = [k for k, t in repeats
                 if not (k[1] == "s" and k[0] in again)
                 and (kill is None
                      or not any(a <= kill[1] and b >= kill[0] for a, b in zip(t, t[1:])))]
    window = "" if kill is None else f" (host killed {kill[0]:.3f}..{kill[1]:.3f})"
    assert not unexcused, (
        f"functions of done nodes called more than once{window}: "
        + ", ".join(f"{k}: {where[k]}" for k in unexcused[:5]))
    queue: dict[str, int] = {}
    for _ in range(40):
        queue = cluster.client_json(["queue", urls(cluster)])
        if queue["pending"] == 0:
            break
        time.sleep(0.25)
    assert queue["pending"] == 0, queue
    assert queue["dead"] == 0, queue
    ends = sorted(float(r["ended"]) for r in records)
    latencies = sorted(float(r["ended"]) - result["submitted"][i] for i, r in
                       _by_input(records, result))
    figures: dict[str, Any] = {
        "requests": count, "seconds": round(ends[-1] - result["started"], 2),
        "p50": round(latencies[len(latencies) // 2], 3),
        "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
        "repeats_after_kill": len(repeats),
        "hosts": dict(Counter(h for _, _, h, _ in read_calls_timed(cluster.log))),
    }
    if kill is not None:
        after = [t for t in ends if t >= kill[0]]
        gaps = [b - a for a, b in zip([kill[0], *after], after)]
        figures["longest_gap_after_kill"] = round(max(gaps, default=0.0), 2)
    return figures


def _by_input(records: list[dict[str, Any]], result: dict[str, Any]
              ) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for r in records:
        body = str(r["output"]).split(".", 1)[0]
        out.append((body, r))
    return out


def test_three_hosts_serve_a_batch_of_fan_out_requests(cluster: Cluster) -> None:
    result = cluster.client_json(["run", cluster.flow, str(REQUESTS), "a", urls(cluster),
                                  "600"], timeout=900)
    figures = check(cluster, result, "a", REQUESTS, None)
    print(f"3 hosts ({cluster.mode}), no kill: {figures}")
    assert len(figures["hosts"]) == 3, figures["hosts"]


def test_a_host_killed_mid_run_and_restarted_loses_nothing(cluster: Cluster) -> None:
    prefix = "k"
    prefix_args = ["run", cluster.flow, str(REQUESTS), prefix, urls(cluster), "600"]
    host = cluster.hosts[0]
    run = subprocess.Popen(
        [*(["ip", "netns", "exec", host.ns] if host.ns else []), sys.executable,
         str(HERE / "hosts_client.py"), *prefix_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(read_calls(cluster.log)) < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.2)  # about a fifth of the work done
        victim = cluster.hosts[2]
        kill_at = time.time()
        victim.kill()
        killed = time.time()
        time.sleep(3)
        cluster.restart(victim)
        out, err = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err[-3000:]
    figures = check(cluster, json.loads(out), prefix, REQUESTS, (kill_at, killed))
    print(f"3 hosts ({cluster.mode}), h3 killed and restarted: {figures}")
    assert figures["longest_gap_after_kill"] < MAX_GAP
