"""A DAG being defined: nodes, edges, sub-DAGs, foreach and conditional branches."""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping

import attrs

from faasflow.codecs import Codec, check_codec
from faasflow.errors import DefinitionError
from faasflow.graph import NodeKind

from .checks import check_callable, check_id, where
from .nodes import Node
from .shortcuts import Aggregator, Condition, ForEach, Forwarder, Shortcuts

__all__ = ["Dag"]


@attrs.frozen
class _EdgeSpec:
    source: str
    target: str
    forwarder: Forwarder | None
    execution_only: bool
    codec: Codec | None = None


class Dag(Shortcuts):
    """A DAG being defined. ``faasflow.Dag()`` builds a standalone one for composition with
    :meth:`sub_dag`, :meth:`append` or :meth:`FlowBuilder.set_dag`.

    ``codec`` (default: the enclosing DAG's, :data:`faasflow.BYTES` at the root) is how the
    data of its nodes is decoded for user functions and encoded from what they return.
    ``with dag:`` does nothing but indent a branch's definition.
    """

    def __init__(self, *, codec: Codec | None = None) -> None:
        self.codec = check_codec(codec, "faasflow.Dag()")
        self._nodes: dict[str, Node] = {}
        self._edges: list[_EdgeSpec] = []
        self._children: dict[str, list[str]] = {}  # for the cycle and duplicate checks
        self._label: str | None = None  # set for the root and branch DAGs, for messages
        # nodes only edge() has named so far, with that edge: a typo there silently makes a
        # new node, which validation then reports as a second start node
        self._by_edge: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"<Dag {where(self)}: {len(self._nodes)} nodes, {len(self._edges)} edges>"

    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes defined so far, in creation order."""
        return types.MappingProxyType(self._nodes)

    def __enter__(self) -> Dag:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def node(
        self,
        node_id: str,
        *,
        aggregator: Aggregator | None = None,
        codec: Codec | None = None,
    ) -> Node:
        """Get or create the node ``node_id``.

        ``aggregator(inputs) -> bytes | str`` receives the outputs of the data-carrying
        predecessors keyed by their ids, in edge declaration order, and its result is the
        node's input. ``codec`` overrides the DAG's for this node's functions.
        """
        self._by_edge.pop(node_id, None)
        node = self._get(node_id, aggregator)
        node._set_codec(codec)
        return node

    def _get(self, node_id: str, aggregator: Aggregator | None = None) -> Node:
        node = self._nodes.get(node_id)
        if node is None:
            node = Node(check_id(node_id, f"node id in {where(self)}"), self)
            self._nodes[node_id] = node
        node._set_aggregator(aggregator)
        return node

    def edge(
        self,
        source: str,
        target: str,
        *,
        forwarder: Forwarder | None = None,
        execution_only: bool = False,
        codec: Codec | None = None,
    ) -> None:
        """Run ``target`` after ``source``, handing it ``source``'s output.

        Missing nodes are created. ``forwarder(data) -> bytes | str`` transforms the data for
        this edge only (``codec``: how it decodes and encodes, default ``source``'s codec);
        ``execution_only=True`` orders execution without passing data.
        """
        what = f"edge {source!r} -> {target!r} in {where(self)}"
        check_codec(codec, what)
        if codec is not None and forwarder is None:
            raise DefinitionError(
                f"{what}: an edge's codec only says how its forwarder sees the data; add "
                "forwarder= or give the codec to the nodes instead"
            )
        if forwarder is not None:
            check_callable(forwarder, f"{what}: forwarder")
            if execution_only:
                raise DefinitionError(
                    f"{what}: a forwarder on an execution-only edge would never be called; "
                    "drop forwarder= or execution_only=True"
                )
        if not isinstance(execution_only, bool):
            raise DefinitionError(f"{what}: execution_only must be True or False")
        if target in self._children.get(source, ()):
            raise DefinitionError(f"{what} is defined twice (edge redefined)")
        if source == target:
            raise DefinitionError(f"{what} points at itself (cyclic dependency)")
        path = self._path(target, source)
        if path is not None:
            cycle = " -> ".join([source, *path])
            raise DefinitionError(f"{what} closes a cycle {cycle} (cyclic dependency)")
        for node_id in (source, target):
            if node_id not in self._nodes:
                self._by_edge[node_id] = (source, target)
            self._get(node_id)
        self._add_edge(_EdgeSpec(source, target, forwarder, execution_only, codec))

    def _add_edge(self, edge: _EdgeSpec) -> None:
        self._edges.append(edge)
        self._children.setdefault(edge.source, []).append(edge.target)

    def sub_dag(self, node_id: str, dag: Dag) -> None:
        """Add the node ``node_id`` that runs the whole of ``dag``; its output is ``dag``'s."""
        if not isinstance(dag, Dag):
            raise DefinitionError(
                f"sub_dag({node_id!r}) in {where(self)} takes a faasflow.Dag, "
                f"got {type(dag).__name__}"
            )
        if dag is self or dag._contains(self):
            raise DefinitionError(
                f"sub_dag({node_id!r}) in {where(self)} would include a DAG in itself "
                "(dag has recursive dependency)"
            )
        node = self._claim(node_id, NodeKind.SUBDAG)
        node.sub_dag = dag

    def append(self, dag: Dag) -> None:
        """Copy the nodes and edges of ``dag`` (as they are now) into this DAG; link them with
        :meth:`edge`. Node ids must not repeat."""
        if not isinstance(dag, Dag):
            raise DefinitionError(f"append() in {where(self)} takes a faasflow.Dag")
        if dag is self:
            raise DefinitionError(f"append() in {where(self)}: cannot append a DAG to itself")
        duplicates = [node_id for node_id in dag._nodes if node_id in self._nodes]
        if duplicates:
            raise DefinitionError(
                f"append() in {where(self)}: node id(s) {', '.join(map(repr, duplicates))} "
                "exist in both DAGs (vertex redefined); rename them"
            )
        for node in dag._nodes.values():
            for nested in node._nested():
                if nested is self or nested._contains(self):
                    raise DefinitionError(
                        f"append() in {where(self)}: node {node.id!r} of the appended DAG "
                        "includes this DAG (dag has recursive dependency)"
                    )
        for node_id, node in dag._nodes.items():
            copied = node._copy(self)
            copied.codec = node.codec or dag.codec  # the nodes keep the codec they had there
            self._nodes[node_id] = copied
        self._by_edge.update(dag._by_edge)
        for edge in dag._edges:
            self._add_edge(edge)

    def foreach_branch(
        self,
        node_id: str,
        foreach: ForEach,
        *,
        aggregator: Aggregator | None = None,
        execution_only: bool = False,
    ) -> Dag:
        """Add the node ``node_id`` that runs the returned sub-DAG once per key of
        ``foreach(data) -> {key: bytes | str}``, in parallel, each with its value as input.

        ``aggregator(results) -> bytes | str`` gets the branch outputs keyed by foreach key and
        makes the node's output. ``execution_only=True``: the branches get no data and nothing
        is aggregated.
        """
        what = f"foreach_branch({node_id!r}) in {where(self)}"
        check_callable(foreach, f"{what}: foreach")
        self._check_dynamic_options(what, aggregator, execution_only)
        node = self._claim(node_id, NodeKind.FOREACH)
        node.foreach = foreach
        node.sub_aggregator = aggregator
        node.dynamic_execution_only = execution_only
        branch = Dag()
        branch._label = f"the foreach branch of node {node_id!r}"
        node.foreach_dag = branch
        return branch

    def conditional_branch(
        self,
        node_id: str,
        conditions: Iterable[str],
        condition: Condition,
        *,
        aggregator: Aggregator | None = None,
        execution_only: bool = False,
    ) -> dict[str, Dag]:
        """Add the node ``node_id`` with one sub-DAG per key of ``conditions``; at run time
        ``condition(data) -> [key, ...]`` selects the branches to run (every selected one runs,
        in parallel, with the node's input).

        ``aggregator(results) -> bytes | str`` gets the outputs of the branches that ran, keyed
        by condition. Every declared branch must get at least one node.
        """
        what = f"conditional_branch({node_id!r}) in {where(self)}"
        if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Iterable):
            raise DefinitionError(f"{what}: conditions must be a list of condition names")
        keys = list(conditions)
        if not keys:
            raise DefinitionError(f"{what} declares no conditions")
        for key in keys:
            check_id(key, f"{what}: condition")
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise DefinitionError(f"{what}: condition(s) {', '.join(repeated)} declared twice")
        check_callable(condition, f"{what}: condition")
        self._check_dynamic_options(what, aggregator, execution_only)
        node = self._claim(node_id, NodeKind.CONDITION)
        node.condition = condition
        node.sub_aggregator = aggregator
        node.dynamic_execution_only = execution_only
        for key in keys:
            branch = Dag()
            branch._label = f"branch {key!r} of conditional node {node_id!r}"
            node.conditional_dags[key] = branch
        return dict(node.conditional_dags)

    def _check_dynamic_options(
        self, what: str, aggregator: Aggregator | None, execution_only: bool
    ) -> None:
        if not isinstance(execution_only, bool):
            raise DefinitionError(f"{what}: execution_only must be True or False")
        if aggregator is not None:
            check_callable(aggregator, f"{what}: aggregator")
            if execution_only:
                raise DefinitionError(
                    f"{what}: an execution-only branch node aggregates nothing, so its "
                    "aggregator would never be called; drop aggregator= or execution_only=True"
                )

    def _claim(self, node_id: str, kind: NodeKind) -> Node:
        """Create ``node_id`` as a special node, or turn the bare node ``edge`` created into one."""
        node = self._nodes.get(node_id)
        if node is None:
            return self._new(node_id, kind)
        if node.kind is not NodeKind.OPERATIONS or node.operations:
            raise DefinitionError(
                f"node {node_id!r} in {where(self)} is already defined "
                f"({node.kind.value}); a sub-DAG, foreach or conditional node needs its own id"
            )
        node.kind = kind
        return node

    def _new(self, node_id: str, kind: NodeKind) -> Node:
        node = self.node(node_id)
        node.kind = kind
        return node

    def _path(self, start: str, goal: str) -> list[str] | None:
        """A path of node ids from ``start`` to ``goal`` along the edges, if there is one."""
        came_from: dict[str, str | None] = {start: None}
        stack = [start]
        while stack:
            current = stack.pop()
            if current == goal:
                path = [current]
                while (previous := came_from[path[-1]]) is not None:
                    path.append(previous)
                return path[::-1]
            for child in reversed(self._children.get(current, [])):
                if child not in came_from:
                    came_from[child] = current
                    stack.append(child)
        return None

    def _contains(self, other: Dag) -> bool:
        """Whether ``other`` is nested (at any depth) inside one of this DAG's nodes."""
        stack = [self]
        seen: set[int] = set()
        while stack:
            dag = stack.pop()
            if id(dag) in seen:
                continue
            seen.add(id(dag))
            for node in dag._nodes.values():
                for nested in node._nested():
                    if nested is other:
                        return True
                    stack.append(nested)
        return False


