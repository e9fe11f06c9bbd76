"""Every definition rule fails at compile time with a message naming the offending ids."""

from __future__ import annotations

import re

import pytest

import faasflow
from faasflow.dsl import FanInWarning


def upper(data: bytes) -> bytes:
    return data.upper()


def concat(inputs: dict[str, bytes]) -> bytes:
    return b"".join(inputs.values())


def definition_error(define, name: str = "flow") -> str:
    with pytest.raises(faasflow.DefinitionError) as info:
        faasflow.Flow(define, name=name)
    return str(info.value)


def assert_mentions(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# --- structure ---------------------------------------------------------------------------


def test_cycle_is_rejected_with_its_path():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")
        dag.edge("n3", "n1")

    assert_mentions(
        definition_error(define, "cyc"),
        "Invalid dag in flow cyc",
        "edge 'n3' -> 'n1'",
        "n3 -> n1 -> n2 -> n3",
        "cyclic",
    )


def test_self_loop_is_a_cycle():
    def define(flow, context):
        flow.dag().edge("n1", "n1")

    assert_mentions(definition_error(define), "'n1' -> 'n1'", "cyclic")


def test_cycle_is_rejected_inside_a_branch_dag():
    def define(flow, context):
        branch = flow.dag().foreach_branch("F", lambda d: {"a": d}, aggregator=concat)
        branch.edge("x", "y")
        branch.edge("y", "x")

    assert_mentions(definition_error(define), "foreach branch of node 'F'", "y -> x -> y")


def test_duplicate_edge_is_rejected():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")
        dag.edge("n1", "n2", execution_only=True)

    assert_mentions(definition_error(define), "'n1' -> 'n2'", "edge redefined")


def test_two_start_nodes_are_rejected_naming_them_and_the_dag():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n3")
        dag.edge("n2", "n3")
        dag.node("n3", aggregator=concat)

    assert_mentions(
        definition_error(define), "dag 0", "2 start nodes (n1, n2)", "only one start vertex"
    )


def test_two_start_nodes_in_a_conditional_branch_name_the_branch_dag():
    def define(flow, context):
        branches = flow.dag().conditional_branch(
            "C", ["yes", "no"], lambda d: ["yes"], aggregator=concat
        )
        branches["yes"].node("a")
        branches["yes"].node("b")
        branches["no"].node("c")

    assert_mentions(
        definition_error(define), "dag 1_yes", "branch 'yes'", "conditional node 'C'", "a, b"
    )


def test_empty_root_dag_is_rejected():
    assert_mentions(definition_error(lambda flow, context: None), "dag 0", "no nodes")


def test_empty_conditional_branch_is_rejected_naming_the_branch():
    def define(flow, context):
        branches = flow.dag().conditional_branch(
            "C", ["c1", "c3"], lambda d: ["c1"], aggregator=concat
        )
        branches["c1"].node("x")

    assert_mentions(
        definition_error(define), "dag 1_c3", "branch 'c3'", "'C'", "dag has no vertex set"
    )


def test_empty_foreach_branch_is_rejected():
    def define(flow, context):
        flow.dag().foreach_branch("F", lambda d: {"a": d}, aggregator=concat)

    assert_mentions(definition_error(define), "dag 1", "foreach branch", "'F'", "no nodes")


def test_empty_static_sub_dag_is_rejected():
    def define(flow, context):
        flow.dag().sub_dag("S", faasflow.Dag())

    assert_mentions(definition_error(define), "dag 1", "sub-DAG of node 'S'", "no nodes")


def test_sub_dag_of_itself_is_rejected():
    def define(flow, context):
        dag = flow.dag()
        dag.sub_dag("S", dag)

    assert_mentions(definition_error(define), "sub_dag('S')", "recursive")


def test_indirect_recursive_sub_dag_is_rejected():
    def define(flow, context):
        root = flow.dag()
        inner = faasflow.Dag()
        root.sub_dag("S", inner)
        inner.sub_dag("back", root)

    assert_mentions(definition_error(define), "sub_dag('back')", "recursive")


def test_sub_dag_including_a_branch_of_its_own_dag_is_rejected():
    def define(flow, context):
        root = flow.dag()
        branch = root.foreach_branch("F", lambda d: {"a": d}, aggregator=concat)
        branch.sub_dag("S", root)

    assert_mentions(definition_error(define), "sub_dag('S')", "recursive")


def test_append_bringing_in_a_recursive_sub_dag_is_rejected():
    def define(flow, context):
        root = flow.dag()
        part = faasflow.Dag()
        part.sub_dag("S", root)
        root.append(part)

    assert_mentions(definition_error(define), "append()", "node 'S'", "recursive")


def test_append_with_duplicate_node_ids_is_rejected_naming_them():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("a", "b")
        part = faasflow.Dag()
        part.edge("b", "c")
        dag.append(part)

    assert_mentions(definition_error(define), "'b'", "vertex redefined")


def test_user_node_named_like_the_virtual_end_node_is_rejected():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "end_0")
        dag.edge("n1", "n2")

    assert_mentions(definition_error(define), "'end_0'", "reserved", "end_0, n2")


