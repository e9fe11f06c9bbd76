"""The folded arrival across a process kill: the fan-in and foreach requests of
test_fanin_folded_faults (small payloads kept in the members, large ones in the data store) on
sqlite, the process killed just before and just after each store call, then a new process
carrying on (the driver and the checks of test_faults_crash): the request ends once, with
every input complete, and no function of a node whose arrival was committed runs again."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_faults_crash as crash
from faults_shapes import run_case
from test_fanin_folded_faults import SHAPES

from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.testing.faults import FaultMode

pytestmark = pytest.mark.slow


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "crash_k" not in metafunc.fixturenames:
        return
    params = []
    for name, shape in SHAPES.items():
        clean = run_case(shape, (MemoryStateStore(), MemoryDataStore()))
        hooks_marker = {
            number
            for number, method, key in clean.faults.log
            if method == "create" and key.endswith("/hooks-done")
        }
        for mode in crash.MODES:
            for k in range(1, clean.store_calls + 1):
                if mode == "kill" and k in hooks_marker:
                    crash.HOOKS_MAY_REPEAT.add((name, mode, k))
                params.append(pytest.param(name, mode, k, id=f"{name}-{mode}-k{k:02d}"))
    metafunc.parametrize(("shape_name", "mode", "crash_k"), params)


def test_request_ends_once_after_a_kill_at_call_k(
    shape_name: str,
    mode: FaultMode,
    crash_k: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(crash.SHAPES, shape_name, SHAPES[shape_name])
    crash.test_request_ends_once_after_a_kill_at_call_k(shape_name, mode, crash_k, tmp_path)
