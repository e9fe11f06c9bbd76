"""The local gateway's durability and start-up: queued work survives a killed gateway, the data
directory is locked, and a bad stack file is refused with exit code 2."""

from __future__ import annotations

import queue
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gateway import CallbackServer, wait_for

from faasflow.runtime.process import GatewayProcess

GATE = """
    import os
    import pathlib
    import time

    def handle(event, context):
        name = event.body.decode()
        gates = pathlib.Path(os.environ["GATE_DIR"])
        (gates / (name + ".entered")).touch()
        deadline = time.time() + 60
        while not (gates / name).exists():
            if time.time() > deadline:
                return {"statusCode": 504, "body": "gate " + name + " never opened"}
            time.sleep(0.02)
        return name + "-2"
"""

HELD = """
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda data: data + b"-1")
        dag.node("n2").apply("gate")
        dag.node("n3").modify(lambda data: data + b"-3")
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")
"""


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    gates = tmp_path / "gates"
    gates.mkdir()
    for name, source in {"gate": GATE, "held": HELD}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    path = tmp_path / "stack.yml"
    path.write_text(textwrap.dedent(f"""
        functions:
          gate:
            lang: python3-http
            handler: ./gate
            environment:
              GATE_DIR: {gates}
          held:
            lang: faasflow
            handler: ./held
    """))
    return path


@pytest.fixture
def callbacks() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.close()


def up(stack: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faasflow", "up", "-f", str(stack), "--port", "0", *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_async_calls_accepted_before_a_crash_are_delivered_after_restart(
    stack: Path, callbacks: CallbackServer
) -> None:
    gates = stack.parent / "gates"
    data = stack.parent / "data"
    first = GatewayProcess(stack, data_dir=data, extra=["--concurrency", "1"]).start()
    try:
        for name in ("a1", "a2", "a3"):
            reply = first.post("/async-function/gate", data=name,
                               headers={"X-Callback-Url": callbacks.url})
            assert reply.status_code == 202
        wait_for(lambda: (gates / "a1.entered").exists(), what="the first call to start")
    finally:
        first.kill()
    second = GatewayProcess(stack, data_dir=data).start()
    try:
        assert "resuming 3 queued asynchronous calls" in second.text
        for name in ("a1", "a2", "a3"):
            (gates / name).touch()
        bodies = {callbacks.next()[2] for _ in range(3)}
        assert bodies == {b"a1-2", b"a2-2", b"a3-2"}
    finally:
        second.stop()


def test_a_flow_waiting_on_a_queued_iteration_finishes_after_restart(
    stack: Path, callbacks: CallbackServer
) -> None:
    gates = stack.parent / "gates"
    data = stack.parent / "data"
    first = GatewayProcess(stack, data_dir=data).start()
    try:
        reply = first.post("/function/held", data=b"f",
                           headers={"X-Faas-Flow-Callback-Url": callbacks.url})
        request_id = reply.headers["X-Faas-Flow-Reqid"]
        wait_for(lambda: (gates / "f-1.entered").exists(), what="n2 to start")
    finally:
        first.kill()
    second = GatewayProcess(stack, data_dir=data).start()
    try:
        (gates / "f-1").touch()
        try:
            _, headers, body = callbacks.next()
        except queue.Empty:
            raise AssertionError(f"no callback; gateway logs:\n{first.text}\n---\n"
                                 f"{second.text}") from None
        assert body == b"f-1-2-3"
        assert headers["X-Faas-Flow-Reqid"] == request_id
        assert second.get(f"/function/held/flow/{request_id}").json()["status"] == "success"
    finally:
        second.stop()


def test_the_signing_key_is_generated_once_per_data_dir(stack: Path) -> None:
    data = stack.parent / "data"
    with GatewayProcess(stack, data_dir=data):
        key = (data / "hmac-secret").read_text()
    assert stat.S_IMODE((data / "hmac-secret").stat().st_mode) == 0o600
    with GatewayProcess(stack, data_dir=data):
        assert (data / "hmac-secret").read_text() == key


