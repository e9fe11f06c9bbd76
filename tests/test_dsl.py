"""The definition API compiles every construct into the graph the engine runs."""

from __future__ import annotations

import pytest

import faasflow
from faasflow.dsl import FanInWarning, Workflow
from faasflow.graph import NodeKind
from faasflow.operations import Apply, Modify, Request


def upper(data: bytes) -> bytes:
    return data.upper()


def concat(inputs: dict[str, bytes]) -> bytes:
    return b"".join(inputs.values())


def test_sync_node_is_one_node_named_sync_and_the_graph_is_sync():
    flow = faasflow.Flow(lambda flow, context: flow.sync_node().modify(upper).apply("func1"))
    graph = flow.graph()
    assert graph.is_sync
    node = graph.root.node("sync")
    assert node.unique_id == "0_1_sync"
    assert [type(op) for op in node.operations] == [Modify, Apply]


def test_sync_node_returns_the_same_node_so_operations_accumulate():
    def define(flow, context):
        flow.sync_node().apply("a")
        flow.sync_node().apply("b")

    ops = faasflow.Flow(define).graph().root.node("sync").operations
    assert [op.id for op in ops] == ["a", "b"]


def test_chain_of_nodes_gets_positional_unique_ids_start_and_end():
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").apply("func1")
        dag.node("n2").modify(upper)
        dag.node("n3").request("http://127.0.0.1:1/callback")
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")

    graph = faasflow.Flow(define).graph()
    assert [n.unique_id for n in graph.root.nodes.values()] == ["0_1_n1", "0_2_n2", "0_3_n3"]
    assert (graph.root.start, graph.root.end) == ("n1", "n3")
    assert graph.root.node("n2").parents == ("n1",)
    assert graph.root.node("n2").children == ("n3",)
    assert not graph.is_sync
    assert isinstance(graph.root.node("n3").operations[0], Request)


def test_edge_creates_missing_nodes_and_counts_them_in_the_index():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("a", "b")
        dag.node("c")
        dag.edge("b", "c")

    root = faasflow.Flow(define).graph().root
    assert [(n.id, n.index) for n in root.nodes.values()] == [("a", 1), ("b", 2), ("c", 3)]
    assert root.node("b").operations == ()


def test_fan_out_fan_in_with_aggregator_keeps_edge_declaration_order():
    def define(flow, context):
        dag = flow.dag()
        dag.node("n4", aggregator=concat)
        dag.edge("n1", "n3")
        dag.edge("n1", "n2")
        dag.edge("n3", "n4")
        dag.edge("n2", "n4")

    root = faasflow.Flow(define).graph().root
    n4 = root.node("n4")
    assert n4.aggregator is concat
    assert n4.parents == ("n3", "n2")
    assert root.node("n1").children == ("n3", "n2")
    assert n4.unique_id == "0_1_n4"


def test_forwarder_and_execution_only_edges_are_kept_on_the_edge():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2", forwarder=upper)
        dag.edge("n1", "n3", execution_only=True)
        dag.node("n4", aggregator=concat)
        dag.edge("n2", "n4")
        dag.edge("n3", "n4")

    root = faasflow.Flow(define).graph().root
    assert root.edge("n1", "n2").forwarder is upper
    assert not root.edge("n1", "n2").execution_only
    assert root.edge("n1", "n3").execution_only
    assert root.edge("n1", "n3").forwarder is None


def test_multiple_end_nodes_get_the_virtual_end_node_with_execution_only_edges():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")

    root = faasflow.Flow(define).graph().root
    end = root.node("end_0")
    assert root.end == "end_0"
    assert end.kind is NodeKind.END
    assert end.unique_id == "0_4_end_0"
    assert end.parents == ("n2", "n3")
    assert all(e.execution_only for e in root.in_edges("end_0"))
    assert root.node("n2").children == ("end_0",)


