"""The OpenFaaS template: its files parse, and its entry point serves a flow with gunicorn as a
real process (no Docker engine here, so the image itself is not built)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from template_harness import TEMPLATE, function_dir, function_env, watchdog

from faasflow.testing.queueworker import QueueWorker

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
                 "function/handler.py", "function/requirements.txt", "wheels/README.md"):
        assert (TEMPLATE / name).is_file(), name


def test_dockerfile_runs_the_of_watchdog_in_http_mode_on_a_slim_python() -> None:
    text = (TEMPLATE / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, re.MULTILINE)
    assert "COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog" in text
    assert 'mode="http"' in text
    assert 'upstream_url="http://127.0.0.1:5000"' in text
    assert 'fprocess="python index.py"' in text
    assert 'CMD ["fwatchdog"]' in text
    # faas-flow's template wrote `ENV name: value`, which sets a variable called "name:"
    assert not re.search(r"^ENV \w+: ", text, re.MULTILINE)


def test_dockerfile_takes_the_watchdog_from_ghcr_at_the_current_release() -> None:
    text = (TEMPLATE / "Dockerfile").read_text()
    assert "ARG WATCHDOG_IMAGE=ghcr.io/openfaas/of-watchdog:0.11.6" in text
    assert "FROM --platform=${TARGETPLATFORM:-linux/amd64} ${WATCHDOG_IMAGE} AS watchdog" in text
    assert "FROM --platform=${TARGETPLATFORM:-linux/amd64} ${PYTHON_IMAGE} AS build" in text


def test_dockerfile_is_healthy_on_the_lock_file_and_runs_as_a_user() -> None:
    text = (TEMPLATE / "Dockerfile").read_text()
    assert "HEALTHCHECK --interval=5s CMD [ -e /tmp/.lock ] || exit 1" in text
    assert re.search(r"^USER app$", text, re.MULTILINE)


def test_dockerfile_installs_faasflow_from_a_build_argument_or_the_wheels() -> None:
    text = (TEMPLATE / "Dockerfile").read_text()
    assert 'ARG FAASFLOW_PACKAGE=""' in text
    assert "COPY --chown=app:app wheels/ wheels/" in text
    assert '--no-index --find-links ./wheels' in text
    assert '${FAASFLOW_PACKAGE:+"${FAASFLOW_PACKAGE}"}' in text


def test_dockerfile_sets_no_store_so_the_template_defaults_apply() -> None:
    text = (TEMPLATE / "Dockerfile").read_text()
    assert "FAASFLOW_STATE_STORE" not in text
    assert "FAASFLOW_DATA_STORE" not in text
    assert "FAASFLOW_INVOKER" not in text


def test_template_requirements_name_no_unregistered_package() -> None:
    # faasflow is not on PyPI: naming it would install whatever takes the name there
    names = {re.split(r"[<>=\s]", line)[0]
             for line in (TEMPLATE / "requirements.txt").read_text().splitlines() if line}
    assert names == {"gunicorn"}


def test_template_ships_the_wheels_directory_the_dockerfile_copies() -> None:
    assert (TEMPLATE / "wheels").is_dir()
    assert not list((TEMPLATE / "wheels").glob("*.whl"))


def test_template_handler_is_a_valid_flow() -> None:
    import importlib.util

    from faasflow import Flow

    spec = importlib.util.spec_from_file_location("tpl_handler", TEMPLATE / "function/handler.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert Flow(module.define, name="tpl").export()["is-valid"] is True


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The entry point with the template's defaults, behind the watchdog stand-in; the URL is
    the watchdog's, so each test sends the Host header a gateway would."""
    pytest.importorskip("gunicorn", reason="the template's server; pip install gunicorn")
    app = function_dir(tmp_path_factory.mktemp("template"), FLOW)
    with QueueWorker() as queue:
        # no FAASFLOW_FLOW_NAME: the name comes from the Host header, as behind faas-netes
        env = function_env(FAASFLOW_GATEWAY_URL=queue.url, FAASFLOW_HMAC_SECRET="k")
        with watchdog(app, env) as dog:
            queue.functions["tplflow"] = dog.url
            yield dog.url


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


