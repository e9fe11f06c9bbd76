"""Exports of a compiled flow: JSON-ready data, Graphviz DOT and Mermaid.

The JSON keeps faas-flow's ``?export-dag=true`` field names (so faas-flow Tower tooling reads
it), fills in what faas-flow left empty (``in-degree``/``out-degree``) and adds fields of its
own (edges with their forwarders, node kinds, callables, operation details). The schema is
described in ``docs/export.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from faasflow.graph import Edge, Graph, GraphDag, GraphNode, NodeKind
from faasflow.operations import Apply, Modify, Operation, Request, Retry, callable_name

__all__ = [
    "FORMAT",
    "definition_hash",
    "export_definition",
    "export_graph",
    "invalid_export",
    "to_dot",
    "to_mermaid",
]

#: Value of the root's ``format`` field; bumped when the schema changes incompatibly.
FORMAT = "faasflow-export/1"

JSON = dict[str, Any]


def _name(fn: Callable[..., object] | None) -> str | None:
    return None if fn is None else callable_name(fn)


def _statuses(statuses: frozenset[int]) -> list[str]:
    """``[429, 500..599]`` as ``["429", "500-599"]``."""
    ranges: list[str] = []
    ordered = sorted(statuses)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ranges


def _retry(retry: Retry | None) -> JSON | None:
    if retry is None:
        return None
    return {
        "attempts": retry.attempts,
        "initial-backoff": retry.initial_backoff,
        "multiplier": retry.multiplier,
        "max-backoff": retry.max_backoff,
        "jitter": retry.jitter,
        "retry-on": _statuses(retry.retry_on),
        "connection-errors": retry.connection_errors,
        "timeouts": retry.timeouts,
    }


def _operation(op: Operation) -> JSON:
    out: JSON = {
        "name": op.id,
        "properties": {str(k): [str(v) for v in values] for k, values in op.properties().items()},
    }
    if isinstance(op, (Apply, Request)):
        if isinstance(op, Apply):
            out["kind"] = "function"
            out["function"] = op.function
        else:
            out["kind"] = "http-request"
            out["url"] = op.url
        # Header values and query values may hold credentials: only their names are exported.
        out["method"] = op.method
        out["headers"] = list(op.headers)
        out["query"] = list(op.query)
        out["timeout"] = op.timeout
        out["retry"] = _retry(op.retry)
        out["on-failure"] = _name(op.on_failure)
        out["request-handler"] = _name(op.request_handler)
        out["response-handler"] = _name(op.response_handler)
    elif isinstance(op, Modify):
        out["kind"] = "modifier"
        out["modifier"] = callable_name(op.fn)
    else:
        out["kind"] = "custom"
        out["class"] = callable_name(type(op))
    return out


def _node(node: GraphNode, out_edges: list[Edge]) -> JSON:
    out: JSON = {
        "id": node.id,
        "node-index": node.index,
        "unique-id": node.unique_id,
        "kind": node.kind.value,
        "is-dynamic": node.is_dynamic,
        "is-condition": node.kind is NodeKind.CONDITION,
        "is-foreach": node.kind is NodeKind.FOREACH,
        "has-aggregator": node.aggregator is not None,
        "has-sub-aggregator": node.sub_aggregator is not None,
        "has-subdag": node.kind is NodeKind.SUBDAG,
        "in-degree": len(node.parents),
        "out-degree": len(node.children),
        "dynamic-exec-only": node.dynamic_execution_only,
        "aggregator": _name(node.aggregator),
        "sub-aggregator": _name(node.sub_aggregator),
        "operations": [_operation(op) for op in node.operations],
        "parents": list(node.parents),
        "childrens": list(node.children),
        "child-exec-only": {e.target: e.execution_only for e in out_edges},
    }
    if node.kind is NodeKind.END:
        # faas-flow's virtual end vertex ran a pass-through operation named "end".
        out["operations"] = [{"name": "end", "properties": {}, "kind": "end"}]
    if node.sub_dag is not None:
        out["sub-dag"] = _dag(node.sub_dag)
    if node.foreach_dag is not None:
        out["foreach"] = _name(node.foreach)
        out["foreach-dag"] = _dag(node.foreach_dag)
    if node.kind is NodeKind.CONDITION:
        out["condition"] = _name(node.condition)
        out["conditions"] = list(node.conditional_dags)
        out["conditional-dags"] = {k: _dag(d) for k, d in node.conditional_dags.items()}
    return out


def _nested(node: GraphNode) -> list[GraphDag]:
    dags = [d for d in (node.sub_dag, node.foreach_dag) if d is not None]
    return dags + list(node.conditional_dags.values())


def _has_branch(dag: GraphDag) -> bool:
    return any(
        len(n.parents) > 1 or len(n.children) > 1 or n.kind in _BRANCHING or
        any(_has_branch(d) for d in _nested(n))
        for n in dag.nodes.values()
    )


_BRANCHING = (NodeKind.SUBDAG, NodeKind.FOREACH, NodeKind.CONDITION)


def _has_edge(dag: GraphDag) -> bool:
    return bool(dag.edges) or any(
        n.is_dynamic or any(_has_edge(d) for d in _nested(n)) for n in dag.nodes.values()
    )


def _execution_only(dag: GraphDag) -> bool:
    """No data moves through the store: every edge and dynamic node is execution-only."""
    return all(e.execution_only for e in dag.edges) and all(
        (not n.is_dynamic or n.dynamic_execution_only)
        and all(_execution_only(d) for d in _nested(n))
        for n in dag.nodes.values()
    )


def _dag(dag: GraphDag) -> JSON:
    out_edges: dict[str, list[Edge]] = {node_id: [] for node_id in dag.nodes}
    for e in dag.edges:
        out_edges[e.source].append(e)
    return {
        "id": dag.id,
        "start-node": dag.start,
        "end-node": dag.end,
        "has-branch": _has_branch(dag),
        "has-edge": _has_edge(dag),
        "exec-only-dag": _execution_only(dag),
        "owner": dag.owner,
        "branch": dag.branch,
        "nodes": {node_id: _node(node, out_edges[node_id]) for node_id, node in dag.nodes.items()},
        "edges": [
            {
                "from": e.source,
                "to": e.target,
                "execution-only": e.execution_only,
                "forwarder": _name(e.forwarder),
            }
            for e in dag.edges
        ],
        "is-valid": True,
    }


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _export(graph: Graph) -> JSON:
    out = _dag(graph.root)
    out["name"] = graph.name
    out["format"] = FORMAT
    out["has-failure-handler"] = graph.on_failure is not None
    out["has-finally-handler"] = graph.finally_ is not None
    out["on-failure"] = _name(graph.on_failure)
    out["finally"] = _name(graph.finally_)
    return out


def definition_hash(graph: Graph) -> str:
    """sha256 (hex) of the canonical export: the structure, operations and the
    ``module.qualname`` of every callable; equal across processes for the same definition."""
    return hashlib.sha256(_canonical(_export(graph))).hexdigest()


def export_graph(graph: Graph) -> JSON:
    """The whole graph as JSON-ready data (see ``docs/export.md``)."""
    out = _export(graph)
    out["definition-hash"] = graph.definition_hash
    return out


def invalid_export(name: str, error: str) -> JSON:
    """What a flow whose definition fails exports: ``is-valid`` false and the reason."""
    return {
        "id": "0",
        "start-node": "",
        "end-node": "",
        "has-branch": False,
        "has-edge": False,
        "exec-only-dag": False,
        "owner": None,
        "branch": None,
        "nodes": {},
        "edges": [],
        "is-valid": False,
        "validation-error": error,
        "name": name,
        "format": FORMAT,
    }


def export_definition(define: Callable[..., object], name: str = "flow") -> JSON:
    """Compile ``define`` and export it; a definition error gives :func:`invalid_export`
    instead of raising (what the runtime answers to ``?export-dag=true``)."""
    from faasflow.errors import DefinitionError
    from faasflow.flow import Flow

    try:
        return Flow(define, name=name).export()
    except DefinitionError as exc:
        return invalid_export(name, str(exc))


# --- diagrams ------------------------------------------------------------------------------
# Both renderers draw the same picture: one box per operation inside a cluster per node, a
# diamond and a join vertex around each foreach/conditional node with a cluster per branch,
# sub-DAGs nested in their node's cluster; execution-only edges are dotted.


@attrs.define
class _Vertex:
    key: str
    label: str
    shape: str  # "operation" | "empty" | "end" | "decision" | "join"


@attrs.define
class _Cluster:
    key: str
    label: str
    items: list[_Vertex | _Cluster] = attrs.field(factory=list)


@attrs.define
class _Link:
    source: str
    target: str
    label: str = ""
    dotted: bool = False


def _short(fn: Callable[..., object] | None) -> str:
    """The callable's own name for labels (nothing for lambdas)."""
    name = "" if fn is None else callable_name(fn).rsplit(".", 1)[-1]
    return "" if name == "<lambda>" else name


