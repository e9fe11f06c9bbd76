"""The third-party example plugin (docs/examples/faasflow-example), once installed, shows up in
`faasflow plugins` and is selected by environment variables alone, with no change in the core."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faasflow.backends import Kind
from faasflow.plugins import Registry

SCRIPT = Path(sys.executable).with_name("faasflow")
EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "faasflow-example"


@pytest.fixture(autouse=True)
def example_installed():
    if importlib.util.find_spec("faasflow_example") is None:
        # it is kept out of .venv so that `faasflow plugins` there lists real backends only
        pytest.skip(
            "the example plugin has its own environment: scripts/test runs this file with "
            f".venv-example/bin/python (or `pip install {EXAMPLE}` here)"
        )


def faasflow(*args, env, cwd):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    environ.update(env)
    result = subprocess.run(
        [str(SCRIPT), *args], env=environ, cwd=cwd, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_example_backends_are_listed_with_their_distribution(tmp_path):
    data = json.loads(faasflow("plugins", "--json", env={}, cwd=tmp_path))
    found = {(b["kind"], b["name"]): b for b in data["backends"]}
    for key in [("state_store", "jsonfile"), ("tracer", "jsonl")]:
        assert found[key]["distribution"] == "faasflow-example"
        assert found[key]["plugin"] == "example"
    assert found[("state_store", "jsonfile")]["options"]["path"]["variable"] == (
        "FAASFLOW_JSONFILE_PATH"
    )


def test_example_backends_are_selected_by_env_vars(faasflow_env, tmp_path):
    faasflow_env.set("FAASFLOW_STATE_STORE", "jsonfile")
    faasflow_env.set("FAASFLOW_JSONFILE_PATH", str(tmp_path))
    settings = faasflow_env.settings()
    store = Registry.from_settings(settings).create(Kind.STATE_STORE, settings)
    assert type(store).__module__ == "faasflow_example.jsonfile"
    assert store.root == tmp_path


def test_a_flow_runs_on_the_example_backends(tmp_path):
    (tmp_path / "shout.py").write_text(
        "def define(flow, context):\n"
        "    dag = flow.dag()\n"
        "    dag.node('upper').modify(lambda d: d.upper())\n"
        "    dag.node('bang').modify(lambda d: d + b'!')\n"
        "    dag.edge('upper', 'bang')\n"
    )
    env = {
        "FAASFLOW_STATE_STORE": "jsonfile",
        "FAASFLOW_JSONFILE_PATH": str(tmp_path / "state"),
        "FAASFLOW_TRACER": "jsonl",
        "FAASFLOW_JSONL_PATH": str(tmp_path / "trace.jsonl"),
    }
    out = faasflow("run", "shout.py", "-d", "hi", "--progress", "never", env=env, cwd=tmp_path)
    assert out.strip() == "HI!"
    events = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert {"node_start", "node_end"} <= {e["event"] for e in events}
    ended = [e["node"] for e in events if e["event"] == "node_end"]  # execution ids
    assert any(n.endswith("upper") for n in ended)
    assert any(n.endswith("bang") for n in ended)
    assert list((tmp_path / "state").rglob(".lock")), "the jsonfile store was not used"
