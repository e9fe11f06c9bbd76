"""``faasflow up --queue nats://...`` on one host: a fan-out flow's iterations all go through
JetStream; and the refusals of a queue shared by hosts with stores of one host."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
from flows import environ, expected_output, outputs, read_calls, submit, wait_all_done, write_stack
from nats_server import NatsServer

from faasflow.runtime.process import GatewayProcess

REQUESTS = int(os.environ.get("FAASFLOW_NATS_UP_REQUESTS", "20"))


def shared_stores() -> dict[str, str]:
    """etcd and the S3 server of .ci/services: stores every host reaches."""
    missing = [n for n in ("ETCD_ENDPOINTS", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY")
               if not os.environ.get(n)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run `bash .ci/services up` and source "
                    "/dev/shm/faasflow-ci-services/env")
    return {
        "FAASFLOW_STATE_STORE": "etcd",
        "FAASFLOW_ETCD_ENDPOINTS": os.environ["ETCD_ENDPOINTS"],
        "FAASFLOW_DATA_STORE": "minio",
        "FAASFLOW_MINIO_ENDPOINT": os.environ["S3_ENDPOINT"],
        "FAASFLOW_MINIO_ACCESS_KEY": os.environ["S3_ACCESS_KEY"],
        "FAASFLOW_MINIO_SECRET_KEY": os.environ["S3_SECRET_KEY"],
        "FAASFLOW_MINIO_REGION": os.environ.get("S3_REGION") or "us-east-1",
        "FAASFLOW_MINIO_BUCKET": f"faasflow-nats-{uuid.uuid4().hex[:8]}",
        "FAASFLOW_HMAC_SECRET": "nats-test-" + uuid.uuid4().hex,
    }


def up(stack: Path, server: NatsServer, tmp_path: Path, **env: str
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faasflow", "up", "-f", str(stack), "--port", "0",
         "--data-dir", str(tmp_path / "data"), "--queue", server.url],
        check=False, env=environ(**env), capture_output=True, text=True, timeout=60)


@pytest.mark.integration
def test_a_fan_out_flow_runs_every_iteration_through_jetstream(
        tmp_path: Path, nats_server: NatsServer) -> None:
    log = tmp_path / "calls.log"
    flow = "fan" + uuid.uuid4().hex[:6]  # etcd is shared across runs: a flow of its own
    stack = write_stack(tmp_path, log, flow=flow)
    gateway = GatewayProcess(stack, data_dir=tmp_path / "data",
                             extra=["--queue", nats_server.url],
                             env=environ(**shared_stores())).start()
    try:
        assert "queue: nats" in gateway.text
        bodies = [f"b{i:04d}" for i in range(REQUESTS)]
        started = time.monotonic()
        submit([gateway.url], bodies, flow=flow)
        records = wait_all_done(gateway.url, len(bodies), 180, flow)
        took = time.monotonic() - started
        assert Counter(r["status"] for r in records) == {"success": len(bodies)}
        assert outputs(gateway.url, records, flow) == Counter(expected_output(b) for b in bodies)
        calls = Counter((body, tag) for body, tag, _ in read_calls(log))
        assert len(calls) == 5 * len(bodies)
        assert set(calls.values()) == {1}, [k for k, n in calls.items() if n > 1][:5]
        queue = requests.get(f"{gateway.url}/system/queue", timeout=10).json()
        assert queue["pending"] == 0
        assert queue["dead"] == 0
        print(f"{len(bodies)} fan-out requests through JetStream in {took:.1f}s")
    except BaseException:
        print(gateway.text[-10_000:])
        raise
    finally:
        gateway.stop()


def test_a_shared_queue_with_a_store_of_one_host_is_refused_naming_the_variable(
        tmp_path: Path, nats_server: NatsServer) -> None:
    stack = write_stack(tmp_path, tmp_path / "calls.log")
    done = up(stack, nats_server, tmp_path, FAASFLOW_HMAC_SECRET="k")
    assert done.returncode != 0
    assert "FAASFLOW_STATE_STORE" in done.stderr
    assert "'sqlite' is local to one host" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_shared_queue_without_a_configured_hmac_secret_is_refused(
        tmp_path: Path, nats_server: NatsServer) -> None:
    stack = write_stack(tmp_path, tmp_path / "calls.log")
    env = shared_stores()
    del env["FAASFLOW_HMAC_SECRET"]
    done = up(stack, nats_server, tmp_path, **env)
    assert done.returncode != 0
    assert "FAASFLOW_HMAC_SECRET" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_queue_kind_names_the_known_ones(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, tmp_path / "calls.log")
    done = subprocess.run(
        [sys.executable, "-m", "faasflow", "up", "-f", str(stack), "--port", "0",
         "--data-dir", str(tmp_path / "data"), "--queue", "kafka://h:9092"],
        check=False, env=environ(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "unknown queue kind 'kafka'" in done.stderr
    assert "nats" in done.stderr
    assert "sqlite" in done.stderr


@pytest.mark.integration
def test_a_faasflow_worker_delivers_a_share_of_the_gateway_calls(
        tmp_path: Path, nats_server: NatsServer) -> None:
    log = tmp_path / "calls.log"
    flow = "fan" + uuid.uuid4().hex[:6]
    stores = shared_stores()
    gw_dir, wk_dir = tmp_path / "gw", tmp_path / "wk"
    gw_dir.mkdir()
    wk_dir.mkdir()
    gw_stack = write_stack(gw_dir, log, host="gateway", sleep=0.2, flow=flow)
    wk_stack = write_stack(wk_dir, log, host="worker", sleep=0.2, flow=flow)
    gateway = GatewayProcess(gw_stack, data_dir=gw_dir / "data", processes=1,
                             extra=["--queue", nats_server.url], env=environ(**stores)).start()
    worker = GatewayProcess(wk_stack, data_dir=wk_dir / "data", processes=1,
                            extra=["--queue", nats_server.url], env=environ(**stores))
    worker.command[3] = "worker"  # faasflow worker takes up's options, without --port
    del worker.command[6:8]
    worker.start()
    try:
        assert "no gateway API" in worker.text
        assert worker.url.startswith("http://127.0.0.1:")
        bodies = [f"w{i:03d}" for i in range(12)]
        submit([gateway.url], bodies, flow=flow)
        records = wait_all_done(gateway.url, len(bodies), 180, flow)
        assert Counter(r["status"] for r in records) == {"success": len(bodies)}
        hosts = Counter(host for _, _, host in read_calls(log))
        assert hosts["worker"] > 0, hosts
        assert hosts["gateway"] > 0, hosts
    except BaseException:
        print(gateway.text[-5000:], worker.text[-5000:])
        raise
    finally:
        worker.stop()
        gateway.stop()


POISON = """
    import os

    def crash_on_poison(data):
        if b"poison" in data:
            os._exit(1)  # the worker dies mid-iteration, every delivery
        return data

    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda data: data + b".a")
        for branch in ("p", "q"):
            dag.node(branch).modify(crash_on_poison)
            dag.edge("a", branch)
