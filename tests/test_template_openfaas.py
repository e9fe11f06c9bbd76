"""Done-when of issue 10: the template's real entry point under gunicorn (2 workers), behind
the of-watchdog stand-in, with the queue-worker stand-in delivering every iteration back through
``/async-function`` (chunked), completes a DAG with a fan-out, a foreach and an aggregator with
the template's defaults: only the gateway URL and the HMAC secret are configured."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from template_harness import DAG, function_dir, function_env, watchdog

from faasflow.runtime.server import serve
from faasflow.testing.queueworker import QueueWorker
from faasflow.testing.watchdog import Watchdog

pytest.importorskip("gunicorn", reason="the template's server; pip install gunicorn")

WAIT = {"X-Faas-Flow-Wait": "60"}


class Deployment:
    def __init__(self, queue: QueueWorker, watchdog: Watchdog, app: Path) -> None:
        self.queue, self.watchdog, self.app = queue, watchdog, app

    @property
    def function_url(self) -> str:
        """How faas-cli 0.18 calls it: ``/function/<name>.<namespace>``."""
        return f"{self.queue.url}/function/tplflow.openfaas-fn"


def deploy(root: Path, mode: str, host_header: str = "faas-netes",
           **variables: str) -> Iterator[Deployment]:
    app = function_dir(root, DAG)
    with QueueWorker(mode=mode, host_header=host_header) as queue:  # type: ignore[arg-type]
        env = function_env(FAASFLOW_GATEWAY_URL=queue.url, FAASFLOW_HMAC_SECRET="hmac-key",
                           **variables)
        with watchdog(app, env) as dog:
            queue.functions["tplflow"] = dog.url
            yield Deployment(queue, dog, app)


@pytest.fixture(scope="module", params=["ce", "pro"])
def deployed(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deploy(tmp_path_factory.mktemp(f"openfaas-{request.param}"), request.param)


def test_dag_with_fan_out_foreach_and_aggregator_completes_with_the_defaults(
    deployed: Deployment
) -> None:
    reply = requests.post(deployed.function_url, data=b"1,2,3,4", headers=WAIT, timeout=90)
    assert (reply.status_code, reply.text) == (200, "result=1,4,9,16|4")


def test_every_iteration_went_through_the_async_queue(deployed: Deployment) -> None:
    reply = requests.post(deployed.function_url, data=b"5,6", headers=WAIT, timeout=90)
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    assert deployed.queue.wait_idle(30)
    forwarded = [d for d in deployed.queue.deliveries if request_id in d.path]
    # start runs in the call; squares, count, 2 x square, join, done come back through the queue
    assert len(forwarded) == 6
    assert {d.status for d in forwarded} == {200}


def test_iterations_reach_both_gunicorn_workers(deployed: Deployment) -> None:
    for _ in range(4):
        reply = requests.post(deployed.function_url, data=b"1,2,3,4,5,6", headers=WAIT,
                              timeout=90)
        assert reply.text == "result=1,4,9,16,25,36|6"
    doc = requests.get(f"{deployed.function_url}/flow", timeout=30).json()
    assert doc["flow"] == "tplflow"
    assert {r["status"] for r in doc["requests"]} == {"success"}


def test_the_record_shows_the_output_and_the_flow_named_by_the_host(deployed: Deployment) -> None:
    reply = requests.post(deployed.function_url, data=b"3", headers=WAIT, timeout=90)
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    doc = requests.get(f"{deployed.function_url}/flow/{request_id}", timeout=30).json()
    assert (doc["flow"], doc["status"], doc["output"]) == ("tplflow", "success", "result=9|1")


def test_the_data_directory_is_private(deployed: Deployment) -> None:
    data = deployed.app / ".faasflow"
    assert data.stat().st_mode & 0o777 == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert files
    assert {p.stat().st_mode & 0o777 for p in files} == {0o600}


def test_an_async_start_calls_the_flows_callback_with_the_output(deployed: Deployment) -> None:
    got: list[bytes] = []
    done = threading.Event()

    def receiver(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        got.append(environ["wsgi.input"].read())
        done.set()
        start_response("200 OK", [])
        return [b""]

    server = serve(receiver).start()
    try:
        reply = requests.post(
            f"{deployed.queue.url}/async-function/tplflow.openfaas-fn", data=b"2,3", timeout=30,
            headers={"X-Faas-Flow-Callback-Url": f"{server.url}/done"})
        assert reply.status_code == 202
        assert done.wait(60)
    finally:
        server.close()
    assert got == [b"result=4,9|2"]


def test_on_faasd_the_flow_name_comes_from_faasflow_flow_name(
    tmp_path: Path
) -> None:
    for deployment in deploy(tmp_path, "ce", host_header="faasd", FAASFLOW_FLOW_NAME="tplflow"):
        reply = requests.post(deployment.function_url, data=b"1,2", headers=WAIT, timeout=90)
        assert (reply.status_code, reply.text) == (200, "result=1,4|2")


def test_on_faasd_without_a_flow_name_the_answer_says_to_set_it(tmp_path: Path) -> None:
    for deployment in deploy(tmp_path, "ce", host_header="faasd"):
        reply = requests.post(deployment.function_url, data=b"1,2", headers=WAIT, timeout=90)
        assert reply.status_code == 500
        assert "FAASFLOW_FLOW_NAME" in reply.text
