"""What ``faasflow up`` says about each flow before it listens: its backends, an invalid
definition, functions the stack does not declare, and stores that do not answer."""

from __future__ import annotations

import os
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasflow.runtime.preflight import applied_functions
from faasflow.runtime.process import GatewayProcess

FLOWS = {
    "good": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("a").apply("echo")
            each = dag.foreach_branch("each", lambda d: {"1": d}, aggregator=lambda f: b"")
            each.node("up").apply("echo")
            dag.edge("a", "each")
    """,
    "broken": """
        def define(flow, context):
            dag = flow.dag()
            dag.node("a").modify(lambda d: d)
            dag.node("b").modify(lambda d: d)
    """,
    "stray": """
        def define(flow, context):
            flow.dag().node("a").apply("not-in-the-stack")
    """,
}


def write(root: Path, env: dict[str, str] | None = None) -> Path:
    (root / "echo").mkdir()
    (root / "echo" / "handler.py").write_text("def handle(event, context):\n    return 'x'\n")
    lines = ["functions:", "  echo: {lang: python3-http, handler: ./echo}"]
    for name, source in FLOWS.items():
        (root / name).mkdir()
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
        lines.append(f"  {name}:\n    lang: faasflow\n    handler: ./{name}")
        if env:
            lines.append("    environment:")
            lines += [f"      {key}: '{value}'" for key, value in env.items()]
    path = root / "stack.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def flow_line(gateway: GatewayProcess, name: str) -> str:
    return next(line for line in gateway.output if line.startswith(f"flow {name}: "))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("preflight")
    with GatewayProcess(write(root), data_dir=root / "data", processes=1) as process:
        yield process


def test_a_valid_flow_is_ok_and_names_its_backends(gateway: GatewayProcess) -> None:
    line = flow_line(gateway, "good")
    assert line.startswith("flow good: ok (")
    assert "state store sqlite" in line and "invoker openfaas" in line


def test_an_invalid_definition_is_named_before_listening(gateway: GatewayProcess) -> None:
    lines = [line.rstrip() for line in gateway.output]
    broken = flow_line(gateway, "broken")
    assert "PROBLEM" in broken and "2 start nodes" in broken
    assert lines.index(broken.rstrip()) < next(
        i for i, line in enumerate(lines) if "listening on" in line)


def test_a_function_the_stack_does_not_declare_is_named(gateway: GatewayProcess) -> None:
    assert "'not-in-the-stack'" in flow_line(gateway, "stray")


def test_flows_with_problems_are_still_served(gateway: GatewayProcess) -> None:
    assert gateway.get("/function/broken?export-dag=true").status_code == 200


def test_a_store_that_cannot_be_reached_is_said_at_start(tmp_path: Path) -> None:
    pytest.importorskip("faasflow_etcd")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stack = write(tmp_path, {"FAASFLOW_STATE_STORE": "etcd",
                             "FAASFLOW_ETCD_ENDPOINTS": f"127.0.0.1:{port}",
                             "FAASFLOW_BACKEND_RETRY": "0"})
    env = {**os.environ, "FAASFLOW_LOAD_PLUGINS": "faasflow-etcd"}
    with GatewayProcess(stack, data_dir=tmp_path / "data", processes=1, env=env) as gateway:
        line = flow_line(gateway, "good")
    assert "state store 'etcd'" in line
    assert "cannot be reached" in line or "did not answer" in line


def test_applied_functions_are_found_at_every_level() -> None:
    export = {"nodes": {"a": {"operations": [{"kind": "function", "function": "f"},
                                             {"kind": "modifier"}]},
                        "b": {"sub-dag": {"nodes": {"c": {"operations": [
                            {"kind": "function", "function": "g"}]}}}}}}
    assert applied_functions(export) == {"f", "g"}
