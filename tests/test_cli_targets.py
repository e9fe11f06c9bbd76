"""One target syntax for `faasflow run` and `faasflow graph`, driven as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DEFINE = """
    def define(flow, context):
        flow.sync_node().modify(lambda data: data + b"!")


    def other(flow, context):
        flow.sync_node().modify(lambda data: data[::-1])
"""

# every form, with the output `run -d ab` prints and the name `graph` gives the flow
FORMS = [
    ("shouter", b"ab!", "shouter"),                       # a function of stack.yml
    ("./handlers/shouter", b"ab!", "shouter"),            # a handler directory
    ("handlers/shouter/handler.py", b"ab!", "shouter"),   # its handler.py
    ("flows/defs.py", b"ab!", "defs"),                    # a .py file
    ("flows/defs.py:other", b"ba", "defs"),               # a .py file and a function
    ("mypackage.flows", b"ab!", "flows"),                 # a module
    ("mypackage.flows:define", b"ab!", "flows"),          # a module and a function
    ("mypackage.flows:other", b"ba", "flows"),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    source = textwrap.dedent(DEFINE).lstrip()
    for directory, name in [("handlers/shouter", "handler.py"), ("flows", "defs.py"),
                            ("mypackage", "flows.py")]:
        (tmp_path / directory).mkdir(parents=True)
        (tmp_path / directory / name).write_text(source)
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "stack.yml").write_text(
        "functions:\n  shouter: {lang: faasflow, handler: ./handlers/shouter}\n")
    return tmp_path


def faasflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "faasflow", *args], cwd=cwd,
                          capture_output=True, timeout=60, check=False)


def test_the_working_directory_is_not_on_the_test_path(project: Path) -> None:
    """The module forms below prove something only if nothing else puts the project on the
    path."""
    assert str(project) not in os.environ.get("PYTHONPATH", "").split(os.pathsep)


@pytest.mark.parametrize(("target", "output", "name"), FORMS, ids=[f[0] for f in FORMS])
def test_run_takes_every_target_form(project: Path, target: str, output: bytes,
                                     name: str) -> None:
    result = faasflow("run", target, "-d", "ab", cwd=project)
    assert (result.returncode, result.stdout) == (0, output), result.stderr.decode()


@pytest.mark.parametrize(("target", "output", "name"), FORMS, ids=[f[0] for f in FORMS])
def test_graph_takes_every_target_form(project: Path, target: str, output: bytes,
                                       name: str) -> None:
    result = faasflow("graph", target, cwd=project)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["name"] == name


def test_a_module_target_imports_siblings_lazily(project: Path) -> None:
    (project / "mypackage" / "late.py").write_text("SUFFIX = b'?'\n")
    (project / "mypackage" / "lazy.py").write_text(textwrap.dedent("""
        def define(flow, context):
            flow.sync_node().modify(add)

        def add(data):
            from mypackage.late import SUFFIX
            return data + SUFFIX
    """))
    result = faasflow("run", "mypackage.lazy", "-d", "x", cwd=project)
    assert (result.returncode, result.stdout) == (0, b"x?"), result.stderr.decode()


def test_a_target_naming_nothing_exits_3_listing_the_forms(project: Path) -> None:
    for command in ("run", "graph"):
        result = faasflow(command, "nothing.here", cwd=project)
        assert result.returncode == 3
        assert b"a stack function name, a handler directory" in result.stderr


def test_a_missing_function_of_a_module_exits_2(project: Path) -> None:
    result = faasflow("run", "mypackage.flows:absent", cwd=project)
    assert result.returncode == 2
    assert b"mypackage.flows defines no absent(flow, context)" in result.stderr


def test_a_missing_file_exits_3(project: Path) -> None:
    result = faasflow("graph", "flows/nope.py:define", cwd=project)
    assert result.returncode == 3
    assert b"does not exist" in result.stderr


def test_graph_takes_a_stack_function_of_another_stack_file(project: Path) -> None:
    other = project / "flows" / "other.yml"
    other.write_text("functions:\n  reverse: {lang: faasflow, handler: ../handlers/shouter}\n")
    result = faasflow("graph", "reverse", "-f", str(other), cwd=project)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["name"] == "reverse"


def test_a_handler_missing_an_installed_requirement_says_to_pip_install_it(
    project: Path,
) -> None:
    handler = project / "needs"
    handler.mkdir()
    (handler / "handler.py").write_text("import faasflow_no_such_package\n")
    (handler / "requirements.txt").write_text("# what the image installs\nfaasflow-no-such-package"
                                              "==1.0\n")
    for command in ("run", "graph"):
        result = faasflow(command, "./needs", cwd=project)
        assert result.returncode == 2
        err = result.stderr.decode()
        assert "faasflow-no-such-package is listed in" in err
        assert "use the current Python environment" in err
        assert f"pip install -r {handler / 'requirements.txt'}" in err
