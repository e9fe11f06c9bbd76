"""The examples project: the README's first command, and each example flow run embedded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "examples" / "stack.yml"


def test_demo_starts_the_gateway_invokes_every_example_and_stops() -> None:
    result = subprocess.run([sys.executable, "-m", "faasflow.runtime.demo"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Hello Ada Lovelace!" in result.stdout
    assert '{"letters": 16, "words": 4}' in result.stdout
    assert "1 + 4 + 9 + 16 + 25 = 55" in result.stdout
    assert "all examples answered as expected" in result.stdout


def test_demo_with_a_missing_stack_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faasflow.runtime.demo", "-f", str(tmp_path / "none.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "none.yml" in result.stderr


@pytest.mark.parametrize(("flow", "data", "output"), [
    ("greet", "grace hopper", "Hello Grace Hopper!"),
    ("report", "one two three", '{"letters": 11, "words": 3}'),
    ("squares", "3,4", "9 + 16 = 25"),
])
def test_example_flow_runs_embedded(flow: str, data: str, output: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "faasflow", "run", flow, "-f", str(STACK), "-d", data],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (result.returncode, result.stdout) == (0, output), result.stderr