def _start_fails(tmp_path: Path, **variables: str) -> str:
    app = function_dir(tmp_path, FLOW)
    env = function_env(upstream_url="http://127.0.0.1:1", **variables)
    result = subprocess.run([sys.executable, "index.py"], cwd=app, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_a_process_local_store_is_refused_with_several_workers(tmp_path: Path) -> None:
    stderr = _start_fails(tmp_path, FAASFLOW_STATE_STORE="memory")
    assert "2 worker processes" in stderr
    assert "FAASFLOW_STATE_STORE" in stderr


def test_a_host_local_store_is_refused_with_several_replicas(tmp_path: Path) -> None:
    stderr = _start_fails(tmp_path, FAASFLOW_REPLICAS="3")
    assert "FAASFLOW_REPLICAS=3" in stderr
    assert "FAASFLOW_STATE_STORE" in stderr


def test_a_process_local_data_store_is_refused_naming_its_variable(tmp_path: Path) -> None:
    stderr = _start_fails(tmp_path, FAASFLOW_DATA_STORE="memory")
    assert "FAASFLOW_DATA_STORE" in stderr


def test_one_worker_process_may_use_memory_stores(tmp_path: Path) -> None:
    app = function_dir(tmp_path, FLOW)
    with QueueWorker() as queue:
        env = function_env(FAASFLOW_GATEWAY_URL=queue.url, FAASFLOW_HMAC_SECRET="k",
                           FAASFLOW_STATE_STORE="memory", FAASFLOW_DATA_STORE="memory")
        with watchdog(app, env, "--workers", "1") as dog:
            queue.functions["tplflow"] = dog.url
            reply = requests.post(f"{queue.url}/function/tplflow", data=b"x", timeout=60,
                                  headers={"X-Faas-Flow-Wait": "30"})
    assert (reply.status_code, reply.text) == (200, "x-1-2")


def _install_step(context: Path, **build_args: str) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's faasflow install step, run by sh with a pip that prints its arguments
    (Docker joins the backslash-continued lines into one command)."""
    text = (TEMPLATE / "Dockerfile").read_text()
    step = re.search(r"^RUN (set -e;.*?)\n\n", text, re.S | re.M)
    assert step is not None
    bin_dir = context / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    (bin_dir / "pip").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAASFLOW_PACKAGE": "", "PIP_INDEX_URL": "",
           "PIP_EXTRA_INDEX_URL": "", **build_args}
    return subprocess.run(["sh", "-c", step.group(1).replace("\\\n", " ")], cwd=context,
                          env=env, capture_output=True, text=True, timeout=30, check=False)


def test_the_install_step_stops_without_wheels_or_a_package(tmp_path: Path) -> None:
    shutil.copy(TEMPLATE / "requirements.txt", tmp_path)
    (tmp_path / "wheels").mkdir()
    done = _install_step(tmp_path)
    assert done.returncode == 1
    assert "faasflow template export" in done.stderr
    assert "FAASFLOW_PACKAGE" in done.stderr


def test_the_install_step_installs_the_build_argument_as_one_requirement(tmp_path: Path) -> None:
    shutil.copy(TEMPLATE / "requirements.txt", tmp_path)
    (tmp_path / "wheels").mkdir()
    done = _install_step(tmp_path, FAASFLOW_PACKAGE="faasflow @ git+https://git.example/o/f@v1")
    assert done.stdout == "install|-r|requirements.txt|faasflow @ git+https://git.example/o/f@v1|"


def test_the_install_step_installs_offline_when_there_are_wheels(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("faasflow==0.1.0\ngunicorn>=22\n")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "faasflow-0.1.0-py3-none-any.whl").write_bytes(b"")
    done = _install_step(tmp_path)
    assert done.stdout == "install|--no-index|--find-links|./wheels|-r|requirements.txt|"
