"""``faasflow graph TARGET``: a handler directory, a file or a module, printed as JSON, DOT or
Mermaid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from faasflow.cli import main

FLOW = textwrap.dedent(
    """
    from . import helper

    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(helper.shout)
        dag.edge("a", "b")
        dag.edge("a", "c")
    """
)


@pytest.fixture
def handler_dir(tmp_path):
    directory = tmp_path / "graph-demo"
    directory.mkdir()
    (directory / "handler.py").write_text(FLOW)
    (directory / "helper.py").write_text("def shout(data):\n    return data.upper()\n")
    return directory


@pytest.fixture
def flow_file(tmp_path):
    path = tmp_path / "plainflow.py"
    path.write_text(
        "def define(flow, context):\n    flow.sync_node().apply('func1')\n"
    )
    return path


def test_handler_directory_prints_json_export_named_after_the_directory(handler_dir, capsys):
    assert main(["graph", str(handler_dir)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "graph-demo"
    assert doc["is-valid"] is True
    assert list(doc["nodes"]) == ["a", "b", "c", "end_0"]


def test_file_prints_json_and_name_can_be_set(flow_file, capsys):
    assert main(["graph", str(flow_file), "--name", "custom"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "custom"
    assert doc["nodes"]["sync"]["operations"][0]["name"] == "func1"


def test_module_name_is_imported(tmp_path, monkeypatch, capsys):
    (tmp_path / "modflow.py").write_text(
        "def define(flow, context):\n    flow.sync_node().apply('f')\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["graph", "modflow", "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD")
    assert '"f"' in out


def test_dot_format_renders_with_graphviz(handler_dir, capsys):
    assert main(["graph", str(handler_dir), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed (apt-get install graphviz)")
    result = subprocess.run(
        ["dot", "-Tsvg"], input=dot.encode(), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()


def test_invalid_definition_prints_is_valid_false_and_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text(
        "def define(flow, context):\n"
        "    flow.dag().node('a')\n"
        "    flow.dag().node('b')\n"
    )
    assert main(["graph", str(path)]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["is-valid"] is False
    assert "only one start vertex" in doc["validation-error"]
    assert "faasflow: error: Invalid dag in flow broken" in captured.err


def test_invalid_definition_in_dot_format_prints_only_the_error(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("def define(flow, context):\n    raise ValueError('bad')\n")
    assert main(["graph", str(path), "--format", "dot"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Failed to define flow broken: bad" in captured.err


def test_fan_in_warning_is_printed_on_stderr(tmp_path, capsys):
    path = tmp_path / "fanin.py"
    path.write_text(
        "def define(flow, context):\n"
        "    dag = flow.dag()\n"
        "    for a, b in [('s', 'x'), ('s', 'y'), ('x', 'j'), ('y', 'j')]:\n"
        "        dag.edge(a, b)\n"
    )
    assert main(["graph", str(path)]) == 0
    assert "faasflow: warning: node 'j'" in capsys.readouterr().err


def test_missing_target_exits_3(tmp_path, capsys):
    assert main(["graph", str(tmp_path / "nope.py")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_directory_without_handler_exits_3(tmp_path, capsys):
    assert main(["graph", str(tmp_path)]) == 3
    assert "holds no handler.py" in capsys.readouterr().err


def test_unknown_module_exits_3(capsys):
    assert main(["graph", "no_such_module_for_faasflow"]) == 3
    assert "not a function, a directory, a file or an importable module" in capsys.readouterr().err


def test_file_without_define_exits_2(tmp_path, capsys):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    assert main(["graph", str(path)]) == 2
    assert "defines no define(flow, context)" in capsys.readouterr().err


def test_file_that_fails_to_import_exits_2(tmp_path, capsys):
    path = tmp_path / "boom.py"
    path.write_text("raise RuntimeError('import time failure')\n")
    assert main(["graph", str(path)]) == 2
    assert "RuntimeError: import time failure" in capsys.readouterr().err


def test_command_runs_as_a_process(handler_dir):
    result = subprocess.run(
        [sys.executable, "-m", "faasflow", "graph", str(handler_dir), "--format", "mermaid"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flowchart TD")


TYPO = textwrap.dedent(
    """
    def define(flow, context):
        dag = flow.dag()
        dag.node("fetch").modify(lambda data: data)
        dag.node("render").modify(lambda data: data.upper())
        dag.edge("fetch", "rendr")
    """
)


@pytest.mark.parametrize("command", ["graph", "run"])
def test_a_misspelt_edge_target_is_named_with_the_node_meant(tmp_path, command):
    (tmp_path / "typo.py").write_text(TYPO)
    result = subprocess.run(
        [sys.executable, "-m", "faasflow", command, "typo.py"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert ("edge('fetch', 'rendr') created node 'rendr', which no node() declares: did you "
            "mean 'render'?") in result.stderr


def test_a_misspelt_edge_source_is_named_with_the_node_meant(tmp_path, capsys):
    path = tmp_path / "typo.py"
    path.write_text(
        "def define(flow, context):\n"
        "    dag = flow.dag()\n"
        "    dag.node('fetch').modify(lambda d: d)\n"
        "    dag.node('render').modify(lambda d: d)\n"
        "    dag.node('publish').modify(lambda d: d)\n"
        "    dag.edge('fetch', 'render')\n"
        "    dag.edge('rendr', 'publish')\n"
    )
    assert main(["graph", str(path), "--format", "dot"]) == 2
    assert "did you mean 'render'?" in capsys.readouterr().err


def test_nodes_edge_creates_on_purpose_get_no_suggestion(tmp_path, capsys):
    path = tmp_path / "two.py"
    path.write_text(
        "def define(flow, context):\n"
        "    dag = flow.dag()\n"
        "    dag.edge('a', 'b')\n"
        "    dag.edge('c', 'b')\n"
    )
    assert main(["graph", str(path), "--format", "dot"]) == 2
    err = capsys.readouterr().err
    assert "has 2 start nodes (a, c)" in err
    assert "did you mean" not in err
