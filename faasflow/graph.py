"""The compiled, immutable graph of a flow: what the DSL produces and the engine executes.

A :class:`Graph` is built by :mod:`faasflow.dsl` from a user's ``define(flow, context)`` and
checked there; everything here is already valid. Identifiers follow faas-flow's scheme so that
state keys and span names stay recognisable:

- DAG id: the root is ``"0"``; the static or foreach sub-DAG of the vertex with index ``i`` in the
  root is ``"<i>"``, deeper ``"<parentDagId>_<i>"``; a conditional sub-DAG adds ``_<condition>``.
- Node unique id: ``"<dagId>_<index>_<nodeId>"`` (``index`` is the 1-based creation order in its
  DAG, counting nodes auto-created by ``edge`` and the virtual end node).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from faasflow.operations import Operation

__all__ = [
    "Aggregator",
    "Condition",
    "Edge",
    "ForEach",
    "Forwarder",
    "Graph",
    "GraphDag",
    "GraphNode",
    "NodeKind",
]

#: ``aggregator(inputs) -> bytes | str``: inputs keyed by predecessor id (fan-in) or by branch
#: key (foreach / conditional), in a deterministic order (edge declaration order; branch keys in
#: the order the foreach or condition function returned them).
Aggregator = Callable[[dict[str, bytes]], "bytes | str"]
#: ``forwarder(data) -> bytes | str``: transforms the data sent along one edge.
Forwarder = Callable[[bytes], "bytes | str"]
#: ``foreach(data) -> {key: bytes | str}``: one run of the foreach sub-DAG per key.
ForEach = Callable[[bytes], "Mapping[str, bytes | str]"]
#: ``condition(data) -> [key, ...]``: the conditional branches to run.
Condition = Callable[[bytes], "list[str]"]
#: Workflow hooks.
FailureHandler = Callable[[BaseException], object]
FinallyHandler = Callable[[str], object]


class NodeKind(str, enum.Enum):
    """What a node does when it runs."""

    OPERATIONS = "operations"  # a chain of operations (possibly empty: passes its input on)
    SUBDAG = "subdag"  # a static sub-DAG; its output is the sub-DAG's end node output
    FOREACH = "foreach"  # one parallel run of a sub-DAG per key returned by ``foreach``
    CONDITION = "condition"  # runs the sub-DAGs whose keys ``condition`` returns
    END = "end"  # the virtual end node added when a DAG has several end nodes

    @property
    def is_dynamic(self) -> bool:
        return self in (NodeKind.FOREACH, NodeKind.CONDITION)


@attrs.frozen(eq=False)
class Edge:
    """A directed edge; ``execution_only`` edges order execution but carry no data."""

    source: str
    target: str
    forwarder: Forwarder | None = None
    execution_only: bool = False


@attrs.frozen(eq=False)
class GraphNode:
    """One vertex of a DAG."""

    id: str
    index: int
    unique_id: str
    dag_id: str
    kind: NodeKind = NodeKind.OPERATIONS
    operations: tuple[Operation, ...] = ()
    aggregator: Aggregator | None = None
    """Fan-in aggregator, called with the outputs of the data-carrying predecessors."""
    sub_dag: GraphDag | None = None
    foreach: ForEach | None = None
    foreach_dag: GraphDag | None = None
    condition: Condition | None = None
    conditional_dags: Mapping[str, GraphDag] = attrs.field(factory=dict)
    sub_aggregator: Aggregator | None = None
    """Foreach / conditional aggregator, called with branch results keyed by branch key."""
    dynamic_execution_only: bool = False
    """A dynamic node built with ``execution_only=True``: branches get no data, no aggregation."""
    parents: tuple[str, ...] = ()
    """Predecessor ids, in edge declaration order."""
    children: tuple[str, ...] = ()
    """Successor ids, in edge declaration order."""

    @property
    def is_dynamic(self) -> bool:
        return self.kind.is_dynamic

    def branch_dag(self, key: str) -> GraphDag:
        """The sub-DAG that runs for branch ``key`` of a foreach or conditional node."""
        if self.kind is NodeKind.FOREACH:
            assert self.foreach_dag is not None
            return self.foreach_dag
        return self.conditional_dags[key]


@attrs.frozen(eq=False)
class GraphDag:
    """A DAG: nodes in creation order, edges in declaration order, one start, one end."""

    id: str
    nodes: Mapping[str, GraphNode]
    edges: tuple[Edge, ...]
    start: str
    end: str
    owner: str | None = None
    """Unique id of the node whose sub-DAG (static, foreach or conditional) this is."""
    branch: str | None = None
    """The condition key of a conditional sub-DAG."""
    _in: Mapping[str, tuple[Edge, ...]] = attrs.field(init=False, repr=False)
    _out: Mapping[str, tuple[Edge, ...]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # indexed once: the engine looks edges up on every iteration
        incoming: dict[str, list[Edge]] = {}
        outgoing: dict[str, list[Edge]] = {}
        for e in self.edges:
            incoming.setdefault(e.target, []).append(e)
            outgoing.setdefault(e.source, []).append(e)
        object.__setattr__(self, "_in", {k: tuple(v) for k, v in incoming.items()})
        object.__setattr__(self, "_out", {k: tuple(v) for k, v in outgoing.items()})

    def node(self, node_id: str) -> GraphNode:
        return self.nodes[node_id]

    def edge(self, source: str, target: str) -> Edge:
        for e in self._out.get(source, ()):
            if e.target == target:
                return e
        raise KeyError((source, target))

    def in_edges(self, node_id: str) -> tuple[Edge, ...]:
        return self._in.get(node_id, ())

    def out_edges(self, node_id: str) -> tuple[Edge, ...]:
        return self._out.get(node_id, ())


@attrs.frozen(eq=False)
class Graph:
    """A whole compiled flow."""

    name: str
    root: GraphDag
    nodes: Mapping[str, GraphNode]
    """Every node of every DAG, by unique id."""
    dags: Mapping[str, GraphDag]
    """Every DAG, by DAG id."""
    definition_hash: str
    """sha256 of the canonical export: equal across processes for the same definition."""
    on_failure: FailureHandler | None = None
    finally_: FinallyHandler | None = None

    @property
    def is_sync(self) -> bool:
        """A single node of operations and no edges: runs wholly inside the first call."""
        return (
            len(self.root.nodes) == 1
            and not self.root.edges
            and self.root.node(self.root.start).kind is NodeKind.OPERATIONS
        )

    def dag_of(self, unique_id: str) -> GraphDag:
        """The DAG that holds the node ``unique_id``."""
        return self.dags[self.nodes[unique_id].dag_id]

    def owner_of(self, dag: GraphDag) -> GraphNode | None:
        """The node whose sub-DAG ``dag`` is (``None`` for the root)."""
        return None if dag.owner is None else self.nodes[dag.owner]
