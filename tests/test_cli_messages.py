"""What a newcomer reads: tracer output, the unknown-backend hint, the scaffold of `faasflow new`
(every command run as a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FLOW = "def define(flow, context):\n    flow.sync_node().modify(lambda data: data + b'.')\n"


def faasflow(*args: str, cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "faasflow", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_log_tracer_prints_events_without_a_log_level_set(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOW)
    result = faasflow("run", "flows.py", "-d", "x", cwd=tmp_path,
                      env={"FAASFLOW_TRACER": "log"})
    assert (result.returncode, result.stdout) == (0, "x."), result.stderr
    events = [line for line in result.stderr.splitlines() if "faasflow.trace" in line]
    assert any("event=request_start" in line for line in events)
    assert any("event=request_end" in line and "duration_ms=" in line for line in events)


def test_the_log_tracer_prints_each_event_once_under_an_applications_logging(
    tmp_path: Path,
) -> None:
    (tmp_path / "flows.py").write_text(FLOW)
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stderr)\n"
        "from faasflow.cli import main\n"
        "sys.exit(main(['run', 'flows.py', '-d', 'x']))\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                            env={**environ, "FAASFLOW_TRACER": "log"}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("event=request_start") == 1


def test_the_log_tracers_level_option_chooses_what_prints(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOW)
    result = faasflow("run", "flows.py", "-d", "x", cwd=tmp_path,
                      env={"FAASFLOW_TRACER": "log", "FAASFLOW_LOG_LEVEL": "DEBUG"})
    assert "event=request_start" in result.stderr


def test_an_unknown_backend_says_how_to_install_from_the_repository(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOW)
    result = faasflow("run", "flows.py", cwd=tmp_path,
                      env={"FAASFLOW_STATE_STORE": "redis"})
    assert result.returncode == 2
    assert "pip install <repo>/plugins/faasflow_redis" in result.stderr
    assert "pip install faasflow-redis once it is published" in result.stderr


def test_new_in_an_empty_directory_keeps_the_data_directory_out_of_git(tmp_path: Path) -> None:
    result = faasflow("new", "greet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ".faasflow/" in (tmp_path / ".gitignore").read_text().splitlines()
    assert f"created {Path('.gitignore')}" in result.stdout


def test_new_adds_the_data_directory_to_an_existing_gitignore_once(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.pyc")
    assert faasflow("new", "one", cwd=tmp_path).returncode == 0
    assert faasflow("new", "two", cwd=tmp_path).returncode == 0
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[0] == "*.pyc"
    assert lines.count(".faasflow/") == 1


def test_new_names_the_template_pull_step(tmp_path: Path) -> None:
    result = faasflow("new", "greet", cwd=tmp_path)
    step = "faas-cli template pull <faasflow repository URL>"
    assert step in result.stdout
    assert step in (tmp_path / "stack.yml").read_text()
    assert step in (tmp_path / "greet" / "handler.py").read_text()
    run = faasflow("run", "greet", "-d", " hi ", cwd=tmp_path)  # the scaffold still runs
    assert (run.returncode, run.stdout) == (0, "HI")


def test_an_invalid_definition_is_reported_once_not_per_worker_or_request(
    tmp_path: Path,
) -> None:
    from faasflow.runtime.process import GatewayProcess

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "handler.py").write_text(
        "def define(flow, context):\n    dag = flow.dag()\n    dag.node('a')\n"
        "    dag.edge('b', 'c')\n")
    (tmp_path / "stack.yml").write_text("functions:\n  bad: {lang: faasflow, handler: ./bad}\n")
    with GatewayProcess(tmp_path / "stack.yml", data_dir=tmp_path / "data",
                        processes=2) as gateway:
        for _ in range(3):
            assert gateway.post("/function/bad", data=b"x").status_code == 500
        assert gateway.get("/healthz").status_code == 200
        # the start-up check's "flow bad: PROBLEM" line, and nothing from the two workers
        assert gateway.text.count("Invalid dag in flow bad") == 1, gateway.text


def test_up_with_a_handler_missing_its_requirements_says_to_pip_install_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "needs").mkdir()
    (tmp_path / "needs" / "handler.py").write_text("import faasflow_absent_dependency\n")
    (tmp_path / "needs" / "requirements.txt").write_text("faasflow_absent_dependency>=1\n")
    (tmp_path / "stack.yml").write_text(
        "functions:\n  needs: {lang: faasflow, handler: ./needs}\n")
    result = faasflow("up", "--port", "0", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 2
    assert "faasflow_absent_dependency is listed in" in result.stderr
    assert f"pip install -r {tmp_path / 'needs' / 'requirements.txt'}" in result.stderr
