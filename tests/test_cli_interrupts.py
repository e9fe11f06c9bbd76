"""Ctrl-C and closed pipes: every command leaves at once and quietly, as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HANGING = """
    import pathlib
    import time

    def define(flow, context):
        dag = flow.dag()
        dag.node("fetch").modify(lambda data: data)
        dag.node("hang").modify(hang)
        dag.edge("fetch", "hang")

    def hang(data):
        pathlib.Path(__file__).with_name("started").touch()
        time.sleep(600)
        return data
"""

HANGING_SYNC = """
    import pathlib
    import time

    def define(flow, context):
        flow.sync_node().modify(hang)

    def hang(data):
        pathlib.Path(__file__).with_name("started").touch()
        time.sleep(600)
        return data
"""


def _handler(tmp_path: Path, source: str) -> Path:
    directory = tmp_path / "hanging"
    directory.mkdir()
    (directory / "handler.py").write_text(textwrap.dedent(source).lstrip())
    return directory


def _interrupt_run(directory: Path) -> tuple[int, str, float]:
    process = subprocess.Popen(
        [sys.executable, "-m", "faasflow", "run", str(directory), "-d", "x"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (directory / "started").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the function never started"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=10)
        return process.returncode, stderr, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_first_ctrl_c_stops_run_of_a_hanging_node_with_130(tmp_path: Path) -> None:
    code, stderr, took = _interrupt_run(_handler(tmp_path, HANGING))
    assert code == 130
    assert took < 2
    assert "Traceback" not in stderr
    assert stderr.startswith("faasflow: interrupted; request ")
    assert len(stderr.strip().splitlines()) == 1


def test_first_ctrl_c_stops_run_of_a_hanging_sync_flow_with_130(tmp_path: Path) -> None:
    code, stderr, took = _interrupt_run(_handler(tmp_path, HANGING_SYNC))
    assert (code, stderr.strip()) == (130, "faasflow: interrupted")
    assert took < 2


def _into_closed_pipe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout is a pipe nobody reads any more (``| head`` after it left)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "faasflow", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                              cwd=cwd)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [["plugins"], ["plugins", "--json"], ["plugins", "-v"]])
def test_plugins_into_a_closed_pipe_exits_quietly(args: list[str]) -> None:
    result = _into_closed_pipe(*args)
    assert (result.returncode, result.stderr) == (0, "")


def test_graph_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "def define(flow, context):\n    flow.sync_node().modify(lambda d: d)\n")
    result = _into_closed_pipe("graph", "flows.py", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_run_output_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "def define(flow, context):\n    flow.sync_node().modify(lambda d: d * 100000)\n")
    result = _into_closed_pipe("run", "flows.py", "-d", "x", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
