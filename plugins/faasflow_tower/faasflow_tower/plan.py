"""A flow's plan: the vertices, clusters and edges to draw, read from ``?export-dag=true``.

Every node of the export becomes a vertex keyed by its ``unique-id`` (the key the request
record uses for the node's runs). A node that owns a nested DAG (foreach, condition, sub-DAG)
stays a vertex and its nested DAG becomes a cluster: an edge runs from the owner to each start
of the nested DAG and from each of its ends to the owner's children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Cluster", "Plan", "Vertex"]


@attrs.frozen
class Vertex:
    key: str
    """The node's unique id, as the request record names its runs."""
    label: str
    kind: str
    detail: str = ""
    """What the node does, in a few words (its functions or modifiers)."""
    cluster: str | None = None
    """The key of the innermost cluster holding it."""
    functions: tuple[str, ...] = ()
    """The gateway functions the node calls (whose log lines can be laid at its door)."""


@attrs.frozen
class Cluster:
    key: str
    label: str
    kind: str
    """``foreach``, ``condition`` or ``subdag``."""
    parent: str | None = None
    branch: str | None = None
    """The condition's branch name, for a conditional DAG."""


@attrs.frozen
class Plan:
    name: str
    definition_hash: str
    vertices: tuple[Vertex, ...]
    clusters: tuple[Cluster, ...]
    edges: tuple[tuple[str, str, str], ...]
    """(from key, to key, label)."""
    valid: bool = True
    error: str = ""

    @property
    def keys(self) -> list[str]:
        return [v.key for v in self.vertices]

    def predecessors(self) -> dict[str, set[str]]:
        preds: dict[str, set[str]] = {v.key: set() for v in self.vertices}
        for source, target, _ in self.edges:
            preds.setdefault(target, set()).add(source)
        return preds

    def successors(self) -> dict[str, set[str]]:
        succ: dict[str, set[str]] = {v.key: set() for v in self.vertices}
        for source, target, _ in self.edges:
            succ.setdefault(source, set()).add(target)
        return succ

    def in_foreach(self, key: str) -> bool:
        """True when the vertex runs once per foreach branch."""
        clusters = {c.key: c for c in self.clusters}
        vertex = next((v for v in self.vertices if v.key == key), None)
        current = clusters.get(vertex.cluster) if vertex and vertex.cluster else None
        while current is not None:
            if current.kind == "foreach":
                return True
            current = clusters.get(current.parent) if current.parent else None
        return False

    @classmethod
    def from_export(cls, doc: Mapping[str, Any]) -> Plan:
        builder = _Builder()
        if doc.get("nodes"):
            builder.dag(doc, None)
        return cls(
            name=str(doc.get("name") or ""),
            definition_hash=str(doc.get("definition-hash") or ""),
            vertices=tuple(builder.vertices),
            clusters=tuple(builder.clusters),
            edges=tuple(builder.edges),
            valid=bool(doc.get("is-valid", True)),
            error=str(doc.get("error") or ""),
        )


def _detail(node: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for op in node.get("operations") or ():
        kind = op.get("kind")
        if kind == "function":
            parts.append(f"fn {op.get('function') or op.get('name')}")
        elif kind == "http-request" or op.get("url"):
            parts.append(f"{op.get('method') or 'POST'} {op.get('url') or op.get('name')}")
        elif kind == "modifier":
            parts.append("modifier")
        elif kind and kind != "end":
            parts.append(str(kind))
    if node.get("aggregator") or node.get("sub-aggregator"):
        parts.append("aggregator")
    return ", ".join(parts)


def _functions(node: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(op.get("function") or op.get("name")) for op in
                 node.get("operations") or () if op.get("kind") == "function")


@attrs.define
class _Builder:
    vertices: list[Vertex] = attrs.field(factory=list)
    clusters: list[Cluster] = attrs.field(factory=list)
    edges: list[tuple[str, str, str]] = attrs.field(factory=list)

    def dag(self, dag: Mapping[str, Any], cluster: str | None) -> tuple[list[str], list[str]]:
        """Add a DAG's vertices; return the keys where it starts and where it ends."""
        nodes: Mapping[str, Mapping[str, Any]] = dag.get("nodes") or {}
        key_of = {node_id: str(node.get("unique-id") or node_id) for node_id, node in
                  nodes.items()}
        exits: dict[str, list[str]] = {}
        for node_id, node in nodes.items():
            key = key_of[node_id]
            kind = str(node.get("kind") or "operations")
            self.vertices.append(Vertex(key, str(node_id), kind, _detail(node), cluster,
                                        _functions(node)))
            exits[node_id] = [key]
            nested: list[tuple[str, str, Mapping[str, Any]]] = []
            if isinstance(node.get("foreach-dag"), Mapping):
                nested.append(("foreach", "", node["foreach-dag"]))
            if isinstance(node.get("sub-dag"), Mapping):
                nested.append(("subdag", "", node["sub-dag"]))
            for branch, sub in (node.get("conditional-dags") or {}).items():
                nested.append(("condition", str(branch), sub))
            if nested:
                ends: list[str] = []
                for nested_kind, branch, sub in nested:
                    ckey = f"{key}/{branch}" if branch else key
                    label = f"{node_id} [{branch}]" if branch else f"{node_id} ({nested_kind})"
                    self.clusters.append(Cluster(ckey, label, nested_kind, cluster, branch or None))
                    starts, sub_ends = self.dag(sub, ckey)
                    self.edges.extend((key, s, branch) for s in starts)
                    ends.extend(sub_ends)
                exits[node_id] = ends or [key]
        for edge in dag.get("edges") or ():
            source, target = edge.get("from"), edge.get("to")
            if source in key_of and target in key_of:
                self.edges.extend((end, key_of[target], "") for end in exits[source])
        targets = {e.get("to") for e in dag.get("edges") or ()}
        sources = {e.get("from") for e in dag.get("edges") or ()}
        start = dag.get("start-node")
        starts = [key_of[start]] if start in key_of else \
            [key_of[n] for n in nodes if n not in targets]
        ends = [k for n in nodes if n not in sources for k in exits[n]]
        return starts, ends
