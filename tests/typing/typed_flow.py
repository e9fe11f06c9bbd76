"""Must pass mypy: every call option, decorator and shortcut, spelt right."""

from __future__ import annotations

from typing import Any

import faasflow
from faasflow.dsl import FlowBuilder


def define(flow: FlowBuilder, context: faasflow.Context) -> None:
    dag = flow.dag(codec=faasflow.JSON)
    dag.node("fetch").apply(
        "fetch", retry=faasflow.Retry(attempts=3), timeout=5, method="GET",
        headers={"X-Token": "abc"}, query={"page": ["1", "2"]},
    )
    dag.node("notify").request("http://127.0.0.1:1/hook", timeout=1.5)

    @dag.modifier("greet", after="fetch")
    async def greet(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "greeting": "hello"}

    @dag.aggregator("join", after=["greet", "notify"])
    def join(inputs: dict[str, Any]) -> list[Any]:
        return list(inputs.values())

    with dag.foreach("each", lambda items: dict(enumerate(items)), after="join",
                     aggregator=lambda results: list(results.values())) as branch:
        branch.node("double").modify(lambda value: value * 2)
    dag.chain("fetch", "notify")

    @flow.on_failure
    async def failed(error: BaseException) -> None:
        return None
