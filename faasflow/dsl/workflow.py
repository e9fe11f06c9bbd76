"""The ``flow`` argument of ``define(flow, context)``: the root DAG and the workflow hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from faasflow import graph
from faasflow.codecs import Codec, check_codec
from faasflow.errors import DefinitionError

from .checks import SYNC_NODE, check_callable
from .dags import Dag
from .nodes import Node
from .shortcuts import Aggregator

__all__ = ["FlowBuilder", "Workflow"]

H = TypeVar("H", bound=Callable[..., Any])


class FlowBuilder:
    """The ``flow`` argument of ``define(flow, context)``: the builder a definition fills in,
    compiled into a :class:`faasflow.Flow`."""

    def __init__(self, name: str = "flow") -> None:
        self.name = name
        self._dag = Dag()
        self._dag._label = "the root dag"
        self._on_failure: graph.FailureHandler | None = None
        self._finally: graph.FinallyHandler | None = None

    def sync_node(
        self, *, aggregator: Aggregator | None = None, codec: Codec | None = None
    ) -> Node:
        """The node ``"sync"`` of the root DAG: a flow of this one node runs wholly inside the
        request that starts it and returns its output."""
        return self._dag.node(SYNC_NODE, aggregator=aggregator, codec=codec)

    def dag(self, *, codec: Codec | None = None) -> Dag:
        """The root DAG; ``codec`` sets how its nodes see their data (and nested DAGs', unless
        they set their own): ``flow.dag(codec=faasflow.JSON)``."""
        checked = check_codec(codec, "flow.dag()")
        if checked is not None:
            if self._dag.codec is not None and self._dag.codec is not checked:
                raise DefinitionError(
                    f"flow.dag(codec=...): the root dag already has the codec {self._dag.codec!r}"
                )
            self._dag.codec = checked
        return self._dag

    def set_dag(self, dag: Dag) -> None:
        """Replace the root DAG by one built separately with ``faasflow.Dag()``."""
        if not isinstance(dag, Dag):
            raise DefinitionError(f"set_dag() takes a faasflow.Dag, got {type(dag).__name__}")
        self._dag = dag

    def on_failure(self, fn: H) -> H:
        """Call ``fn(error)`` when a request fails (before :meth:`finally_`); usable as a
        decorator; may be ``async def``."""
        check_callable(fn, "flow.on_failure() handler")
        self._on_failure = fn
        return fn

    def finally_(self, fn: H) -> H:
        """Call ``fn(state)`` with ``"success"`` or ``"failure"`` when a request ends; usable
        as a decorator; may be ``async def``."""
        check_callable(fn, "flow.finally_() handler")
        self._finally = fn
        return fn


Workflow = FlowBuilder
"""Deprecated alias of :class:`FlowBuilder`."""
