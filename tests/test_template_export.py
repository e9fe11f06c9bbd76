"""`faasflow template export DIR` writes a build context that installs with no package index:
its requirements install into a fresh virtualenv from its wheels alone, and the flow it serves
runs a DAG behind the watchdog stand-in."""

from __future__ import annotations

import os
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest
import requests
from template_harness import DAG

from faasflow.cli import main
from faasflow.testing.queueworker import QueueWorker
from faasflow.testing.watchdog import Watchdog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gunicorn", reason="the template's server is exported; pip install it")
    context = tmp_path_factory.mktemp("export") / "faasflow"
    assert main(["template", "export", str(context)]) == 0
    return context


@pytest.fixture(scope="module")
def fresh(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the context's requirements, installed from its wheels alone."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--isolated", "--no-index", "--find-links",
         str(exported / "wheels"), "-r", str(exported / "requirements.txt")],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_export_writes_the_template_with_wheels(exported: Path) -> None:
    for name in ("template.yml", "Dockerfile", "index.py", "function/handler.py"):
        assert (exported / name).is_file(), name
    names = {p.name.split("-")[0].lower() for p in (exported / "wheels").glob("*.whl")}
    assert {"faasflow", "gunicorn", "pluggy", "attrs"} <= names


def test_exported_requirements_pin_the_exported_faasflow(exported: Path) -> None:
    lines = (exported / "requirements.txt").read_text().split()
    wheel = next((exported / "wheels").glob("faasflow-*.whl"))
    assert f"faasflow=={wheel.name.split('-')[1]}" in lines
    assert any(line.startswith("gunicorn") for line in lines)


def test_exported_context_installs_from_its_wheels_alone(fresh: Path) -> None:
    # run outside the checkout, so the import can only come from the fresh virtualenv
    done = subprocess.run([str(fresh), "-c", "import faasflow, gunicorn; print(faasflow.__file__)"],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=fresh.parent, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert str(fresh.parent.parent) in done.stdout


def test_the_exported_context_serves_a_dag_from_the_fresh_install(
    exported: Path, fresh: Path
) -> None:
    (exported / "function" / "handler.py").write_text(textwrap.dedent(DAG).lstrip())
    env = {"PATH": f"{fresh.parent}:/usr/bin:/bin", "HOME": "/tmp"}
    with QueueWorker() as queue:
        env.update(FAASFLOW_GATEWAY_URL=queue.url, FAASFLOW_HMAC_SECRET="k")
        with Watchdog(["python", "index.py"], cwd=exported, env=env) as dog:
            queue.functions["tplflow"] = dog.url
            reply = requests.post(f"{queue.url}/function/tplflow", data=b"2,3", timeout=90,
                                  headers={"X-Faas-Flow-Wait": "60"})
    assert (reply.status_code, reply.text) == (200, "result=4,9|2")


def test_export_exports_a_named_plugin(tmp_path: Path) -> None:
    pytest.importorskip("faasflow_opentracing")
    context = tmp_path / "ctx"
    assert main(["template", "export", str(context), "--plugin", "faasflow-opentracing"]) == 0
    assert list((context / "wheels").glob("faasflow_opentracing-*.whl"))
    assert any(line.startswith("faasflow-opentracing==")
               for line in (context / "requirements.txt").read_text().split())


def test_export_refuses_a_non_empty_directory(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["template", "export", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_export_names_a_required_package_that_is_not_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["template", "export", str(tmp_path / "ctx"), "--plugin",
                 "faasflow-no-such-plugin"]) == 2
    assert "faasflow-no-such-plugin is required but not installed" in capsys.readouterr().err