def test_condition_keys_that_make_ids_collide_are_rejected():
    def define(flow, context):
        dag = flow.dag()
        branches = dag.conditional_branch("C", ["a", "a_1"], lambda d: ["a"], aggregator=concat)
        branches["a"].foreach_branch("F", lambda d: {"k": d}, aggregator=concat).node("x")
        branches["a_1"].node("y")

    assert_mentions(definition_error(define), "'1_a_1'", "rename a condition key")


@pytest.mark.parametrize("bad", ["", "a--b", "a/b", "a b"])
def test_bad_node_ids_are_rejected(bad):
    assert_mentions(
        definition_error(lambda flow, context: flow.dag().node(bad)), repr(bad)
    )


def test_non_string_node_id_is_rejected():
    assert_mentions(definition_error(lambda flow, context: flow.dag().node(3)), "node id", "3")


# --- fan-in ------------------------------------------------------------------------------


def test_fan_in_without_aggregator_warns_naming_the_node_its_edges_and_the_fixes():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")
        dag.edge("n2", "n4")
        dag.edge("n3", "n4")

    with pytest.warns(FanInWarning) as caught:
        faasflow.Flow(define)
    assert_mentions(
        str(caught[0].message),
        "node 'n4'",
        "n2 -> n4, n3 -> n4",
        "context.node_input",
        "aggregator=",
        "execution_only=True",
    )


def test_fan_in_warning_points_at_the_line_that_compiles_the_flow():
    def define(flow, context):
        dag = flow.dag()
        sub = dag.foreach_branch("F", lambda d: {"k": d}, aggregator=concat)
        sub.edge("a", "b")
        sub.edge("a", "c")
        sub.edge("b", "d")
        sub.edge("c", "d")

    with pytest.warns(FanInWarning) as caught:
        faasflow.Flow(define)
    assert caught[0].filename == __file__


def test_fan_in_with_one_data_edge_still_warns_because_the_input_is_empty():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")
        dag.edge("n2", "n4")
        dag.edge("n3", "n4", execution_only=True)

    with pytest.warns(FanInWarning, match="data on 1 of them"):
        faasflow.Flow(define)


def test_dynamic_node_without_aggregator_feeding_data_on_is_rejected():
    def define(flow, context):
        dag = flow.dag()
        dag.foreach_branch("F", lambda d: {"a": d}).node("x")
        dag.edge("F", "next")

    assert_mentions(
        definition_error(define), "node 'F'", "foreach node without an aggregator", "next",
        "execution_only=True",
    )


def test_dynamic_node_without_aggregator_is_allowed_at_the_end():
    def define(flow, context):
        dag = flow.dag()
        dag.conditional_branch("C", ["a"], lambda d: ["a"]).get("a").node("x")
        dag.edge("C", "next", execution_only=True)

    graph = faasflow.Flow(define).graph()
    assert graph.root.node("C").sub_aggregator is None


