"""``faasflow up --watch`` reloads edited handlers and stack files; without it, a 404 for a
function added since the start says to restart."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gateway import wait_for

from faasflow.runtime.process import GatewayProcess


def handler(root: Path, name: str, answer: str) -> None:
    (root / name).mkdir(exist_ok=True)
    (root / name / "handler.py").write_text(textwrap.dedent(f"""
        def handle(event, context):
            return {answer!r}
    """).lstrip())


def stack_file(root: Path, *names: str) -> Path:
    path = root / "stack.yml"
    lines = ["provider: {name: openfaas}", "functions:"]
    lines += [f"  {name}: {{lang: python3-http, handler: ./{name}}}" for name in names]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[GatewayProcess]:
    handler(tmp_path, "fn", "v1")
    with GatewayProcess(stack_file(tmp_path, "fn"), data_dir=tmp_path / "data", processes=1,
                        extra=["--watch"]) as gateway:
        yield gateway


def answer(gateway: GatewayProcess, name: str) -> str:
    reply = gateway.post(f"/function/{name}")
    return reply.text if reply.status_code == 200 else f"{reply.status_code}"


def test_an_edited_handler_is_served_after_the_reload(watched: GatewayProcess) -> None:
    assert answer(watched, "fn") == "v1"
    time.sleep(0.05)
    handler(watched.stack.parent, "fn", "v2")
    wait_for(lambda: answer(watched, "fn") == "v2", what="the new version")


def test_a_function_added_to_the_stack_is_served_after_the_reload(
    watched: GatewayProcess,
) -> None:
    root = watched.stack.parent
    handler(root, "added", "new one")
    stack_file(root, "fn", "added")
    wait_for(lambda: answer(watched, "added") == "new one", what="the added function")
    names = {f["name"] for f in watched.get("/system/functions").json()}
    assert names == {"fn", "added"}


def test_a_stack_that_does_not_load_keeps_the_running_version(
    watched: GatewayProcess,
) -> None:
    root = watched.stack.parent
    (root / "stack.yml").write_text("provider: {name: openfaas}\nfunctions:\n  fn: {lang: 7\n")
    wait_for(lambda: "cannot be served" in watched.text, what="the refused reload")
    assert answer(watched, "fn") == "v1"


def test_without_watch_a_404_says_to_restart_when_the_stack_changed(tmp_path: Path) -> None:
    handler(tmp_path, "fn", "v1")
    path = stack_file(tmp_path, "fn")
    with GatewayProcess(path, data_dir=tmp_path / "data", processes=1) as gateway:
        reply = gateway.post("/function/later")
        assert "restart" not in reply.text
        time.sleep(0.05)
        handler(tmp_path, "later", "x")
        stack_file(tmp_path, "fn", "later")
        reply = gateway.post("/function/later")
    assert reply.status_code == 404
    assert "restart" in reply.text