def test_sigterm_stops_the_gateway_with_status_0(stack: Path) -> None:
    process = GatewayProcess(stack, data_dir=stack.parent / "data").start()
    assert process.stop() == 0


def test_a_second_gateway_on_the_same_data_dir_is_refused(stack: Path) -> None:
    data = stack.parent / "data"
    with GatewayProcess(stack, data_dir=data):
        result = up(stack, "--data-dir", str(data))
    assert result.returncode == 2
    assert "another faasflow gateway" in result.stderr


def test_the_default_data_dir_is_next_to_the_stack_file(stack: Path) -> None:
    with GatewayProcess(stack):
        assert (stack.parent / ".faasflow" / "queue.db").exists()


def test_a_missing_stack_file_exits_2(tmp_path: Path) -> None:
    result = up(tmp_path / "nothing.yml")
    assert result.returncode == 2
    assert "nothing.yml" in result.stderr


def test_an_unsupported_lang_exits_2_naming_the_function(tmp_path: Path) -> None:
    (tmp_path / "go").mkdir()
    (tmp_path / "go" / "handler.py").write_text("")
    (tmp_path / "stack.yml").write_text("functions:\n  gofn:\n    lang: go\n    handler: ./go\n")
    result = up(tmp_path / "stack.yml")
    assert result.returncode == 2
    assert "'gofn'" in result.stderr
    assert "lang 'go'" in result.stderr


def test_a_handler_that_does_not_import_exits_2_naming_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "handler.py").write_text("def define(flow, context)\n")
    (tmp_path / "stack.yml").write_text(
        "functions:\n  broken:\n    lang: faasflow\n    handler: ./broken\n"
    )
    result = up(tmp_path / "stack.yml", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "broken/handler.py" in result.stderr
    assert "SyntaxError" in result.stderr


def test_a_flow_handler_without_define_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "handler.py").write_text("x = 1\n")
    (tmp_path / "stack.yml").write_text(
        "functions:\n  empty:\n    lang: faasflow\n    handler: ./empty\n"
    )
    result = up(tmp_path / "stack.yml", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "defines no define(flow, context)" in result.stderr


def test_an_open_data_directory_is_made_the_owners_only_at_start(stack: Path) -> None:
    data = stack.parent / "data"
    (data / "data" / "flow").mkdir(parents=True)
    (data / "data" / "flow" / "output").write_text("secret output")
    for path, mode in ((data, 0o755), (data / "data", 0o755), (data / "data" / "flow", 0o755),
                       (data / "data" / "flow" / "output", 0o644)):
        path.chmod(mode)
    with GatewayProcess(stack, data_dir=data) as gateway:
        assert gateway.get("/healthz").status_code == 200
        modes = {path.relative_to(data).as_posix(): stat.S_IMODE(path.stat().st_mode)
                 for path in [data, *data.rglob("*")] if not path.is_symlink()}
    assert modes["."] == 0o700
    assert modes["data/flow"] == 0o700
    assert modes["data/flow/output"] == 0o600
    assert modes["queue.db"] == 0o600
    assert modes["secrets"] == 0o700
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes


def test_quiet_silences_the_workers_info_lines_too(stack: Path) -> None:
    with GatewayProcess(stack, data_dir=stack.parent / "data") as loud:
        assert " INFO worker " in loud.text
    with GatewayProcess(stack, data_dir=stack.parent / "data", extra=["-q"]) as quiet:
        assert quiet.get("/healthz").status_code == 200
        time.sleep(0.3)
        assert " INFO " not in quiet.text


def test_flows_reach_a_gateway_listening_on_another_address(stack: Path) -> None:
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback")
    gates = stack.parent / "gates"
    with GatewayProcess(stack, data_dir=stack.parent / "data", extra=["--host", "::1"]) as gw:
        assert gw.url.startswith("http://[::1]:")
        request_id = gw.post("/function/held", data=b"v6").headers["X-Faas-Flow-Reqid"]
        (gates / "v6-1").touch()

        def ended() -> bool:
            return bool(gw.get(f"/function/held/flow/{request_id}").json()["status"] == "success")

        wait_for(ended, what="the flow to finish through the IPv6 gateway")