def test_static_sub_dag_ids_follow_the_owner_index():
    sub = faasflow.Dag()
    sub.edge("a", "b")

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.sub_dag("S", sub)
        dag.node("n2")
        dag.edge("n1", "S")
        dag.edge("S", "n2")

    graph = faasflow.Flow(define).graph()
    s = graph.root.node("S")
    assert s.kind is NodeKind.SUBDAG
    assert s.sub_dag is not None
    assert s.sub_dag.id == "2"
    assert s.sub_dag.owner == "0_2_S"
    assert [n.unique_id for n in s.sub_dag.nodes.values()] == ["2_1_a", "2_2_b"]
    assert graph.dag_of("2_2_b") is s.sub_dag
    assert graph.owner_of(s.sub_dag) is s


def test_nested_foreach_inside_conditional_inside_dag_gets_faas_flow_ids():
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(upper)
        branches = dag.conditional_branch(
            "C", ["c1", "c2"], lambda data: ["c1", "c2"], aggregator=concat
        )
        foreach = branches["c1"].foreach_branch(
            "F", lambda data: {"f1": data, "f2": data}, aggregator=concat
        )
        foreach.node("n1").modify(upper)
        branches["c2"].node("n1").apply("func1")
        dag.node("n2").apply("sink")
        dag.edge("n1", "C")
        dag.edge("C", "n2")

    graph = faasflow.Flow(define).graph()
    c = graph.root.node("C")
    assert c.kind is NodeKind.CONDITION
    assert list(c.conditional_dags) == ["c1", "c2"]
    c1 = c.branch_dag("c1")
    assert (c1.id, c1.owner, c1.branch) == ("2_c1", "0_2_C", "c1")
    f = c1.node("F")
    assert f.kind is NodeKind.FOREACH
    assert f.unique_id == "2_c1_1_F"
    assert f.foreach_dag is not None
    assert f.foreach_dag.id == "2_c1_1"
    assert f.branch_dag("any-key") is f.foreach_dag
    assert "2_c1_1_1_n1" in graph.nodes
    assert "2_c2_1_n1" in graph.nodes
    assert list(graph.dags) == ["0", "2_c1", "2_c1_1", "2_c2"]
    assert list(graph.nodes) == [
        "0_1_n1", "0_2_C", "2_c1_1_F", "2_c1_1_1_n1", "2_c2_1_n1", "0_3_n2"
    ]


def test_sub_dag_inside_a_branch_nests_its_id():
    sub = faasflow.Dag()
    sub.node("x").modify(upper)

    def define(flow, context):
        dag = flow.dag()
        branch = dag.foreach_branch("F", lambda data: {"a": data}, aggregator=concat)
        branch.node("before")
        branch.sub_dag("S", sub)
        branch.edge("before", "S")

    graph = faasflow.Flow(define).graph()
    assert "1_2_1_x" in graph.nodes
    assert graph.dags["1_2"].owner == "1_2_S"


def test_execution_only_dynamic_node_is_marked():
    def define(flow, context):
        dag = flow.dag()
        dag.foreach_branch("F", lambda data: {"a": data}, execution_only=True).node("x")

    f = faasflow.Flow(define).graph().root.node("F")
    assert f.dynamic_execution_only
    assert f.sub_aggregator is None


def test_append_merges_nodes_and_edges_in_order():
    part = faasflow.Dag()
    part.edge("b", "c")

    def define(flow, context):
        dag = flow.dag()
        dag.node("a")
        dag.append(part)
        dag.edge("a", "b")

    root = faasflow.Flow(define).graph().root
    assert [(n.id, n.index) for n in root.nodes.values()] == [("a", 1), ("b", 2), ("c", 3)]
    assert [(e.source, e.target) for e in root.edges] == [("b", "c"), ("a", "b")]


def test_set_dag_replaces_the_root_dag():
    replacement = faasflow.Dag()
    replacement.node("only").modify(upper)

    def define(flow, context):
        flow.dag().node("dropped")
        flow.set_dag(replacement)

    root = faasflow.Flow(define).graph().root
    assert list(root.nodes) == ["only"]
    assert root.id == "0"


