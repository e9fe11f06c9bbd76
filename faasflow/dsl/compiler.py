"""``compile_workflow``: a checked definition becomes the immutable graph the engine runs.

Whole-DAG rules (one start node, no empty DAG, ids that stay unique) are checked here; user
callables are wrapped for their node's codec and for ``async def`` (see :mod:`.adapt`).
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from faasflow import graph
from faasflow.codecs import BYTES, Codec
from faasflow.errors import DefinitionError
from faasflow.graph import NodeKind
from faasflow.operations import Apply, Modify, Operation, Request

from .adapt import (
    adapt_aggregator,
    adapt_condition,
    adapt_data,
    adapt_foreach,
    adapt_hook,
    adapt_result,
)
from .checks import FanInWarning, caller_level
from .dags import Dag
from .nodes import Node
from .workflow import FlowBuilder

__all__ = ["adapt_operation", "compile_workflow", "start_codec"]

F = TypeVar("F", bound=Callable[..., Any])


def _maybe(adapt: Callable[[F, Codec], F], fn: F | None, codec: Codec) -> F | None:
    return None if fn is None else adapt(fn, codec)


def adapt_operation(op: Operation, codec: Codec) -> Operation:
    """``op`` with its callables wrapped for ``codec`` and async, and calls marked with the
    codec's Content-Type (unless they set one)."""
    if isinstance(op, Modify):
        adapted = adapt_data(op.fn, codec)
        return op if adapted is op.fn else Modify(adapted)
    if not isinstance(op, (Apply, Request)):
        return op
    changes: dict[str, Any] = {}
    for name, adapt in (
        ("on_failure", adapt_result),
        ("response_handler", adapt_result),
        ("request_handler", lambda fn, _: adapt_hook(fn)),
    ):
        fn = getattr(op, name)
        if fn is not None and (adapted := adapt(fn, codec)) is not fn:
            changes[name] = adapted
    content_type = codec.content_type
    if content_type and not any(key.lower() == "content-type" for key in op.headers):
        changes["headers"] = {**op.headers, "Content-Type": content_type}
    return attrs.evolve(op, **changes) if changes else op


def compile_workflow(workflow: FlowBuilder, name: str, *, warn: bool = True) -> graph.Graph:
    """Check ``workflow`` and turn it into an immutable :class:`~faasflow.graph.Graph`.

    Raises :class:`~faasflow.errors.DefinitionError` with the bare reason (the caller adds the
    flow name); emits :class:`FanInWarning` when ``warn``.
    """
    from faasflow.export import definition_hash

    compiler = _Compiler(warn)
    root = compiler.dag(workflow.dag(), "0", None, None, "dag 0", BYTES)
    built = graph.Graph(
        name=name,
        root=root,
        nodes=types.MappingProxyType({uid: compiler.nodes[uid] for uid in compiler.order}),
        dags=types.MappingProxyType({dag_id: compiler.dags[dag_id] for dag_id in compiler.where}),
        definition_hash="",
        on_failure=None if workflow._on_failure is None else adapt_hook(workflow._on_failure),
        finally_=None if workflow._finally is None else adapt_hook(workflow._finally),
    )
    return attrs.evolve(built, definition_hash=definition_hash(built))


def start_codec(workflow: FlowBuilder, compiled: graph.Graph) -> Codec:
    """The codec of the root DAG's start node: how ``faasflow.run`` encodes an input object."""
    root = workflow.dag()
    node = root._nodes.get(compiled.root.start)
    return (node.codec if node is not None else None) or root.codec or BYTES


def _edge_typos(spec: Dag, starts: list[str]) -> list[str]:
    """Nodes edge() created that look like misspellings of declared nodes, where one of the
    two is a start node, as sentences naming the edge and the likely meant node."""
    import difflib

    declared = [node_id for node_id in spec._nodes if node_id not in spec._by_edge]
    found = []
    for node_id, (source, target) in spec._by_edge.items():
        node = spec._nodes.get(node_id)
        if node is None or node.kind is not NodeKind.OPERATIONS or node.operations:
            continue
        for meant in difflib.get_close_matches(node_id, declared, n=1, cutoff=0.6):
            if node_id in starts or meant in starts:
                found.append(f"edge({source!r}, {target!r}) created node {node_id!r}, which "
                             f"no node() declares: did you mean {meant!r}?")
    return found


