"""Exports: faas-flow's export-dag JSON (extended), the definition hash, DOT and Mermaid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

import faasflow
from faasflow.export import FORMAT, export_definition, invalid_export


def concat(inputs: dict[str, bytes]) -> bytes:
    return b"".join(inputs.values())


def append(suffix: bytes):
    def modifier(data: bytes) -> bytes:
        return data + suffix

    return modifier


def fan_in(flow, context):
    """faas-flow scenario 8: n1 -> {n2, n3} -> n4 with an aggregator."""
    dag = flow.dag()
    dag.node("n1").modify(append(b"m1"))
    dag.node("n2").apply("func1")
    dag.node("n3").apply("func2", on_failure=print).modify(append(b"m2"))
    dag.node("n4", aggregator=concat).apply("sink")
    dag.edge("n1", "n2")
    dag.edge("n1", "n3")
    dag.edge("n2", "n4")
    dag.edge("n3", "n4")


def nested(flow, context):
    """faas-flow scenario 18: a foreach inside a conditional branch."""
    dag = flow.dag()
    dag.node("n1").modify(append(b"modifier1"))
    branches = dag.conditional_branch("C", ["c1", "c2"], lambda d: ["c1", "c2"], aggregator=concat)
    foreach = branches["c1"].foreach_branch(
        "F", lambda d: {"f1": d, "f2": d}, aggregator=concat
    )
    foreach.node("n1").modify(append(b"modifier3"))
    branches["c2"].node("n1").apply("func1").modify(append(b"modifier2"))
    dag.node("n2").apply("sink")
    dag.edge("n1", "C")
    dag.edge("C", "n2")


def two_ends(flow, context):
    """faas-flow scenario 31: n1 -> n2, n1 -> n3."""
    dag = flow.dag()
    dag.node("n1").modify(append(b"1"))
    dag.edge("n1", "n2")
    dag.edge("n1", "n3")


SUB = faasflow.Dag()
SUB.node("a").modify(append(b"a"))
SUB.node("b").modify(append(b"b"))
SUB.edge("a", "b")


def static_sub_dag(flow, context):
    """faas-flow scenario 19: n1 -> S(a -> b) -> n2."""
    dag = flow.dag()
    dag.node("n1").modify(append(b"1"))
    dag.sub_dag("S", SUB)
    dag.node("n2").apply("sink")
    dag.edge("n1", "S")
    dag.edge("S", "n2")


def everything(flow, context):
    """Every construct at once, for the round trip and the diagrams."""
    inner = faasflow.Dag()
    inner.node("x").request("http://127.0.0.1:9/a\"quoted\\path", headers={"X-Secret": "s3"})
    dag = flow.dag()
    dag.node("start").apply("func1", retry=faasflow.Retry(attempts=2), timeout=5)
    dag.edge("start", "bare")
    dag.sub_dag("S", inner)
    dag.edge("bare", "S", forwarder=bytes.upper)
    branches = dag.conditional_branch("C", ["yes", "no"], lambda d: ["yes"], aggregator=concat)
    branches["yes"].sub_dag("S2", inner)
    fe = branches["no"].foreach_branch("F", lambda d: {"k": d}, execution_only=True)
    fe.edge("p", "q")
    fe.edge("p", "r")
    dag.edge("S", "C", execution_only=True)
    dag.edge("C", "tail1")
    dag.edge("C", "tail2")
    flow.on_failure(print)
    flow.finally_(print)


# --- JSON -----------------------------------------------------------------------------------


def test_export_of_fan_in_flow_has_faas_flow_fields():
    doc = faasflow.Flow(fan_in, name="testflow").export()
    assert (doc["id"], doc["start-node"], doc["end-node"]) == ("0", "n1", "n4")
    assert (doc["has-branch"], doc["has-edge"], doc["exec-only-dag"]) == (True, True, False)
    assert doc["is-valid"] is True
    assert "validation-error" not in doc
    n1, n4 = doc["nodes"]["n1"], doc["nodes"]["n4"]
    assert n4["has-aggregator"] is True
    assert n1["childrens"] == ["n2", "n3"]
    assert n1["child-exec-only"] == {"n2": False, "n3": False}
    assert n4["child-exec-only"] == {}
    assert (n1["node-index"], n1["unique-id"], n4["unique-id"]) == (1, "0_1_n1", "0_4_n4")
    assert n1["operations"] == [
        {
            "name": "modifier",
            "properties": {
                "isMod": ["true"],
                "isFunction": ["false"],
                "isHttpRequest": ["false"],
                "hasFailureHandler": ["false"],
                "hasResponseHandler": ["false"],
            },
            "kind": "modifier",
            "modifier": f"{__name__}.append.<locals>.modifier",
        }
    ]
    n3_apply = doc["nodes"]["n3"]["operations"][0]
    assert n3_apply["name"] == "func2"
    assert n3_apply["properties"]["isFunction"] == ["true"]
    assert n3_apply["properties"]["hasFailureHandler"] == ["true"]


def test_export_fills_in_and_out_degree():
    nodes = faasflow.Flow(fan_in).export()["nodes"]
    degrees = {k: (v["in-degree"], v["out-degree"]) for k, v in nodes.items()}
    assert degrees == {"n1": (0, 2), "n2": (1, 1), "n3": (1, 1), "n4": (2, 0)}


def test_export_lists_edges_with_kinds_and_forwarders():
    doc = faasflow.Flow(everything).export()
    edges = {(e["from"], e["to"]): e for e in doc["edges"]}
    assert edges[("bare", "S")]["forwarder"] == "builtins.bytes.upper"
    assert edges[("bare", "S")]["execution-only"] is False
    assert edges[("S", "C")]["execution-only"] is True
    assert edges[("tail1", "end_0")]["execution-only"] is True


def test_export_of_multiple_end_nodes_has_the_virtual_end_node():
    doc = faasflow.Flow(two_ends).export()
    end = doc["nodes"]["end_0"]
    assert doc["end-node"] == "end_0"
    assert end["unique-id"] == "0_4_end_0"
    assert end["kind"] == "end"
    assert end["operations"] == [{"name": "end", "properties": {}, "kind": "end"}]
    assert doc["nodes"]["n2"]["child-exec-only"] == {"end_0": True}
    assert doc["nodes"]["n3"]["child-exec-only"] == {"end_0": True}


def test_export_of_nested_branches():
    doc = faasflow.Flow(nested).export()
    c = doc["nodes"]["C"]
    assert (c["is-condition"], c["is-dynamic"], c["has-sub-aggregator"]) == (True, True, True)
    assert c["conditions"] == ["c1", "c2"]
    c1 = c["conditional-dags"]["c1"]
    assert (c1["id"], c1["owner"], c1["branch"]) == ("2_c1", "0_2_C", "c1")
    f = c1["nodes"]["F"]
    assert (f["is-foreach"], f["unique-id"]) == (True, "2_c1_1_F")
    assert f["foreach-dag"]["nodes"]["n1"]["unique-id"] == "2_c1_1_1_n1"
    assert c["conditional-dags"]["c2"]["nodes"]["n1"]["unique-id"] == "2_c2_1_n1"


def test_export_of_static_sub_dag():
    s = faasflow.Flow(static_sub_dag).export()["nodes"]["S"]
    assert s["has-subdag"] is True
    assert s["sub-dag"]["id"] == "2"
    assert [n["unique-id"] for n in s["sub-dag"]["nodes"].values()] == ["2_1_a", "2_2_b"]
    assert s["is-dynamic"] is False


def test_exec_only_dag_is_true_only_without_data_movement():
    sync = faasflow.Flow(lambda flow, context: flow.sync_node().modify(bytes.upper)).export()
    assert sync["exec-only-dag"] is True
    assert sync["has-edge"] is False

    def execution_only(flow, context):
        flow.dag().edge("a", "b", execution_only=True)

    assert faasflow.Flow(execution_only).export()["exec-only-dag"] is True
    assert faasflow.Flow(two_ends).export()["exec-only-dag"] is False


def test_export_round_trips_through_json():
    doc = faasflow.Flow(everything, name="all").export()
    assert json.loads(json.dumps(doc)) == doc
    assert (doc["name"], doc["format"]) == ("all", FORMAT)
    assert doc["definition-hash"] == faasflow.Flow(everything, name="all").definition_hash


def test_export_describes_operation_options_without_header_values():
    doc = faasflow.Flow(everything).export()
    start = doc["nodes"]["start"]["operations"][0]
    assert start["timeout"] == 5
    assert start["retry"]["attempts"] == 2
    assert start["retry"]["retry-on"] == ["429", "500-599"]
    request = doc["nodes"]["S"]["sub-dag"]["nodes"]["x"]["operations"][0]
    assert request["kind"] == "http-request"
    assert request["headers"] == ["X-Secret"]
    assert "s3" not in json.dumps(doc)


def test_export_names_workflow_hooks():
    doc = faasflow.Flow(everything).export()
    assert doc["on-failure"] == "builtins.print"
    assert doc["has-finally-handler"] is True


def test_export_of_nodes_without_operations_has_an_empty_list():
    node = faasflow.Flow(everything).export()["nodes"]["bare"]
    assert node["operations"] == []
    assert node["kind"] == "operations"


def test_export_of_custom_operation_names_its_class():
    class Upper(faasflow.Operation):
        @property
        def id(self):
            return "upper"

        def properties(self):
            return {"custom": ["yes"]}

        def execute(self, data, call):
            return data.upper()

    doc = faasflow.Flow(lambda flow, context: flow.sync_node().add_operation(Upper())).export()
    (op,) = doc["nodes"]["sync"]["operations"]
    assert (op["name"], op["properties"], op["kind"]) == ("upper", {"custom": ["yes"]}, "custom")
    assert op["class"].endswith("Upper")


def test_invalid_definition_exports_is_valid_false_with_the_reason():
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.node("n2")

    doc = export_definition(define, "testflow")
    assert doc["is-valid"] is False
    assert "only one start vertex is allowed" in doc["validation-error"]
    assert "dag 0" in doc["validation-error"]
    assert json.loads(json.dumps(doc)) == doc


def test_failing_define_exports_is_valid_false():
    def define(flow, context):
        raise RuntimeError("no config")

    doc = export_definition(define, "f")
    assert doc["is-valid"] is False
    assert doc["validation-error"] == "Failed to define flow f: no config"


def test_export_definition_of_a_valid_flow_equals_flow_export():
    assert export_definition(fan_in, "x") == faasflow.Flow(fan_in, name="x").export()


def test_invalid_export_keeps_the_root_fields():
    doc = invalid_export("f", "boom")
    assert set(doc) >= {"id", "start-node", "end-node", "nodes", "is-valid", "validation-error"}


# --- definition hash ------------------------------------------------------------------------


def test_definition_hash_is_equal_for_the_same_definition():
    assert faasflow.Flow(nested).definition_hash == faasflow.Flow(nested).definition_hash


@pytest.mark.parametrize(
    "change",
    [
        lambda dag: dag.node("n2").apply("func1"),
        lambda dag: dag.node("n2").modify(bytes.upper),
        lambda dag: dag.edge("n2", "n3"),
        lambda dag: dag.edge("n2", "n3", execution_only=True),
        lambda dag: dag.edge("n2", "n3", forwarder=bytes.upper),
    ],
)
def test_definition_hash_changes_with_the_definition(change):
    def base(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")

    def changed(flow, context):
        base(flow, context)
        change(flow.dag())

    assert faasflow.Flow(base).definition_hash != faasflow.Flow(changed).definition_hash


def test_definition_hash_depends_on_the_callables_names():
    def with_upper(flow, context):
        flow.sync_node().modify(bytes.upper)

    def with_lower(flow, context):
        flow.sync_node().modify(bytes.lower)

    assert faasflow.Flow(with_upper).definition_hash != faasflow.Flow(with_lower).definition_hash


def test_definition_hash_is_stable_across_processes(tmp_path, monkeypatch):
    module = tmp_path / "hashflow.py"
    module.write_text(
        textwrap.dedent(
            """
            def define(flow, context):
                dag = flow.dag()
                dag.node("a").modify(lambda d: d + b"a")
                dag.foreach_branch("F", lambda d: {"k": d}, aggregator=dict.__len__).node("x")
                dag.edge("a", "F")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import hashflow

    here = faasflow.Flow(hashflow.define, name="h").definition_hash
    script = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import faasflow, hashflow; "
        "print(faasflow.Flow(hashflow.define, name='h').definition_hash)"
    )
    for seed in ("1", "2"):  # a different hash seed changes set and dict hashing, not ours
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        assert out.stdout.strip() == here


