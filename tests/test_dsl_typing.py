"""The typing of the definition API, checked by running mypy on checked-in files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "typing"


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("mypy")
    cache = tmp_path_factory.mktemp("mypy-cache")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
         "--no-error-summary", str(HERE / "misspelt_option.py"), str(HERE / "typed_flow.py")],
        check=False, capture_output=True, text=True, cwd=HERE.parent.parent, timeout=240,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_misspelt_call_option_fails_mypy_naming_it(mypy_output: str) -> None:
    errors = [line for line in mypy_output.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "misspelt_option.py:10:" in errors[0], mypy_output
    assert 'Unexpected keyword argument "retires"' in errors[0]


def test_every_option_decorator_and_shortcut_spelt_right_passes_mypy(mypy_output: str) -> None:
    assert "typed_flow.py" not in mypy_output, mypy_output


def test_the_typed_flow_also_compiles() -> None:
    import importlib.util

    import faasflow

    spec = importlib.util.spec_from_file_location("typed_flow", HERE / "typed_flow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert list(faasflow.Flow(module.define).export()["nodes"]) == [
        "fetch", "notify", "greet", "join", "each",
    ]