# --- callables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda flow: flow.sync_node().modify("upper"), "modify() argument must be callable"),
        (lambda flow: flow.dag().node("n", aggregator=1), "node 'n'"),
        (lambda flow: flow.dag().edge("a", "b", forwarder=b"x"), "forwarder must be callable"),
        (lambda flow: flow.dag().foreach_branch("F", None), "foreach must be callable"),
        (
            lambda flow: flow.dag().conditional_branch("C", ["a"], "a"),
            "condition must be callable",
        ),
        (
            lambda flow: flow.dag().conditional_branch("C", ["a"], bool, aggregator="x"),
            "aggregator must be callable",
        ),
        (lambda flow: flow.sync_node().apply("f", on_failure=True), "on_failure must be"),
        (lambda flow: flow.sync_node().apply("f", request_handler=1), "request_handler"),
        (
            lambda flow: flow.sync_node().request("http://127.0.0.1/", response_handler=1),
            "response_handler",
        ),
        (lambda flow: flow.on_failure(None), "flow.on_failure() handler"),
        (lambda flow: flow.finally_("x"), "flow.finally_() handler"),
        (lambda flow: flow.sync_node().add_operation(upper), "faasflow.Operation instance"),
    ],
)
def test_non_callable_arguments_are_rejected(build, expected):
    def define(flow, context):
        flow.sync_node()
        build(flow)

    assert_mentions(definition_error(define), expected)


def test_flow_of_a_non_callable_is_rejected():
    with pytest.raises(faasflow.DefinitionError, match="define\\(flow, context\\)"):
        faasflow.Flow("define")


# --- options that do not apply ------------------------------------------------------------


def test_node_option_given_to_apply_is_rejected_naming_the_valid_ones():
    message = definition_error(lambda flow, context: flow.sync_node().apply("f", aggregator=concat))
    assert_mentions(message, "apply('f')", "aggregator", "valid options", "headers", "dag.node()")


def test_unknown_option_given_to_request_is_rejected():
    message = definition_error(
        lambda flow, context: flow.sync_node().request("http://127.0.0.1/x", forwarder=upper)
    )
    assert_mentions(message, "request('http://127.0.0.1/x')", "forwarder", "dag.edge()")


def test_forwarder_on_an_execution_only_edge_is_rejected():
    def define(flow, context):
        flow.dag().edge("a", "b", forwarder=upper, execution_only=True)

    assert_mentions(definition_error(define), "'a' -> 'b'", "never be called")


@pytest.mark.parametrize("kind", ["foreach", "conditional"])
def test_aggregator_on_an_execution_only_dynamic_node_is_rejected(kind):
    def define(flow, context):
        dag = flow.dag()
        if kind == "foreach":
            dag.foreach_branch("D", dict, aggregator=concat, execution_only=True)
        else:
            dag.conditional_branch("D", ["a"], list, aggregator=concat, execution_only=True)

    assert_mentions(definition_error(define), "'D'", "aggregator would never be called")


def test_aggregator_on_a_node_without_incoming_edges_is_rejected():
    def define(flow, context):
        flow.sync_node(aggregator=concat).modify(upper)

    assert_mentions(definition_error(define), "node 'sync'", "no incoming edges")


def test_a_second_different_aggregator_is_rejected():
    def define(flow, context):
        flow.dag().node("n", aggregator=concat)
        flow.dag().node("n", aggregator=lambda inputs: b"")

    assert_mentions(definition_error(define), "node 'n'", "already has the aggregator", "concat")


@pytest.mark.parametrize("kind", ["sub_dag", "foreach", "conditional"])
def test_operations_on_a_node_that_runs_a_sub_dag_are_rejected(kind):
    def define(flow, context):
        dag = flow.dag()
        if kind == "sub_dag":
            sub = faasflow.Dag()
            sub.node("x")
            dag.sub_dag("S", sub)
        elif kind == "foreach":
            dag.foreach_branch("S", dict, aggregator=concat).node("x")
        else:
            dag.conditional_branch("S", ["a"], list, aggregator=concat)["a"].node("x")
        dag.node("S").apply("f")

    assert_mentions(definition_error(define), "node 'S'", "cannot add 'f'")


