"""`faasflow invoke` and `faasflow requests` against a real `faasflow up`: which gateway they
find, what `--async` prints, where `--callback-url` goes, and exit codes of failed flows."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from faasflow.runtime.process import GatewayProcess

HANDLERS = {
    "report": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("clean").modify(lambda data: data.strip().upper())
            dag.node("finish").modify(lambda data: data + b"!")
            dag.edge("clean", "finish")
    """,
    "broken": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("fetch").modify(lambda data: data)
            dag.node("render").modify(render)
            dag.edge("fetch", "render")

        def render(data):
            raise ValueError("no template for " + data.decode())
    """,
    "gated": """
        import pathlib
        import time

        def define(flow, context):
            dag = flow.dag()
            dag.node("start").modify(lambda data: data)
            dag.node("wait").modify(wait)
            dag.edge("start", "wait")

        def wait(data):
            gate = pathlib.Path(__file__).parent / ("gate-" + data.decode())
            deadline = time.monotonic() + 60
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return data
    """,
    "echo": """
        def handle(event, context):
            return {"statusCode": 200, "body": event.body.decode()}
    """,
}


def write_stack(root: Path, gateway: str | None = None) -> Path:
    lines = ["version: 1.0", "provider:", "  name: openfaas"]
    if gateway:
        lines.append(f"  gateway: {gateway}")
    lines.append("functions:")
    for name, source in HANDLERS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
        lang = "python3-http" if name == "echo" else "faasflow"
        lines += [f"  {name}:", f"    lang: {lang}", f"    handler: ./{name}"]
    stack = root / "stack.yml"
    stack.write_text("\n".join(lines) + "\n")
    return stack


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("invoke-stack")
    with GatewayProcess(write_stack(root), data_dir=root / "data") as process:
        yield process


def _free_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def faasflow(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OPENFAAS_URL", "FAASFLOW_GATEWAY_URL")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "faasflow", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=90, check=False)


class Receiver:
    """A real HTTP server on 127.0.0.1 that keeps every POST it gets."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                calls.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"

    def next(self) -> tuple[dict[str, str], bytes]:
        return self.calls.get(timeout=30)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# -- which gateway -------------------------------------------------------------------------


def test_invoke_finds_the_gateway_in_openfaas_url(gateway: GatewayProcess,
                                                  tmp_path: Path) -> None:
    result = faasflow("invoke", "echo", "-d", "env", cwd=tmp_path,
                      env={"OPENFAAS_URL": gateway.url})
    assert (result.returncode, result.stdout) == (0, "env"), result.stderr


def test_invoke_finds_the_gateway_in_the_stack_files_provider(gateway: GatewayProcess,
                                                              tmp_path: Path) -> None:
    write_stack(tmp_path, gateway=gateway.url)
    result = faasflow("invoke", "echo", "-d", "stack", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "stack"), result.stderr


def test_invoke_reads_the_stack_file_given_with_f(gateway: GatewayProcess,
                                                  tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    stack = write_stack(tmp_path / "elsewhere", gateway=gateway.url)
    result = faasflow("invoke", "echo", "-d", "f", "-f", str(stack), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "f"), result.stderr


def test_openfaas_url_comes_before_the_stack_file(gateway: GatewayProcess,
                                                  tmp_path: Path) -> None:
    write_stack(tmp_path, gateway=_free_port_url())
    result = faasflow("invoke", "echo", "-d", "x", cwd=tmp_path,
                      env={"OPENFAAS_URL": gateway.url})
    assert (result.returncode, result.stdout) == (0, "x"), result.stderr


def test_gateway_option_comes_before_openfaas_url(gateway: GatewayProcess,
                                                  tmp_path: Path) -> None:
    result = faasflow("invoke", "echo", "-d", "g", "-g", gateway.url, cwd=tmp_path,
                      env={"OPENFAAS_URL": _free_port_url()})
    assert (result.returncode, result.stdout) == (0, "g"), result.stderr


def test_an_unreachable_gateway_names_where_its_url_came_from(tmp_path: Path) -> None:
    url = _free_port_url()
    write_stack(tmp_path, gateway=url)
    result = faasflow("invoke", "echo", cwd=tmp_path)
    assert result.returncode == 4
    assert f"cannot reach the gateway at {url}" in result.stderr
    assert "provider.gateway of stack.yml" in result.stderr


def test_requests_finds_the_gateway_as_invoke_does(gateway: GatewayProcess,
                                                   tmp_path: Path) -> None:
    write_stack(tmp_path, gateway=gateway.url)
    result = faasflow("requests", "list", "report", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["flow"] == "report"


def test_requests_list_into_a_closed_pipe_exits_quietly(gateway: GatewayProcess) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "faasflow", "requests", "list", "report", "--json", "-g",
             gateway.url], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
            check=False)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (0, "")


