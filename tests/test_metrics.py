"""``GET /metrics`` of the flow app and of the local gateway, read over real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from faasflow.runtime.app import FlowApp
from faasflow.runtime.process import GatewayProcess
from faasflow.runtime.server import Server, serve
from faasflow.settings import Settings

FLOW_SOURCE = """
    def define(flow, context):
        dag = flow.dag()

        def check(data):
            if data.startswith(b"fail"):
                raise ValueError("refused " + data.decode())
            return data

        dag.node("first").modify(lambda data: data)
        dag.node("check").modify(check)
        dag.edge("first", "check")
"""
ECHO_SOURCE = """
    def handle(event, context):
        return event.body
"""


def define(flow: Any, context: Any) -> None:
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(FLOW_SOURCE), namespace)
    namespace["define"](flow, context)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return page.get((name, tuple(sorted(labels.items()))))


def run_requests(url: str) -> None:
    for body in (b"fine", b"fail please"):
        reply = requests.post(url, data=body, timeout=30, headers={"X-Faas-Flow-Wait": "30"})
        assert reply.status_code in (200, 500), reply.text


@pytest.fixture
def app_server(tmp_path: Path) -> Iterator[Server]:
    app = FlowApp(define, Settings.from_env({"FAASFLOW_FLOW_NAME": "metered"}))
    server = serve(app).start()
    yield server
    server.close()
    app.close()


def test_flow_metrics_count_started_and_ended_requests_by_status(app_server: Server) -> None:
    run_requests(app_server.url)
    page = samples(requests.get(f"{app_server.url}/metrics", timeout=10).text)
    assert value(page, "faasflow_requests_started_total", flow="metered") == 2
    assert value(page, "faasflow_requests_ended_total", flow="metered", status="success") == 1
    assert value(page, "faasflow_requests_ended_total", flow="metered", status="failure") == 1


def test_flow_metrics_histogram_node_durations_by_flow_and_node(app_server: Server) -> None:
    run_requests(app_server.url)
    page = samples(requests.get(f"{app_server.url}/metrics", timeout=10).text)
    assert value(page, "faasflow_node_duration_seconds_count", flow="metered",
                 node="0_1_first") == 2
    assert value(page, "faasflow_node_duration_seconds_count", flow="metered",
                 node="0_2_check") == 2
    assert value(page, "faasflow_node_duration_seconds_bucket", flow="metered",
                 node="0_1_first", le="+Inf") == 2
    assert value(page, "faasflow_request_duration_seconds_count", flow="metered",
                 status="failure") == 1


def test_metrics_answer_prometheus_text_format(app_server: Server) -> None:
    reply = requests.get(f"{app_server.url}/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE faasflow_requests_started_total counter" in reply.text


def test_with_a_multiprocess_dir_every_process_is_counted(tmp_path: Path) -> None:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    load = "from faasflow.runtime.metrics import FlowMetrics; "
    count = load + "FlowMetrics().request_opened('f', 'r')"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    show = load + "print(FlowMetrics().exposition().decode())"
    out = subprocess.run([sys.executable, "-c", show], env=env, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    assert value(samples(out), "faasflow_requests_started_total", flow="f") == 2


# -- through faasflow up ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("stack")
    for name, source in (("metered", FLOW_SOURCE), ("echo", ECHO_SOURCE)):
        (root / name).mkdir()
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    (root / "stack.yml").write_text(textwrap.dedent("""\
        version: 1.0
        provider:
          name: openfaas
        functions:
          metered:
            lang: faasflow
            handler: ./metered
          echo:
            lang: python3-http
            handler: ./echo
    """))
    with GatewayProcess(root / "stack.yml", data_dir=root / "data", processes=1) as process:
        yield process


def test_gateway_counts_invocations_with_openfaas_names(gateway: GatewayProcess) -> None:
    before = samples(gateway.get("/metrics").text)
    for _ in range(2):
        assert gateway.post("/function/echo", data=b"hi").status_code == 200
    assert gateway.get("/function/nobody").status_code == 404
    page = samples(gateway.get("/metrics").text)
    was = value(before, "gateway_function_invocation_total", function_name="echo",
                code="200") or 0
    assert value(page, "gateway_function_invocation_total", function_name="echo",
                 code="200") == was + 2
    assert value(page, "gateway_functions_seconds_count", function_name="echo") == was + 2
    assert not [k for k in page if ("function_name", "nobody") in k[1]]
    assert value(page, "gateway_service_count") == 2


def test_gateway_shows_queue_depth_and_oldest_age(gateway: GatewayProcess) -> None:
    page = samples(gateway.get("/metrics").text)
    assert value(page, "faasflow_queue_depth") is not None
    assert (value(page, "faasflow_queue_oldest_age_seconds") or 0) >= 0


def test_flow_metrics_through_the_gateway(gateway: GatewayProcess) -> None:
    run_requests(f"{gateway.url}/function/metered")
    page = samples(gateway.get("/function/metered/metrics").text)
    assert value(page, "faasflow_requests_started_total", flow="metered") == 2
    assert value(page, "faasflow_requests_ended_total", flow="metered", status="failure") == 1


def test_requests_list_filters_by_status_and_prints_json(gateway: GatewayProcess) -> None:
    run_requests(f"{gateway.url}/function/metered")

    def listing(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "faasflow", "requests", "list", "metered", "-g",
             gateway.url, *extra], check=False, capture_output=True, text=True,
            timeout=60)

    done = listing("--status", "failure", "--since", "1h", "--limit", "1", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [row["status"] for row in doc["requests"]] == ["failure"]
    assert doc["requests"][0]["failed_node"] == "0_2_check"
    table = listing("--status", "failure", "--status", "success")
    assert table.returncode == 0, table.stderr
    assert "at 0_2_check: " in table.stdout
    bad = listing("--limit", "5000")
    assert bad.returncode != 0
    assert "1 to 1000" in bad.stderr
