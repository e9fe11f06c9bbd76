"""Flow shapes the benchmarks share: no-op nodes, so the time measured is orchestration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["chain", "fan", "foreach", "nested"]


def chain(n: int) -> Callable[[Any, Any], None]:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for i in range(n):
            dag.node(f"n{i}").modify(bytes)
            if i:
                dag.edge(f"n{i - 1}", f"n{i}")

    return define


def fan(n: int) -> Callable[[Any, Any], None]:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("start")
        dag.node("join", aggregator=lambda d: str(len(d)))
        for i in range(n):
            dag.node(f"b{i}").modify(bytes)
            dag.edge("start", f"b{i}")
            dag.edge(f"b{i}", "join")

    return define


def foreach(n: int) -> Callable[[Any, Any], None]:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        sub = dag.foreach_branch(
            "F", lambda d: {str(i): b"" for i in range(n)}, aggregator=lambda r: str(len(r))
        )
        sub.node("x").modify(bytes)

    return define


def nested(outer: int, inner: int) -> Callable[[Any, Any], None]:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        sub = dag.foreach_branch(
            "outer",
            lambda d: {str(i): b"" for i in range(outer)},
            aggregator=lambda r: str(sum(int(v) for v in r.values())),
        )
        leaf = sub.foreach_branch(
            "inner",
            lambda d: {str(i): b"" for i in range(inner)},
            aggregator=lambda r: str(len(r)),
        )
        leaf.node("x").modify(bytes)

    return define