# -- --async and --callback-url --------------------------------------------------------------


def test_invoke_async_prints_the_request_id_requests_show_knows(gateway: GatewayProcess
                                                                ) -> None:
    result = faasflow("invoke", "report", "--async", "-d", " hi ", "-g", gateway.url)
    assert result.returncode == 0, result.stderr
    request_id = result.stdout.strip()
    shown = faasflow("requests", "show", "report", request_id, "--json", "-g", gateway.url)
    for _ in range(100):  # the queue delivers the call in the background
        if shown.returncode == 0 and json.loads(shown.stdout)["status"] == "success":
            break
        shown = faasflow("requests", "show", "report", request_id, "--json", "-g", gateway.url)
    assert json.loads(shown.stdout)["output"] == "HI!"


def test_callback_url_of_an_async_flow_gets_the_flows_result(gateway: GatewayProcess,
                                                             receiver: Receiver) -> None:
    result = faasflow("invoke", "report", "--async", "--callback-url", receiver.url,
                      "-d", "abc", "-g", gateway.url)
    assert result.returncode == 0, result.stderr
    headers, body = receiver.next()
    assert body == b"ABC!"
    assert headers["x-faas-flow-reqid"] == result.stdout.strip()


def test_callback_url_of_a_sync_call_gets_the_flows_result(gateway: GatewayProcess,
                                                           receiver: Receiver) -> None:
    result = faasflow("invoke", "report", "--callback-url", receiver.url, "-d", "sync",
                      "-g", gateway.url)
    assert result.returncode == 0, result.stderr
    assert receiver.next()[1] == b"SYNC!"


def test_openfaas_callback_stays_reachable_with_a_header(gateway: GatewayProcess,
                                                         receiver: Receiver) -> None:
    result = faasflow("invoke", "echo", "--async", "-H", f"X-Callback-Url={receiver.url}",
                      "-d", "first answer", "-g", gateway.url)
    assert result.returncode == 0, result.stderr
    headers, body = receiver.next()
    assert body == b"first answer"
    assert headers["x-call-id"] == result.stdout.strip()


# -- failures --------------------------------------------------------------------------------


def test_a_flow_failing_at_a_node_exits_1_naming_the_node(gateway: GatewayProcess) -> None:
    result = faasflow("invoke", "broken", "--wait", "30", "-d", "home", "-g", gateway.url)
    assert result.returncode == 1
    assert "render" in result.stderr
    assert "no template for home" in result.stderr
    assert "cannot reach" not in result.stderr


def test_resume_of_a_running_request_says_it_is_not_paused(gateway: GatewayProcess) -> None:
    request_id = gateway.post("/function/gated", data=b"resume").headers["X-Faas-Flow-Reqid"]
    try:
        result = faasflow("requests", "resume", "gated", request_id, "-g", gateway.url)
        assert result.returncode == 2  # 409
        assert f"failed to resume request {request_id}: flow is not paused (state running)" \
            in result.stderr
    finally:
        (gateway.stack.parent / "gated" / "gate-resume").touch()


def test_an_async_call_with_an_invalid_request_id_exits_2_before_queueing(
    gateway: GatewayProcess,
) -> None:
    result = faasflow("invoke", "report", "--async", "--request-id", "bad id", "-g", gateway.url)
    assert result.returncode == 2
    assert "invalid request id 'bad id'" in result.stderr


def test_ctrl_c_of_invoke_waiting_for_a_flow_exits_130_at_once(gateway: GatewayProcess) -> None:
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "faasflow", "invoke", "gated", "--wait", "60", "-d", "ctrl-c",
         "-g", gateway.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # started, and waiting for the gate
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=10)
        assert time.monotonic() - sent < 2
        assert (process.returncode, stderr) == (130, "faasflow: interrupted\n")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        (gateway.stack.parent / "gated" / "gate-ctrl-c").touch()