"""


def test_a_poison_iteration_on_jetstream_ends_as_a_failed_request_with_the_cause(
        tmp_path: Path, nats_server: NatsServer) -> None:
    (tmp_path / "poison").mkdir()
    (tmp_path / "poison" / "handler.py").write_text(textwrap.dedent(POISON).lstrip())
    stack = tmp_path / "stack.yml"
    stack.write_text("functions:\n  poison:\n    lang: faasflow\n    handler: ./poison\n")
    gateway = GatewayProcess(
        stack, data_dir=tmp_path / "data", processes=1,
        extra=["--queue", nats_server.url, "--max-attempts", "3"],
        # one host: its sqlite and filesystem stores are seen by every process of it
        env=environ(FAASFLOW_SHARED_FILES="1", FAASFLOW_HMAC_SECRET="poison-test")).start()
    try:
        reply = gateway.post("/async-function/poison", data=b"poison")
        assert reply.status_code == 202, reply.text
        deadline = time.monotonic() + 90
        doc: dict[str, object] = {}
        while time.monotonic() < deadline:
            listing = requests.get(f"{gateway.url}/function/poison/flow", timeout=10)
            if listing.status_code == 200 and listing.json()["requests"]:
                doc = listing.json()["requests"][0]
                if doc["status"] not in ("running", "paused"):
                    break
            time.sleep(0.3)
        assert doc.get("status") == "failure", doc
        assert "delivery given up after 3 attempts" in str(doc.get("error")), doc
        queue = gateway.get("/system/queue").json()
        assert queue["dead"] >= 1
        assert queue["pending"] == 0
    except BaseException:
        print(gateway.text[-8000:])
        raise
    finally:
        gateway.stop()
