"""A node being defined: the operations it chains, or the sub-DAGs it runs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from faasflow import graph
from faasflow.codecs import Codec, check_codec
from faasflow.errors import DefinitionError
from faasflow.graph import NodeKind
from faasflow.operations import Apply, Modify, Operation, Request, callable_name

from .checks import check_callable, where
from .options import CallOptions, check_call_options

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

    from .dags import Dag

__all__ = ["Node"]

#: ``modifier(data) -> data``: bytes in and bytes or str out by default; the node's codec's
#: values with a codec; may be ``async def``.
Modifier = Callable[[Any], Any]


class Node:
    """A vertex being defined: chain operations on it; they run in the order added.

    Get one from :meth:`Dag.node` (or :meth:`FlowBuilder.sync_node`); calling it again with the same
    id returns the same node, so operations accumulate.
    """

    def __init__(self, node_id: str, dag: Dag, aggregator: graph.Aggregator | None = None) -> None:
        self.id = node_id
        self._dag = dag
        self.kind = NodeKind.OPERATIONS
        self.operations: list[Operation] = []
        self.aggregator = aggregator
        self.sub_dag: Dag | None = None
        self.foreach: graph.ForEach | None = None
        self.foreach_dag: Dag | None = None
        self.condition: graph.Condition | None = None
        self.conditional_dags: dict[str, Dag] = {}
        self.sub_aggregator: graph.Aggregator | None = None
        self.dynamic_execution_only = False
        self.codec: Codec | None = None
        """The node's own codec; ``None``: its DAG's."""

    def __repr__(self) -> str:
        return f"<Node {self.id!r} {self.kind.value} in {where(self._dag)}>"

    def _describe(self) -> str:
        return f"node {self.id!r} in {where(self._dag)}"

    def add_operation(self, operation: Operation) -> Node:
        """Append a custom :class:`~faasflow.operations.Operation`; returns the node."""
        if not isinstance(operation, Operation):
            raise DefinitionError(
                f"{self._describe()}: add_operation() takes a faasflow.Operation instance, "
                f"got {type(operation).__name__}"
            )
        if self.kind is not NodeKind.OPERATIONS:
            kind = {
                NodeKind.SUBDAG: "a sub-DAG node",
                NodeKind.FOREACH: "a foreach node",
                NodeKind.CONDITION: "a conditional node",
            }.get(self.kind, self.kind.value)
            raise DefinitionError(
                f"{self._describe()} is {kind}: it runs its sub-DAG, not operations "
                f"(cannot add {operation.id!r}); put the operations in a node before or after "
                "it, or inside its sub-DAG"
            )
        self.operations.append(operation)
        return self

    def apply(self, function: str, **options: Unpack[CallOptions]) -> Node:
        """Call the function named ``function`` (OpenFaaS ``/function/<name>`` or a local
        callable) with the data; its response body is the output. Returns the node.
        The options are those of :class:`~faasflow.dsl.CallOptions`."""
        if not isinstance(function, str) or not function.strip():
            raise DefinitionError(
                f"{self._describe()}: apply() needs a function name, got {function!r}"
            )
        checked = check_call_options(f"{self._describe()}: apply({function!r})", options)
        return self.add_operation(Apply(function, **checked))

    def request(self, url: str, **options: Unpack[CallOptions]) -> Node:
        """Call any HTTP(S) URL with the data as body; the response body is the output.
        The options are those of :class:`~faasflow.dsl.CallOptions`."""
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise DefinitionError(
                f"{self._describe()}: request() needs an absolute http:// or https:// URL, "
                f"got {url!r}"
            )
        checked = check_call_options(f"{self._describe()}: request({url!r})", options)
        return self.add_operation(Request(url, **checked))

    def modify(self, fn: Modifier) -> Node:
        """Transform the data in-process with ``fn(data)``: ``bytes -> bytes | str`` by
        default, the codec's values when the node or its DAG has one; ``fn`` may be
        ``async def``. Returns the node."""
        check_callable(fn, f"{self._describe()}: modify() argument")
        return self.add_operation(Modify(fn))

    def _set_codec(self, codec: object) -> None:
        checked = check_codec(codec, self._describe())
        if checked is None:
            return
        if self.codec is not None and self.codec is not checked:
            raise DefinitionError(
                f"{self._describe()} already has the codec {self.codec!r}; a node has one codec"
            )
        self.codec = checked

    def _set_aggregator(self, aggregator: graph.Aggregator | None) -> None:
        if aggregator is None:
            return
        check_callable(aggregator, f"{self._describe()}: aggregator")
        if self.aggregator is not None and self.aggregator is not aggregator:
            raise DefinitionError(
                f"{self._describe()} already has the aggregator "
                f"{callable_name(self.aggregator)}; a node has one aggregator"
            )
        self.aggregator = aggregator

    def _copy(self, dag: Dag) -> Node:
        node = Node(self.id, dag, self.aggregator)
        node.kind = self.kind
        node.operations = list(self.operations)
        node.sub_dag = self.sub_dag
        node.foreach = self.foreach
        node.foreach_dag = self.foreach_dag
        node.condition = self.condition
        node.conditional_dags = dict(self.conditional_dags)
        node.sub_aggregator = self.sub_aggregator
        node.dynamic_execution_only = self.dynamic_execution_only
        node.codec = self.codec
        return node

    def _nested(self) -> Iterator[Dag]:
        if self.sub_dag is not None:
            yield self.sub_dag
        if self.foreach_dag is not None:
            yield self.foreach_dag
        yield from self.conditional_dags.values()