def _op_label(op: Operation) -> str:
    if isinstance(op, Apply):
        return op.function
    if isinstance(op, Request):
        return f"{op.method or 'request'} {op.url}"
    if isinstance(op, Modify):
        return f"modifier {_short(op.fn)}".strip()
    return op.id


class _Layout:
    def __init__(self, graph: Graph) -> None:
        self.links: list[_Link] = []
        self.root = _Cluster("flow", graph.name)
        self.root.items.extend(self.dag(graph.root))

    def dag(self, dag: GraphDag) -> list[_Vertex | _Cluster]:
        items: list[_Vertex | _Cluster] = []
        ends: dict[str, tuple[str, str]] = {}
        for node in dag.nodes.values():
            item, entry, exit_ = self.node(node)
            items.append(item)
            ends[node.id] = (entry, exit_)
        for e in dag.edges:
            label = _short(e.forwarder)
            self.links.append(
                _Link(ends[e.source][1], ends[e.target][0], label, e.execution_only)
            )
        self.ends = ends
        return items

    def span(self, dag: GraphDag) -> tuple[list[_Vertex | _Cluster], str, str]:
        items = self.dag(dag)
        ends = self.ends
        return items, ends[dag.start][0], ends[dag.end][1]

    def node(self, node: GraphNode) -> tuple[_Vertex | _Cluster, str, str]:
        uid = node.unique_id
        if node.kind is NodeKind.END:
            vertex = _Vertex(uid, "end", "end")
            return vertex, uid, uid
        label = node.id
        if node.aggregator is not None:
            label += f"\naggregator {_short(node.aggregator)}".rstrip()
        cluster = _Cluster(f"cluster_{uid}", label)
        if node.kind is NodeKind.OPERATIONS:
            if not node.operations:
                cluster.items.append(_Vertex(uid, "(no operations)", "empty"))
                return cluster, uid, uid
            keys = [f"{uid}.{i}" for i in range(1, len(node.operations) + 1)]
            for key, op in zip(keys, node.operations, strict=True):
                cluster.items.append(_Vertex(key, _op_label(op), "operation"))
            self.links.extend(_Link(a, b) for a, b in itertools.pairwise(keys))
            return cluster, keys[0], keys[-1]
        if node.kind is NodeKind.SUBDAG:
            assert node.sub_dag is not None
            cluster.label += " (sub-dag)"
            items, entry, exit_ = self.span(node.sub_dag)
            cluster.items.extend(items)
            return cluster, entry, exit_
        decision, join = f"{uid}.decision", f"{uid}.join"
        foreach = node.kind is NodeKind.FOREACH
        decision_label = (
            f"foreach {_short(node.foreach)}" if foreach else f"condition {_short(node.condition)}"
        )
        cluster.items.append(_Vertex(decision, decision_label.strip(), "decision"))
        branches: Mapping[str, GraphDag] = node.conditional_dags
        if node.foreach_dag is not None:
            branches = {"": node.foreach_dag}
        for key, branch in branches.items():
            items, entry, exit_ = self.span(branch)
            cluster.items.append(_Cluster(f"cluster_{branch.id}", key or "foreach", items))
            dotted = node.dynamic_execution_only
            self.links.append(_Link(decision, entry, key, dotted))
            self.links.append(_Link(exit_, join, "", dotted))
        join_label = (
            f"aggregator {_short(node.sub_aggregator)}" if node.sub_aggregator else "join"
        )
        cluster.items.append(_Vertex(join, join_label.strip(), "join"))
        return cluster, decision, join


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_DOT_SHAPES = {
    "operation": 'shape=box fillcolor="#68b8e2"',
    "empty": 'shape=box style="rounded,dashed" fillcolor="#f2f2f2"',
    "end": 'shape=invhouse fillcolor="#f5b8c4"',
    "decision": 'shape=diamond fillcolor="#f9af4d"',
    "join": 'shape=invhouse fillcolor="#f5b8c4"',
}


