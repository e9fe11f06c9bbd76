"""`faasflow plugins`, run as the real console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faasflow

DATA = Path(__file__).parent / "data"
SCRIPT = Path(sys.executable).with_name("faasflow")


def run(*args: str, env: dict[str, str] | None = None, path: str | None = None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    environ.update(env or {})
    if path:
        environ["PYTHONPATH"] = path
    result = subprocess.run(
        [str(SCRIPT), "plugins", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def as_json(**kwargs):
    return json.loads(run("--json", **kwargs).stdout)


def test_the_console_script_is_installed():
    assert SCRIPT.exists(), f"{SCRIPT} missing: pip install -e . into this interpreter"


def test_lists_every_builtin_backend_with_distribution_and_version():
    data = as_json()
    builtin = {
        (b["kind"], b["name"]): b
        for b in data["backends"]
        if b["distribution"] == "faasflow (built-in)"
    }
    assert set(builtin) == {
        ("state_store", "memory"), ("state_store", "sqlite"),
        ("data_store", "memory"), ("data_store", "sqlite"), ("data_store", "filesystem"),
        ("tracer", "none"), ("tracer", "log"),
        ("invoker", "local"), ("invoker", "openfaas"), ("invoker", "http"),
    }
    assert {b["version"] for b in builtin.values()} == {faasflow.__version__}


def test_json_marks_the_selected_backends():
    data = as_json(env={"FAASFLOW_STATE_STORE": "sqlite"})
    assert data["selected"]["state_store"] == "sqlite"
    selected = {(b["kind"], b["name"]) for b in data["backends"] if b["selected"]}
    assert ("state_store", "sqlite") in selected
    assert ("data_store", "memory") in selected
    assert ("state_store", "memory") not in selected


def test_json_lists_option_variables_and_their_aliases():
    data = as_json()
    openfaas = next(b for b in data["backends"] if b["name"] == "openfaas")
    gateway = openfaas["options"]["gateway_url"]
    assert gateway["variable"] == "FAASFLOW_OPENFAAS_GATEWAY_URL"
    assert gateway["also"] == ["FAASFLOW_GATEWAY_URL", "gateway"]


def test_text_output_groups_backends_by_kind():
    out = run().stdout
    assert "state store (FAASFLOW_STATE_STORE=memory)" in out
    assert "invoker (FAASFLOW_INVOKER=local)" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("* memory"))
    assert f"faasflow (built-in) {faasflow.__version__}" in line


def test_text_output_flags_a_selected_backend_that_is_not_installed():
    out = run(env={"FAASFLOW_TRACER": "jaeger"}).stdout
    assert "tracer (FAASFLOW_TRACER=jaeger - NOT INSTALLED)" in out


def test_verbose_lists_option_variables():
    out = run("-v").stdout
    assert "FAASFLOW_SQLITE_PATH:" in out
    assert "FAASFLOW_OPENFAAS_GATEWAY_URL (also FAASFLOW_GATEWAY_URL, gateway):" in out


def test_a_third_party_plugin_appears_with_its_distribution():
    data = as_json(path=str(DATA / "fake-site"))
    fake = [b for b in data["backends"] if b["name"] == "fake"]
    assert {(b["kind"], b["distribution"], b["version"]) for b in fake} == {
        ("state_store", "faasflow-fake", "1.0"), ("tracer", "faasflow-fake", "1.0"),
    }


def test_load_plugins_empty_hides_third_party_plugins():
    data = as_json(path=str(DATA / "fake-site"), env={"FAASFLOW_LOAD_PLUGINS": ""})
    assert {b["distribution"] for b in data["backends"]} == {"faasflow (built-in)"}


def test_broken_plugins_are_listed_not_fatal():
    result = run(path=str(DATA / "broken-site"))
    assert "plugins that failed to load (skipped):" in result.stdout
    assert "broken (faasflow-broken): ImportError" in result.stdout
    data = as_json(path=str(DATA / "broken-site"))
    assert {b["name"] for b in data["broken"]} == {"broken", "typo"}


def test_trace_plugins_prints_hook_calls_to_stderr():
    result = run(env={"FAASFLOW_TRACE_PLUGINS": "1", "FAASFLOW_LOAD_PLUGINS": ""})
    assert "hook faasflow_state_stores() called on 'faasflow.default_plugins.memory'" in (
        result.stderr
    )