class _Compiler:
    def __init__(self, warn: bool) -> None:
        self.warn = warn
        self.nodes: dict[str, graph.GraphNode] = {}
        self.dags: dict[str, graph.GraphDag] = {}
        self.where: dict[str, str] = {}
        """Description of every DAG id, in the order the DAGs are reached (outer first)."""
        self.order: dict[str, None] = {}
        """Node unique ids, each before the nodes of its sub-DAGs."""
        self.stack: list[Dag] = []

    def dag(
        self, spec: Dag, dag_id: str, owner: str | None, branch: str | None, where: str,
        codec: Codec,
    ) -> graph.GraphDag:
        if any(spec is outer for outer in self.stack):
            raise DefinitionError(f"{where} includes itself (dag has recursive dependency)")
        if dag_id in self.dags:
            raise DefinitionError(
                f"{where} and {self.where[dag_id]} both get the id {dag_id!r}: rename a "
                "condition key so that ids stay unique"
            )
        if not spec._nodes:
            raise DefinitionError(
                f"{where} has no nodes (dag has no vertex set): add at least one node"
            )
        self.where[dag_id] = where
        self.stack.append(spec)
        try:
            return self._build(spec, dag_id, owner, branch, where, spec.codec or codec)
        finally:
            self.stack.pop()

    def _build(
        self, spec: Dag, dag_id: str, owner: str | None, branch: str | None, where: str,
        codec: Codec,
    ) -> graph.GraphDag:
        codecs = {node_id: node.codec or codec for node_id, node in spec._nodes.items()}
        edges = [
            graph.Edge(
                e.source,
                e.target,
                None if e.forwarder is None
                else adapt_data(e.forwarder, e.codec or codecs[e.source]),
                e.execution_only,
            )
            for e in spec._edges
        ]
        order = list(spec._nodes)
        in_edges: dict[str, list[graph.Edge]] = {node_id: [] for node_id in order}
        out_edges: dict[str, list[graph.Edge]] = {node_id: [] for node_id in order}
        for e in edges:
            out_edges[e.source].append(e)
            in_edges[e.target].append(e)
        starts = [node_id for node_id in order if not in_edges[node_id]]
        if len(starts) != 1:
            if not starts:  # edge() refuses cycles, so only a corrupted DAG gets here
                raise DefinitionError(f"{where} has no start node (cyclic dependency)")
            typos = _edge_typos(spec, starts)
            if typos:
                raise DefinitionError(
                    f"{where}: {'; '.join(typos)} (so it has {len(starts)} start nodes: "
                    f"{', '.join(starts)})"
                )
            raise DefinitionError(
                f"{where} has {len(starts)} start nodes ({', '.join(starts)}); only one start "
                "vertex is allowed: connect them with edges or join them behind one node"
            )
        ends = [node_id for node_id in order if not out_edges[node_id]]
        end = ends[0]
        if len(ends) > 1:
            end = f"end_{dag_id}"
            if end in spec._nodes:
                raise DefinitionError(
                    f"node id {end!r} in {where} is reserved for the virtual end node that "
                    f"joins its end nodes ({', '.join(ends)}): rename the node"
                )
            for source in ends:
                e = graph.Edge(source, end, None, True)
                edges.append(e)
                out_edges[source].append(e)
            in_edges[end] = [e for e in edges if e.target == end]
            out_edges[end] = []

        nodes: dict[str, graph.GraphNode] = {}
        for index, node_id in enumerate(order, start=1):
            nodes[node_id] = self._node(
                spec._nodes[node_id], index, dag_id, where, in_edges[node_id],
                out_edges[node_id], codecs[node_id],
            )
        if end not in nodes:
            nodes[end] = self._register(
                graph.GraphNode(
                    id=end,
                    index=len(order) + 1,
                    unique_id=self._reserve(f"{dag_id}_{len(order) + 1}_{end}", where),
                    dag_id=dag_id,
                    kind=NodeKind.END,
                    parents=tuple(e.source for e in in_edges[end]),
                ),
            )
        built = graph.GraphDag(
            id=dag_id,
            nodes=types.MappingProxyType(nodes),
            edges=tuple(edges),
            start=starts[0],
            end=end,
            owner=owner,
            branch=branch,
        )
        self.dags[dag_id] = built
        return built

    def _node(
        self,
        spec: Node,
        index: int,
        dag_id: str,
        where: str,
        in_edges: list[graph.Edge],
        out_edges: list[graph.Edge],
        codec: Codec,
    ) -> graph.GraphNode:
        label = f"node {spec.id!r} in {where}"
        unique_id = self._reserve(f"{dag_id}_{index}_{spec.id}", label)
        child_id = str(index) if dag_id == "0" else f"{dag_id}_{index}"
        data_in = [e for e in in_edges if not e.execution_only]
        if spec.aggregator is not None and not in_edges:
            raise DefinitionError(
                f"{label} has an aggregator but no incoming edges, so it would never be "
                "called: drop aggregator= or add edges into the node"
            )
        if spec.aggregator is None and len(in_edges) > 1 and data_in and self.warn:
            warnings.warn(
                f"{label} has {len(in_edges)} incoming edges "
                f"({', '.join(f'{e.source} -> {e.target}' for e in in_edges)}) and data on "
                f"{len(data_in)} of them but no aggregator: its input will be empty (the inputs "
                f"stay readable in context.node_input). Add an aggregator with "
                f"dag.node({spec.id!r}, aggregator=...) or mark the edges execution_only=True",
                FanInWarning,
                stacklevel=caller_level(),
            )
        data_out = [e for e in out_edges if not e.execution_only]
        if (
            spec.kind.is_dynamic
            and spec.sub_aggregator is None
            and not spec.dynamic_execution_only
            and data_out
        ):
            kind = "foreach" if spec.kind is NodeKind.FOREACH else "conditional"
            data_out_targets = [e.target for e in data_out]
            raise DefinitionError(
                f"{label} is a {kind} node without an aggregator, so its output is empty, "
                f"yet data edges pass it on to {', '.join(data_out_targets)}: add "
                "aggregator= to combine the branch results, or mark those edges "
                "execution_only=True"
            )
        sub_dag = foreach_dag = None
        conditional: dict[str, graph.GraphDag] = {}
        if spec.kind is NodeKind.SUBDAG:
            assert spec.sub_dag is not None
            sub_dag = self.dag(
                spec.sub_dag, child_id, unique_id, None, f"dag {child_id} (sub-DAG of {label})",
                codec,
            )
        elif spec.kind is NodeKind.FOREACH:
            assert spec.foreach_dag is not None
            foreach_dag = self.dag(
                spec.foreach_dag, child_id, unique_id, None,
                f"dag {child_id} (foreach branch of {label})", codec,
            )
        elif spec.kind is NodeKind.CONDITION:
            for key, branch in spec.conditional_dags.items():
                branch_id = f"{child_id}_{key}"
                conditional[key] = self.dag(
                    branch, branch_id, unique_id, key,
                    f"dag {branch_id} (branch {key!r} of conditional {label})", codec,
                )
        return self._register(
            graph.GraphNode(
                id=spec.id,
                index=index,
                unique_id=unique_id,
                dag_id=dag_id,
                kind=spec.kind,
                operations=tuple(adapt_operation(op, codec) for op in spec.operations),
                aggregator=_maybe(adapt_aggregator, spec.aggregator, codec),
                sub_dag=sub_dag,
                foreach=_maybe(adapt_foreach, spec.foreach, codec),
                foreach_dag=foreach_dag,
                condition=_maybe(adapt_condition, spec.condition, codec),
                conditional_dags=types.MappingProxyType(conditional),
                sub_aggregator=_maybe(adapt_aggregator, spec.sub_aggregator, codec),
                dynamic_execution_only=spec.dynamic_execution_only,
                parents=tuple(e.source for e in in_edges),
                children=tuple(e.target for e in out_edges),
            ),
        )

    def _reserve(self, unique_id: str, label: str) -> str:
        if unique_id in self.order:
            raise DefinitionError(
                f"{label} gets the unique id {unique_id!r}, already used by another node: "
                "rename a condition key or node id so that ids stay unique"
            )
        self.order[unique_id] = None
        return unique_id

    def _register(self, node: graph.GraphNode) -> graph.GraphNode:
        self.nodes[node.unique_id] = node
        return node