def to_dot(graph: Graph) -> str:
    """Graphviz DOT of the graph (render with ``dot -Tsvg``)."""
    layout = _Layout(graph)
    lines = [
        "digraph depgraph {",
        "    rankdir=TB;",
        "    compound=true;",
        '    fontname="Courier New";',
        '    fontcolor="#44413b";',
        f"    label={_dot_quote(graph.name)};",
        '    node [style=filled fontname="Courier" fontcolor=black];',
        '    edge [color="#152730" fontname="Courier"];',
    ]

    def emit(item: _Vertex | _Cluster, depth: int) -> None:
        pad = "    " * depth
        if isinstance(item, _Vertex):
            lines.append(
                f"{pad}{_dot_quote(item.key)} [label={_dot_quote(item.label)} "
                f"{_DOT_SHAPES[item.shape]}];"
            )
            return
        lines.append(f"{pad}subgraph {_dot_quote(item.key)} {{")
        lines.append(f'{pad}    label={_dot_quote(item.label)}; style=rounded; color="#9e9e9e";')
        for child in item.items:
            emit(child, depth + 1)
        lines.append(f"{pad}}}")

    for item in layout.root.items:
        emit(item, 1)
    for link in layout.links:
        attributes = [f"style={'dotted' if link.dotted else 'solid'}"]
        if link.label:
            attributes.append(f"label={_dot_quote(link.label)}")
        lines.append(
            f"    {_dot_quote(link.source)} -> {_dot_quote(link.target)} "
            f"[{' '.join(attributes)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    escaped = text.replace("&", "#amp;").replace('"', "#quot;").replace("\n", "<br/>")
    return f'"{escaped}"'


_MERMAID_SHAPES = {
    "operation": ("[", "]"),
    "empty": ("(", ")"),
    "end": ("[[", "]]"),
    "decision": ("{", "}"),
    "join": ("[/", "\\]"),
}


def to_mermaid(graph: Graph) -> str:
    """Mermaid flowchart of the graph."""
    layout = _Layout(graph)
    ids: dict[str, str] = {}

    def ident(key: str) -> str:
        # Mermaid ids must be plain words: number every vertex and cluster.
        return ids.setdefault(key, f"v{len(ids) + 1}")

    lines = ["flowchart TD"]

    def emit(item: _Vertex | _Cluster, depth: int) -> None:
        pad = "    " * depth
        if isinstance(item, _Vertex):
            left, right = _MERMAID_SHAPES[item.shape]
            lines.append(f"{pad}{ident(item.key)}{left}{_mermaid_text(item.label)}{right}")
            return
        lines.append(f"{pad}subgraph {ident(item.key)} [{_mermaid_text(item.label)}]")
        for child in item.items:
            emit(child, depth + 1)
        lines.append(f"{pad}end")

    for item in layout.root.items:
        emit(item, 1)
    for link in layout.links:
        arrow = "-.->" if link.dotted else "-->"
        label = f"|{_mermaid_text(link.label)}|" if link.label else ""
        lines.append(f"    {ident(link.source)} {arrow}{label} {ident(link.target)}")
    return "\n".join(lines) + "\n"
