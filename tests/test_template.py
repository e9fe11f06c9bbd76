"""The OpenFaaS template: its files parse, and its entry point serves a flow with gunicorn as a
real process (no Docker engine here, so the image itself is not built)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "template" / "faasflow"

FLOW = """
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda data: data + b"-1")
        dag.node("n2").modify(lambda data: data + b"-2")
        dag.edge("n1", "n2")
"""


def test_template_yml_names_the_language_and_the_process() -> None:
    doc = yaml.safe_load((TEMPLATE / "template.yml").read_text())
    assert doc["language"] == "faasflow"
    assert doc["fprocess"] == "python index.py"
    assert doc["welcome_message"]


def test_template_has_the_layout_faas_cli_expects() -> None:
    for name in ("template.yml", "Dockerfile", "index.py", "requirements.txt",
                 "function/handler.py", "function/requirements.txt"):
        assert (TEMPLATE / name).is_file(), name


def test_dockerfile_runs_the_of_watchdog_in_http_mode_on_a_slim_python() -> None:
    text = (TEMPLATE / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, re.MULTILINE)
    assert "COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog" in text
    assert 'mode="http"' in text
    assert 'upstream_url="http://127.0.0.1:5000"' in text
    assert 'CMD ["fwatchdog"]' in text
    # faas-flow's template wrote `ENV name: value`, which sets a variable called "name:"
    assert not re.search(r"^ENV \w+: ", text, re.MULTILINE)


def test_template_requirements_name_faasflow_and_gunicorn() -> None:
    names = {re.split(r"[<>=\s]", line)[0]
             for line in (TEMPLATE / "requirements.txt").read_text().splitlines() if line}
    assert names == {"faasflow", "gunicorn"}


def test_template_handler_is_a_valid_flow() -> None:
    import importlib.util

    from faasflow import Flow

    spec = importlib.util.spec_from_file_location("tpl_handler", TEMPLATE / "function/handler.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert Flow(module.define, name="tpl").export()["is-valid"] is True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("gunicorn", reason="the template's server; pip install gunicorn")
    root = tmp_path_factory.mktemp("template")
    app = root / "app"
    shutil.copytree(TEMPLATE, app)
    (app / "function" / "handler.py").write_text(textwrap.dedent(FLOW).lstrip())
    port = _free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        # no FAASFLOW_FLOW_NAME: the name comes from the Host header, as behind a gateway
        "FAASFLOW_INVOKER": "local",  # no gateway here: iterations stay in the process
        "FAASFLOW_STATE_STORE": "sqlite",
        "FAASFLOW_DATA_STORE": "sqlite",
        "FAASFLOW_SQLITE_PATH": str(root / "state.db"),
    }
    process = subprocess.Popen(
        [sys.executable, "index.py", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(url + "/?state=x", timeout=2, headers={"Host": "probe.openfaas-fn"})
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                out = process.communicate()[0]
                pytest.fail(f"the template's entry point did not start:\n{out}")
            time.sleep(0.1)
    yield url
    process.terminate()
    try:
        process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


HOST = {"Host": "tplflow.openfaas-fn.svc.cluster.local:8080"}


def test_entry_point_runs_a_request_and_answers_with_the_wait_header(served: str) -> None:
    reply = requests.post(served, data=b"x", timeout=30,
                          headers={**HOST, "X-Faas-Flow-Wait": "30"})
    assert (reply.status_code, reply.text) == (200, "x-1-2")
    assert re.match(r"^[0-9a-v]{23}$", reply.headers["X-Faas-Flow-Reqid"])


def test_entry_point_takes_the_flow_name_from_the_host_header(served: str) -> None:
    reply = requests.post(served, data=b"x", timeout=30,
                          headers={**HOST, "X-Faas-Flow-Wait": "30"})
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    doc = requests.get(f"{served}/flow/{request_id}", headers=HOST, timeout=30).json()
    assert (doc["flow"], doc["status"], doc["output"]) == ("tplflow", "success", "x-1-2")


def test_entry_point_refuses_a_host_that_is_an_ip_address(served: str) -> None:
    reply = requests.post(served, data=b"x", timeout=30, headers={"Host": "10.1.2.3:8080"})
    assert reply.status_code == 500
    assert "FAASFLOW_FLOW_NAME" in reply.text


def test_entry_point_exports_the_dag(served: str) -> None:
    doc = requests.get(f"{served}/?export-dag=true", headers=HOST, timeout=30).json()
    assert (doc["start-node"], doc["is-valid"]) == ("n1", True)


def test_entry_point_reports_state_and_control_errors(served: str) -> None:
    assert requests.get(f"{served}/?state=nope", headers=HOST, timeout=30).text == "FINISHED"
    reply = requests.post(f"{served}/flow/nope/pause", headers=HOST, timeout=30)
    assert reply.status_code == 404
    reply = requests.post(f"{served}/flow/nope/forward", data=b"{", headers=HOST, timeout=30)
    assert reply.status_code == 400


def test_entry_point_with_a_broken_handler_exits_with_its_error(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn", reason="the template's server; pip install gunicorn")
    app = tmp_path / "app"
    shutil.copytree(TEMPLATE, app)
    (app / "function" / "handler.py").write_text("x = 1\n")
    result = subprocess.run([sys.executable, "index.py", "--bind", "127.0.0.1:0"], cwd=app,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "defines no define(flow, context)" in result.stderr
