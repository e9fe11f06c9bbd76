"""The `faasflow run | up | invoke | requests | new` commands, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gateway import write_stack

from faasflow.runtime.process import GatewayProcess

FLOW = """
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda data: data + b"-1")
        dag.node("n2").apply("shout")
        dag.node("n3").modify(lambda data: data + context.query.get("tail", "").encode())
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")
"""

SHOUT = """
    def handle(event, context):
        return {"statusCode": 200, "body": event.body.decode().upper()}
"""

FAILING = """
    def define(flow, context):
        flow.sync_node().modify(explode)

    def explode(data):
        raise ValueError("no " + data.decode())
"""

SLOW = """
    import time

    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda data: data)
        dag.node("b").modify(lambda data: time.sleep(30) or data)
        dag.edge("a", "b")
"""


def faasflow(*args: str, cwd: Path | None = None, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faasflow", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=90, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, source in {"flow": FLOW, "shout": SHOUT, "failing": FAILING,
                         "slow": SLOW}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    (tmp_path / "stack.yml").write_text(textwrap.dedent("""
        functions:
          flow: {lang: faasflow, handler: ./flow}
          shout: {lang: python3-http, handler: ./shout}
          failing: {lang: faasflow, handler: ./failing}
          slow: {lang: faasflow, handler: ./slow}
    """))
    return tmp_path


@pytest.mark.parametrize("command", ["run", "up", "invoke", "requests", "new"])
def test_every_command_has_help(command: str) -> None:
    result = faasflow(command, "--help")
    assert result.returncode == 0
    assert "usage: faasflow " + command in result.stdout


# -- run ---------------------------------------------------------------------------------------


def test_run_prints_the_output_of_a_stack_flow(project: Path) -> None:
    result = faasflow("run", "flow", "-d", "hi", "--query", "tail=!", cwd=project)
    assert (result.returncode, result.stdout) == (0, "HI-1!")


def test_run_reads_the_body_from_stdin(project: Path) -> None:
    result = faasflow("run", "flow", cwd=project, stdin="piped")
    assert (result.returncode, result.stdout) == (0, "PIPED-1")


def test_run_takes_a_handler_directory(project: Path) -> None:
    (project / "solo").mkdir()
    (project / "solo" / "handler.py").write_text(
        "def define(flow, context):\n    flow.sync_node().modify(lambda d: d[::-1])\n")
    result = faasflow("run", str(project / "solo"), "-d", "abc", cwd=project.parent)
    assert (result.returncode, result.stdout) == (0, "cba")


def test_run_takes_module_and_function(project: Path) -> None:
    (project / "flows_mod.py").write_text(
        "def define(flow, context):\n    flow.sync_node().modify(lambda d: d * 2)\n")
    result = faasflow("run", "flows_mod:define", "-d", "ab", cwd=project)
    assert (result.returncode, result.stdout) == (0, "abab")


def test_run_shows_each_finished_node_on_stderr(project: Path) -> None:
    result = faasflow("run", "flow", "-d", "x", "--progress", "always", cwd=project)
    assert result.returncode == 0
    lines = [line.split()[:2] for line in result.stderr.splitlines()]
    assert lines == [["ok", "0_1_n1"], ["ok", "0_2_n2"], ["ok", "0_3_n3"]]


def test_run_json_prints_the_request_record(project: Path) -> None:
    result = faasflow("run", "flow", "-d", "x", "--json", cwd=project)
    doc = json.loads(result.stdout)
    assert (doc["status"], doc["output"]) == ("success", "X-1")
    assert set(doc["nodes"]) == {"0_1_n1", "0_2_n2", "0_3_n3"}


def test_run_of_a_failing_flow_exits_1_with_the_error(project: Path) -> None:
    result = faasflow("run", "failing", "-d", "way", cwd=project)
    assert result.returncode == 1
    assert "no way" in result.stderr
    assert result.stdout == ""


def test_run_stops_a_flow_past_its_timeout_and_exits_1(project: Path) -> None:
    result = faasflow("run", "slow", "--timeout", "0.5", cwd=project)
    assert result.returncode == 1
    assert "stopped" in result.stderr


def test_run_of_an_unknown_flow_exits_3(project: Path) -> None:
    result = faasflow("run", "nothing", cwd=project)
    assert result.returncode == 3
    assert "'nothing'" in result.stderr


def test_run_of_a_plain_function_exits_3_pointing_at_invoke(project: Path) -> None:
    result = faasflow("run", "shout", cwd=project)
    assert result.returncode == 3
    assert "faasflow invoke shout" in result.stderr


# -- invoke and requests, through a gateway ----------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    root = tmp_path_factory.mktemp("cli-stack")
    gates = root / "gates"
    gates.mkdir()
    with GatewayProcess(write_stack(root, gates), data_dir=root / "data") as process:
        yield process, gates


def test_invoke_prints_a_sync_flows_answer(gateway: tuple[GatewayProcess, Path]) -> None:
    process, _ = gateway
    result = faasflow("invoke", "hello", "-d", "Bob", "-g", process.url)
    assert (result.returncode, result.stdout) == (0, "Hello Bob")


def test_invoke_wait_prints_a_dag_flows_output(gateway: tuple[GatewayProcess, Path]) -> None:
    process, _ = gateway
    result = faasflow("invoke", "fanout", "-d", "q", "--wait", "30", "-g", process.url)
    assert (result.returncode, result.stdout) == (0, "b=qab;c=qac")


def test_invoke_wait_exits_1_naming_a_request_still_running(
    gateway: tuple[GatewayProcess, Path],
) -> None:
    process, gates = gateway
    result = faasflow("invoke", "chain", "-d", "cw", "--wait", "0.2", "-g", process.url)
    assert result.returncode == 1
    assert "still running" in result.stderr
    (gates / "cw-1").touch()


def test_invoke_async_prints_the_call_id(gateway: tuple[GatewayProcess, Path]) -> None:
    process, _ = gateway
    result = faasflow("invoke", "echo", "--async", "-d", "x", "-g", process.url)
    assert result.returncode == 0
    assert result.stdout.strip()  # the request id, sent as X-Call-Id too (test_cli_invoke)


def test_invoke_of_a_failing_flow_exits_1(gateway: tuple[GatewayProcess, Path]) -> None:
    process, _ = gateway
    result = faasflow("invoke", "failing", "--wait", "30", "-g", process.url)
    assert result.returncode == 1
    assert "of failing failed: Node(0_2_n2)" in result.stderr


def test_invoke_with_a_bad_header_value_exits_2(gateway: tuple[GatewayProcess, Path]) -> None:
    process, _ = gateway
    result = faasflow("invoke", "fanout", "--request-id", "bad id", "-g", process.url)
    assert result.returncode == 2
    assert "invalid request id" in result.stderr


def test_invoke_of_an_unknown_function_exits_3(gateway: tuple[GatewayProcess, Path]) -> None:
    process, _ = gateway
    assert faasflow("invoke", "nope", "-g", process.url).returncode == 3


def test_invoke_without_a_gateway_exits_4(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = faasflow("invoke", "hello", "-g", f"http://127.0.0.1:{port}")
    assert result.returncode == 4
    assert "cannot reach the gateway" in result.stderr


def test_requests_pause_show_resume_and_list(gateway: tuple[GatewayProcess, Path]) -> None:
    process, gates = gateway
    reply = process.post("/function/chain", data=b"cli")
    request_id = reply.headers["X-Faas-Flow-Reqid"]
    result = faasflow("requests", "pause", "chain", request_id, "-g", process.url)
    assert (result.returncode, result.stdout.strip()) == (
        0, f"Successfully paused request {request_id}")
    shown = faasflow("requests", "show", "chain", request_id, "-g", process.url)
    assert "status   paused" in shown.stdout
    (gates / "cli-1").touch()
    result = faasflow("requests", "resume", "chain", request_id, "-g", process.url)
    assert result.returncode == 0
    listed = faasflow("requests", "list", "chain", "-g", process.url)
    assert request_id in listed.stdout


def test_requests_stop_then_stop_again_exits_1(gateway: tuple[GatewayProcess, Path]) -> None:
    process, gates = gateway
    request_id = process.post("/function/chain", data=b"cls").headers["X-Faas-Flow-Reqid"]
    assert faasflow("requests", "stop", "chain", request_id, "-g", process.url).returncode == 0
    again = faasflow("requests", "stop", "chain", request_id, "-g", process.url)
    assert again.returncode == 2  # 409: the request is not running
    assert request_id in again.stderr
    (gates / "cls-1").touch()


def test_requests_show_of_an_unknown_request_exits_3(
    gateway: tuple[GatewayProcess, Path],
) -> None:
    process, _ = gateway
    result = faasflow("requests", "show", "chain", "missing-id", "-g", process.url)
    assert result.returncode == 3


def test_requests_without_an_id_exits_2() -> None:
    result = faasflow("requests", "pause", "chain")
    assert result.returncode == 2
    assert "needs a request id" in result.stderr


# -- new ---------------------------------------------------------------------------------------


def test_new_scaffolds_a_flow_that_runs(tmp_path: Path) -> None:
    assert faasflow("new", "my-flow", cwd=tmp_path).returncode == 0
    assert (tmp_path / "my-flow" / "handler.py").is_file()
    assert "my-flow:\n    lang: faasflow\n    handler: ./my-flow" in \
        (tmp_path / "stack.yml").read_text()
    result = faasflow("run", "my-flow", "-d", " hi ", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "HI")


def test_new_keeps_the_stack_files_comments(tmp_path: Path) -> None:
    (tmp_path / "stack.yml").write_text(
        "# my project\nprovider:\n  name: openfaas\nfunctions:\n  # the first one\n"
        "  a:\n    lang: python3-http\n    handler: ./a\n"
    )
    assert faasflow("new", "b", "--lang", "python3-http", cwd=tmp_path).returncode == 0
    text = (tmp_path / "stack.yml").read_text()
    assert text.startswith("# my project\n")
    assert "  # the first one\n" in text
    assert "  b:\n    lang: python3-http\n    handler: ./b\n" in text


def test_new_refuses_an_existing_function(tmp_path: Path) -> None:
    faasflow("new", "dup", cwd=tmp_path)
    result = faasflow("new", "dup", cwd=tmp_path)
    assert result.returncode == 2
    assert "already" in result.stderr


def test_new_refuses_an_invalid_name(tmp_path: Path) -> None:
    result = faasflow("new", "Not_Valid", cwd=tmp_path)
    assert result.returncode == 2
    assert not (tmp_path / "Not_Valid").exists()
