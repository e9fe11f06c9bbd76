"""``faasflow run --traceback`` prints the user's traceback of a failure (a real process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FLOW = '''
def helper(data):
    raise ValueError("bad order " + data.decode())


def define(flow, context):
    dag = flow.dag()
    dag.node("a").modify(lambda d: d)
    dag.node("b").modify(helper)
    dag.edge("a", "b")


def broken(flow, context):
    flow.dag().node("a").modify(undefined_name)
'''


def faasflow(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "myflow.py").write_text(FLOW)
    return subprocess.run([sys.executable, "-m", "faasflow", "run", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})


def test_run_traceback_prints_the_file_and_line_of_the_failing_modifier(tmp_path: Path) -> None:
    done = faasflow(tmp_path, "myflow:define", "-d", "17", "--traceback")
    assert done.returncode == 1
    assert 'myflow.py", line 3, in helper' in done.stderr
    assert "ValueError: bad order 17" in done.stderr


def test_run_without_traceback_prints_the_error_line_only(tmp_path: Path) -> None:
    done = faasflow(tmp_path, "myflow:define", "-d", "17")
    assert done.returncode == 1
    assert "bad order 17" in done.stderr and "line 3" not in done.stderr


def test_run_traceback_prints_where_define_raised(tmp_path: Path) -> None:
    done = faasflow(tmp_path, "myflow:broken", "--traceback")
    assert done.returncode != 0
    assert 'myflow.py", line 14, in broken' in done.stderr
    assert "NameError" in done.stderr