def test_the_same_standalone_dag_can_be_used_twice():
    sub = faasflow.Dag()
    sub.node("x")

    def define(flow, context):
        dag = flow.dag()
        dag.sub_dag("S1", sub)
        dag.sub_dag("S2", sub)
        dag.edge("S1", "S2")

    graph = faasflow.Flow(define).graph()
    assert {"1_1_x", "2_1_x"} <= set(graph.nodes)


def test_workflow_hooks_are_on_the_graph():
    def on_failure(error):
        pass

    def final(state):
        pass

    def define(flow, context):
        flow.sync_node()
        flow.on_failure(on_failure)
        flow.finally_(final)

    graph = faasflow.Flow(define).graph()
    assert graph.on_failure is on_failure
    assert graph.finally_ is final


def test_hooks_can_be_registered_with_decorators():
    def define(flow, context):
        flow.sync_node()

        @flow.finally_
        def final(state):
            pass

    assert faasflow.Flow(define).graph().finally_ is not None


def test_fan_in_without_aggregator_warns_naming_node_edges_and_fixes():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")
        dag.edge("n2", "n4")
        dag.edge("n3", "n4")

    expected = r"node 'n4'.*n2 -> n4, n3 -> n4.*aggregator.*execution_only"
    with pytest.warns(FanInWarning, match=expected):
        faasflow.Flow(define)


def test_fan_in_of_execution_only_edges_does_not_warn():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")
        dag.edge("n2", "n4", execution_only=True)
        dag.edge("n3", "n4", execution_only=True)

    faasflow.Flow(define)  # filterwarnings=error turns any warning into a failure


def test_define_reading_nothing_request_specific_shares_one_graph():
    flow = faasflow.Flow(lambda flow, context: flow.sync_node().apply("f"))
    assert not flow.per_request
    assert flow.graph("a=1", "r1") is flow.graph("a=2", "r2") is flow.graph()


def test_define_reading_the_query_compiles_per_request():
    def define(flow, context):
        flow.sync_node().apply(context.query.get("fn", "default"))

    flow = faasflow.Flow(define)
    assert flow.per_request
    assert flow.graph().root.node("sync").operations[0].id == "default"
    graph = flow.graph("?fn=other", "r1")
    assert graph.root.node("sync").operations[0].id == "other"
    assert flow.graph("fn=other", "r1") is graph
    assert graph.definition_hash != flow.definition_hash


def test_define_reading_the_request_id_compiles_per_request():
    def define(flow, context):
        flow.sync_node().apply("f", headers={"X-Req": context.request_id or "none"})

    flow = faasflow.Flow(define)
    assert flow.per_request
    assert flow.graph(request_id="abc").root.node("sync").operations[0].headers == {
        "X-Req": "abc"
    }


def test_context_name_is_the_flow_name_while_defining():
    seen = []

    def define(flow, context):
        seen.append(context.name)
        flow.sync_node()

    faasflow.Flow(define, name="myflow")
    assert seen == ["myflow"]


def test_flow_exposes_name_define_and_hash():
    def define(flow, context):
        flow.sync_node()

    flow = faasflow.Flow(define, name="f1")
    assert flow.name == "f1"
    assert flow.define is define
    assert len(flow.definition_hash) == 64
    assert flow.graph().definition_hash == flow.definition_hash


def test_workflow_can_be_built_without_a_flow():
    workflow = Workflow("x")
    workflow.sync_node().modify(upper)
    assert list(workflow.dag().nodes) == ["sync"]


def test_the_dsl_package_keeps_its_public_names() -> None:
    import faasflow.dsl as dsl

    for name in ("SYNC_NODE", "Dag", "FanInWarning", "HttpRequest", "Node", "Retry", "Workflow",
                 "compile_workflow", "CallOptions"):
        assert name in dsl.__all__ and hasattr(dsl, name), name
    assert faasflow.Dag is dsl.Dag
