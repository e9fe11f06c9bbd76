"""faasflow up on NATS JetStream across hosts: `python bench/nats.py [--requests N] [--quick]`.

Hosts are network namespaces of this machine (or loopback process groups where namespaces
cannot be made; run as root for namespaces), each with a nats-server member, an etcd member and
`faasflow up --queue nats://...` (see plugins/faasflow_nats/tests/hosts.py). The flow is a
fan-out of 5 nodes whose function sleeps (`--sleep`, default 0.3 s), so the work is sleep-bound
and each host delivers `--concurrency` calls at once.

Prints, for 1, 2 and 3 hosts: throughput (requests/s, and the speed-up over 1 host), p50/p99
request latency (submission to end), redeliveries (the durable consumer's deliveries beyond one
per message), re-posted starts (same X-Call-Id, to another gateway) and the extra requests they
made, and duplicate function calls of done nodes. Then, on 3 hosts, the same with one host
killed with SIGKILL a fifth into the run and restarted 3 s later: the longest gap between two
completions after the kill.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "plugins" / "faasflow_nats" / "tests"
sys.path.insert(0, str(TESTS))

from flows import read_calls, read_calls_timed  # noqa: E402
from hosts import Cluster  # noqa: E402
from nats_server import scratch  # noqa: E402


def redeliveries(cluster: Cluster) -> int:
    most = 0
    for host in cluster.hosts:
        raw = cluster.client(["consumer", f"http://{host.addr}:{host.monitor_port}"],
                             host=host, check=False)
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        for account in doc.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if stream.get("name") != "FAASFLOW":
                    continue
                for consumer in stream.get("consumer_detail") or []:
                    delivered = consumer.get("delivered") or {}
                    most = max(most, int(delivered.get("consumer_seq", 0))
                               - int(delivered.get("stream_seq", 0)))
    return most


def figures(cluster: Cluster, result: dict[str, Any], prefix: str,
            kill_at: float | None = None) -> dict[str, Any]:
    records = result["records"]
    ends = sorted(float(r["ended"] or 0) for r in records)
    latencies = sorted(float(r["ended"] or 0) - result["submitted"][str(r["output"]).split(
        ".", 1)[0]] for r in records if r["status"] == "success")
    calls = Counter((b, t) for b, t, _ in read_calls(cluster.log) if b.startswith(prefix))
    out: dict[str, Any] = {
        "hosts": len(cluster.hosts),
        "requests": len(records),
        "succeeded": sum(r["status"] == "success" for r in records),
        "seconds": round(ends[-1] - result["started"], 2),
        "per_second": round(len(records) / (ends[-1] - result["started"]), 2),
        "p50": round(latencies[len(latencies) // 2], 3),
        "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
        "redeliveries": redeliveries(cluster),
        "reposted_starts": result.get("reposted", 0),
        "duplicate_calls": sum(n - 1 for n in calls.values()),
        "calls_by_host": dict(Counter(h for b, _, h, _ in read_calls_timed(cluster.log)
                                      if b.startswith(prefix))),
    }
    if kill_at is not None:
        after = [t for t in ends if t >= kill_at]
        out["longest_gap_after_kill"] = round(
            max((b - a for a, b in zip([kill_at, *after], after, strict=False)), default=0.0), 2)
    return out


def run(hosts: int, args: argparse.Namespace, kill: bool = False) -> dict[str, Any]:
    root = scratch(f"bench{hosts}")
    cluster = Cluster(root, hosts, sleep=args.sleep, concurrency=args.concurrency,
                      flow="fan" + uuid.uuid4().hex[:6])
    try:
        cluster.start()
        urls = ",".join(h.url for h in cluster.hosts)
        command = ["run", cluster.flow, str(args.requests), "r", urls, "900", "repost"]
        if not kill:
            result = json.loads(cluster.client(command, timeout=1200))
            return {"mode": cluster.mode, **figures(cluster, result, "r")}
        first = cluster.hosts[0]
        proc = subprocess.Popen(
            [*(["ip", "netns", "exec", first.ns] if first.ns else []), sys.executable,
             str(TESTS / "hosts_client.py"), *command], stdout=subprocess.PIPE, text=True)
        while len(read_calls(cluster.log)) < args.requests:
            time.sleep(0.1)
        kill_at = time.time()
        cluster.hosts[-1].kill()
        time.sleep(3)
        cluster.restart(cluster.hosts[-1])
        out, _ = proc.communicate(timeout=1200)
        return {"mode": cluster.mode, "killed": True,
                **figures(cluster, json.loads(out), "r", kill_at)}
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--sleep", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="40 requests")
    args = parser.parse_args()
    if args.quick:
        args.requests = 40
    base = None
    for hosts in (1, 2, 3):
        result = run(hosts, args)
        base = base or result["per_second"]
        result["speedup"] = round(result["per_second"] / base, 2)
        print(json.dumps(result), flush=True)
    print(json.dumps(run(3, args, kill=True)), flush=True)


if __name__ == "__main__":
    main()