# --- diagrams -------------------------------------------------------------------------------


def render(dot_source: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed (apt-get install graphviz)")
    return subprocess.run(
        ["dot", "-Tsvg"], input=dot_source.encode(), capture_output=True, timeout=60, check=False
    )


@pytest.mark.parametrize("define", [fan_in, nested, two_ends, static_sub_dag, everything])
def test_dot_renders_with_graphviz_without_errors(define):
    result = render(faasflow.Flow(define).to_dot())
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert b"<svg" in result.stdout


def test_dot_draws_nodes_without_operations_and_the_virtual_end_node():
    dot = faasflow.Flow(two_ends).to_dot()
    assert '"0_2_n2" [label="(no operations)"' in dot
    assert '"0_4_end_0" [label="end"' in dot
    assert '"0_2_n2" -> "0_4_end_0" [style=dotted]' in dot


def test_dot_draws_execution_only_edges_dotted_and_data_edges_solid():
    dot = faasflow.Flow(everything).to_dot()
    assert "style=dotted" in dot
    assert 'style=solid label="upper"' in dot  # the forwarder's name on its edge


def test_dot_escapes_quotes_and_backslashes_in_labels():
    dot = faasflow.Flow(everything).to_dot()
    assert 'a\\"quoted\\\\path' in dot


def test_dot_draws_every_operation_and_branch():
    dot = faasflow.Flow(nested).to_dot()
    for expected in (
        '"0_1_n1.1"',
        '"0_2_C.decision"',
        '"0_2_C.join"',
        '"2_c1_1_F.decision"',
        '"2_c1_1_1_n1.1"',
        '"2_c2_1_n1.2"',
        'label="c2"',
        'subgraph "cluster_2_c1"',
    ):
        assert expected in dot


def test_mermaid_has_one_vertex_per_operation_and_balanced_subgraphs():
    text = faasflow.Flow(nested).to_mermaid()
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "flowchart TD"
    assert sum(line.startswith("subgraph ") for line in lines) == sum(
        line == "end" for line in lines
    )
    assert sum('"modifier' in line for line in lines) == 3
    assert '"func1"' in text
    assert '|"c1"|' in text


def test_mermaid_draws_execution_only_edges_dotted():
    text = faasflow.Flow(two_ends).to_mermaid()
    assert text.count("-.->") == 2
    assert '[["end"]]' in text
