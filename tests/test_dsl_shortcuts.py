"""Each decorator or shortcut compiles to exactly the graph its faas-flow-style form makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import faasflow
from faasflow.dsl import FlowBuilder

Define = Callable[[FlowBuilder, faasflow.Context], object]


def fetch(data: bytes) -> bytes:
    return data + b"fetched"


def greet(data: bytes) -> bytes:
    return b"Hello " + data


def join(inputs: dict[str, bytes]) -> bytes:
    return b"+".join(inputs.values())


def split(data: bytes) -> dict[str, bytes]:
    return {str(i): part for i, part in enumerate(data.split(b","))}


def choose(data: bytes) -> list[str]:
    return ["long"] if len(data) > 3 else ["short"]


def upper(data: bytes) -> bytes:
    return data.upper()


def assert_same_graph(long_form: Define, short_form: Define, data: bytes = b"a,b") -> None:
    long_flow, short_flow = faasflow.Flow(long_form), faasflow.Flow(short_form)
    assert short_flow.export() == long_flow.export()
    assert short_flow.to_dot() == long_flow.to_dot()
    assert short_flow.definition_hash == long_flow.definition_hash
    assert faasflow.run(short_flow, data).output == faasflow.run(long_flow, data).output


def test_modifier_decorator_with_after_is_node_modify_then_edge() -> None:
    def long_form(flow, context):
        dag = flow.dag()
        dag.node("fetch").modify(fetch)
        dag.node("greet").modify(greet)
        dag.edge("fetch", "greet")

    def short_form(flow, context):
        dag = flow.dag()
        dag.modifier("fetch")(fetch)
        dag.modifier("greet", after="fetch")(greet)

    assert_same_graph(long_form, short_form)


def test_modifier_decorator_returns_the_function_it_registers() -> None:
    kept: list[Any] = []

    def define(flow, context):
        dag = flow.dag()

        @dag.modifier("greet")
        def greeting(data: bytes) -> bytes:
            return b"Hello " + data

        kept.append(greeting)

    graph = faasflow.Flow(define).graph()
    assert graph.root.node("greet").operations[0].fn is kept[0]  # type: ignore[attr-defined]
    assert kept[0](b"x") == b"Hello x"


def test_aggregator_decorator_is_node_with_aggregator_then_edges_in_order() -> None:
    def long_form(flow, context):
        dag = flow.dag()
        dag.node("b").modify(upper)
        dag.node("c").modify(fetch)
        dag.node("d", aggregator=join)
        dag.edge("a", "b")
        dag.edge("a", "c")
        dag.edge("b", "d")
        dag.edge("c", "d")

    def short_form(flow, context):
        dag = flow.dag()
        dag.node("b").modify(upper)
        dag.node("c").modify(fetch)
        dag.aggregator("d")(join)
        dag.edge("a", "b")
        dag.edge("a", "c")
        dag.chain("b", "d")
        dag.chain("c", "d")

    assert_same_graph(long_form, short_form)

    def after_form(flow, context):
        dag = flow.dag()
        dag.edge("a", "b")
        dag.edge("a", "c")
        dag.node("b").modify(upper)
        dag.node("c").modify(fetch)
        dag.aggregator("d", after=["b", "c"])(join)

    def after_long_form(flow, context):
        dag = flow.dag()
        dag.edge("a", "b")
        dag.edge("a", "c")
        dag.node("b").modify(upper)
        dag.node("c").modify(fetch)
        dag.node("d", aggregator=join)
        dag.edge("b", "d")
        dag.edge("c", "d")

    assert_same_graph(after_long_form, after_form)


def test_chain_is_one_edge_per_consecutive_pair() -> None:
    def long_form(flow, context):
        dag = flow.dag()
        dag.edge("a", "b")
        dag.edge("b", "c")
        dag.edge("c", "d")

    def short_form(flow, context):
        flow.dag().chain("a", "b", "c", "d")

    assert_same_graph(long_form, short_form)


def test_chain_of_one_node_is_a_definition_error() -> None:
    with pytest.raises(faasflow.DefinitionError, match="two or more node ids"):
        faasflow.Flow(lambda flow, context: flow.dag().chain("a"))


def test_forwarder_decorator_is_edge_with_forwarder() -> None:
    def long_form(flow, context):
        dag = flow.dag()
        dag.edge("a", "b", forwarder=upper)

    def short_form(flow, context):
        flow.dag().forwarder("a", "b")(upper)

    assert_same_graph(long_form, short_form)


def test_foreach_with_block_is_foreach_branch() -> None:
    def long_form(flow, context):
        dag = flow.dag()
        dag.node("start").modify(fetch)
        branch = dag.foreach_branch("F", split, aggregator=join)
        branch.node("up").modify(upper)
        dag.edge("start", "F")

    def with_form(flow, context):
        dag = flow.dag()
        dag.node("start").modify(fetch)
        with dag.foreach("F", split, after="start", aggregator=join) as branch:
            branch.node("up").modify(upper)

    def decorator_form(flow, context):
        dag = flow.dag()
        dag.node("start").modify(fetch)
        branch: Any = dag.foreach("F", after="start", aggregator=join)(split)
        branch.node("up").modify(upper)

    assert_same_graph(long_form, with_form)
    assert_same_graph(long_form, decorator_form)


def test_foreach_with_a_codec_is_a_node_with_that_codec_then_the_branch() -> None:
    def long_form(flow, context):
        dag = flow.dag()
        dag.node("F", codec=faasflow.TEXT)
        dag.foreach_branch("F", split, aggregator=join).node("up").modify(upper)

    def short_form(flow, context):
        with flow.dag().foreach("F", split, aggregator=join, codec=faasflow.TEXT) as branch:
            branch.node("up").modify(upper)

    long_flow, short_flow = faasflow.Flow(long_form), faasflow.Flow(short_form)
    assert short_flow.export() == long_flow.export()


def test_condition_shortcut_and_decorator_are_conditional_branch() -> None:
    def long_form(flow, context):
        dag = flow.dag()
        dag.node("start").modify(fetch)
        branches = dag.conditional_branch("C", ["long", "short"], choose, aggregator=join)
        branches["long"].node("l").modify(upper)
        branches["short"].node("s").modify(greet)
        dag.edge("start", "C")

    def call_form(flow, context):
        dag = flow.dag()
        dag.node("start").modify(fetch)
        branches = dag.condition("C", ["long", "short"], choose, after="start", aggregator=join)
        branches["long"].node("l").modify(upper)
        branches["short"].node("s").modify(greet)

    def decorator_form(flow, context):
        dag = flow.dag()
        dag.node("start").modify(fetch)
        branches: Any = dag.condition("C", ["long", "short"], after="start", aggregator=join)(
            choose
        )
        branches["long"].node("l").modify(upper)
        branches["short"].node("s").modify(greet)

    assert_same_graph(long_form, call_form)
    assert_same_graph(long_form, decorator_form)


def test_hook_decorators_are_the_hook_calls() -> None:
    def on_failure(error: BaseException) -> None:
        pass

    def ended(state: str) -> None:
        pass

    def long_form(flow, context):
        flow.sync_node().modify(upper)
        flow.on_failure(on_failure)
        flow.finally_(ended)

    def short_form(flow, context):
        flow.sync_node().modify(upper)

        @flow.on_failure
        def failed(error: BaseException) -> None:
            on_failure(error)

        flow.finally_(ended)

    long_graph, short_graph = faasflow.Flow(long_form).graph(), faasflow.Flow(short_form).graph()
    assert long_graph.on_failure is on_failure
    assert short_graph.on_failure is not None and short_graph.finally_ is ended


def test_after_that_is_not_an_id_or_a_list_is_a_definition_error() -> None:
    def define(flow, context):
        flow.dag().modifier("b", after=3)(upper)  # type: ignore[arg-type]

    with pytest.raises(faasflow.DefinitionError, match="after= takes a node id"):
        faasflow.Flow(define)