def test_turning_a_node_with_operations_into_a_branch_node_is_rejected():
    def define(flow, context):
        dag = flow.dag()
        dag.node("F").modify(upper)
        dag.foreach_branch("F", dict, aggregator=concat)

    assert_mentions(definition_error(define), "node 'F'", "already defined")


def test_a_bare_node_created_by_edge_can_become_a_branch_node():
    def define(flow, context):
        dag = flow.dag()
        dag.edge("n1", "F")
        dag.foreach_branch("F", lambda d: {"a": d}, aggregator=concat).node("x")

    assert faasflow.Flow(define).graph().root.node("F").index == 2


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": "5"}, "timeout must be a positive"),
        ({"retry": 3}, "retry must be a faasflow.Retry"),
        ({"headers": {"X-A": 1}}, "header 'X-A'"),
        ({"headers": ["X-A"]}, "headers must be a dict"),
        ({"query": {"a": 1}}, "query 'a'"),
        ({"query": "a=1"}, "query must be a dict"),
        ({"method": "GE T"}, "method must be an HTTP method"),
    ],
)
def test_bad_operation_options_are_rejected(options, expected):
    message = definition_error(lambda flow, context: flow.sync_node().apply("f", **options))
    assert_mentions(message, "apply('f')", expected)


@pytest.mark.parametrize("url", ["ftp://host/x", "/relative", "http://", "", None])
def test_request_needs_an_absolute_http_url(url):
    message = definition_error(lambda flow, context: flow.sync_node().request(url))
    assert_mentions(message, "absolute http:// or https:// URL", repr(url))


@pytest.mark.parametrize("name", ["", "  ", None])
def test_apply_needs_a_function_name(name):
    message = definition_error(lambda flow, context: flow.sync_node().apply(name))
    assert_mentions(message, "apply() needs a function name")


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], "declares no conditions"),
        ("c1", "must be a list"),
        (["a", "b", "a"], "a declared twice"),
        (["ok", "no--pe"], "'no--pe'"),
    ],
)
def test_bad_condition_lists_are_rejected(conditions, expected):
    message = definition_error(
        lambda flow, context: flow.dag().conditional_branch("C", conditions, list)
    )
    assert_mentions(message, "conditional_branch('C')", expected)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 2.5}, "attempts"),
        ({"initial_backoff": -1}, "initial_backoff"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 2}, "jitter"),
        ({"retry_on": [700]}, "retry_on"),
    ],
)
def test_bad_retry_settings_are_rejected(options, expected):
    with pytest.raises(faasflow.DefinitionError, match=re.escape(expected)):
        faasflow.Retry(**options)


# --- define itself -----------------------------------------------------------------------


def test_exception_in_define_becomes_failed_to_define_flow():
    def define(flow, context):
        raise RuntimeError("boom")

    with pytest.raises(faasflow.DefinitionError, match="Failed to define flow f1: boom") as info:
        faasflow.Flow(define, name="f1")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_define_returning_an_exception_fails_like_go_return_err():
    def define(flow, context):
        flow.sync_node()
        return ValueError("bad config")

    assert_mentions(definition_error(define, "g"), "Failed to define flow g: bad config")


def test_context_set_while_defining_is_a_definition_failure():
    def define(flow, context):
        context.set("k", "v")

    assert_mentions(definition_error(define), "Failed to define flow", "while a request runs")


@pytest.mark.parametrize("name", ["", "a/b", "has space", None])
def test_bad_flow_names_are_rejected(name):
    with pytest.raises(faasflow.DefinitionError, match="flow name"):
        faasflow.Flow(lambda flow, context: flow.sync_node(), name=name)


def test_errors_raised_outside_define_carry_the_bare_reason():
    dag = faasflow.Dag()
    dag.edge("a", "b")
    with pytest.raises(faasflow.DefinitionError, match="edge redefined"):
        dag.edge("a", "b")
