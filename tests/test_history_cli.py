"""``faasflow requests redrive|rerun|show`` and ``faasflow logs`` against a real
``faasflow up`` process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from faasflow.runtime.process import GatewayProcess

FLOW = """
    from pathlib import Path

    SWITCH = Path(__file__).parent / "fixed"


    def check(data):
        print("checking", data.decode(), flush=True)
        if not SWITCH.exists():
            raise ValueError("order " + data.decode() + " refused")
        return data + b"-ok"


    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(lambda data: data + b"-a")
        dag.node("b").modify(check)
        dag.edge("a", "b")
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    root = tmp_path_factory.mktemp("history-cli")
    (root / "orders").mkdir()
    (root / "orders" / "handler.py").write_text(textwrap.dedent(FLOW).lstrip())
    stack = root / "stack.yml"
    stack.write_text("version: 1.0\nprovider:\n  name: openfaas\nfunctions:\n"
                     "  orders:\n    lang: faasflow\n    handler: ./orders\n")
    with GatewayProcess(stack, data_dir=root / "data") as process:
        yield process, root / "orders"


def faasflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faasflow", *args], capture_output=True,
                          text=True, timeout=90, check=False)


def ended(process: GatewayProcess, rid: str) -> str:
    deadline = time.time() + 20
    while True:
        status = str(requests.get(f"{process.url}/function/orders/flow/{rid}",
                                  timeout=10).json()["status"])
        if status in ("success", "failure") or time.time() > deadline:
            return status
        time.sleep(0.05)


def failed_request(process: GatewayProcess, switch: Path, body: bytes) -> str:
    switch.joinpath("fixed").unlink(missing_ok=True)
    rid = str(process.post("/function/orders", data=body).headers["X-Faas-Flow-Reqid"])
    assert ended(process, rid) == "failure"
    return rid


def test_requests_show_prints_the_states_and_the_users_traceback(
    gateway: tuple[GatewayProcess, Path],
) -> None:
    process, switch = gateway
    rid = failed_request(process, switch, b"o1")
    shown = faasflow("requests", "show", "orders", rid, "-g", process.url)
    assert shown.returncode == 0, shown.stderr
    assert "traceback" in shown.stdout and "in check" in shown.stdout
    assert "ValueError: order o1-a refused" in shown.stdout
    assert "failed" in shown.stdout.split("states", 1)[1]


def test_requests_redrive_continues_the_failed_request(
    gateway: tuple[GatewayProcess, Path],
) -> None:
    process, switch = gateway
    rid = failed_request(process, switch, b"o2")
    switch.joinpath("fixed").touch()
    result = faasflow("requests", "redrive", "orders", rid, "-g", process.url)
    assert result.returncode == 0, result.stderr
    assert f"request {rid} redriven (1 iterations sent again)" in result.stdout
    assert ended(process, rid) == "success"
    record = requests.get(f"{process.url}/function/orders/flow/{rid}", timeout=10).json()
    assert record["output"] == "o2-a-ok"


def test_requests_rerun_prints_the_new_request_id(gateway: tuple[GatewayProcess, Path]) -> None:
    process, switch = gateway
    rid = failed_request(process, switch, b"o3")
    switch.joinpath("fixed").touch()
    result = faasflow("requests", "rerun", "orders", rid, "-g", process.url)
    assert result.returncode == 0, result.stderr
    new = result.stdout.strip()
    assert new and new != rid
    assert ended(process, new) == "success"


def test_logs_prints_the_lines_of_one_request(gateway: tuple[GatewayProcess, Path]) -> None:
    process, switch = gateway
    first = failed_request(process, switch, b"first")
    failed_request(process, switch, b"second")
    deadline = time.time() + 10
    while True:
        result = faasflow("logs", "orders", "--request", first, "-g", process.url)
        if "checking first" in result.stdout or time.time() > deadline:
            break
        time.sleep(0.2)
    assert result.returncode == 0, result.stderr
    assert "checking first-a" in result.stdout and f"[{first}]" in result.stdout
    assert "second" not in result.stdout


def test_logs_of_an_unknown_function_exits_3(gateway: tuple[GatewayProcess, Path]) -> None:
    process, _ = gateway
    result = faasflow("logs", "nosuch", "-g", process.url)
    assert result.returncode == 3
