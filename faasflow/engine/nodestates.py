"""The state of every node of a request, derived from what the engine writes anyway.

No store write is added for it: a node instance's marker ``node--<eid>`` (see ``markers``) is
``claimed`` while a delivery runs it (holding the delivery attempt and its start time), then
``done`` and ``handed``; an iteration held by a pause is listed in the request state. Reading a
record scans the markers once (and, while the request is paused, reads each held iteration).

States: ``pending`` (not reached yet, or never reached when the request ended), ``running``,
``held`` (paused before it ran), ``succeeded``, ``failed``, ``skipped`` (a conditional branch
not taken, or any node a successful request did not need) and ``stopped`` (it was running when
the request ended because of a failure elsewhere or a stop).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from faasflow.graph import Graph, GraphNode, NodeKind

__all__ = ["STATES", "held_instances", "instance_node", "instance_states", "node_states",
           "runnable_nodes"]

STATES = ("pending", "running", "held", "succeeded", "failed", "skipped", "stopped")
#: When instances of one node (in foreach branches) differ, the node shows the first of these.
_PRECEDENCE = ("failed", "running", "held", "stopped", "pending", "succeeded", "skipped")


def instance_node(eid: str) -> str:
    """The unique id of the node an execution id is an instance of (its last segment)."""
    cut = eid.rfind("--")
    return eid if cut < 0 else eid[cut + 2 :]


def _instance_state(doc: Mapping[str, Any], ended: str | None, failed_node: str | None,
                    node: str) -> str:
    phase = doc.get("p")
    if phase in ("done", "handed"):
        return "succeeded"
    if ended is None:
        return "running"
    if ended == "failure" and node == failed_node:
        return "failed"
    return "stopped"


def node_states(
    graph: Graph | None,
    marks: Mapping[str, Mapping[str, Any]],
    *,
    ended: str | None,
    failed_node: str | None = None,
    ended_at: float | None = None,
    held: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """Per node unique id: ``state`` and, for a node with several instances (inside a
    foreach), ``counts`` per state; a single running or failed instance shows its ``attempt``
    and ``start`` (and ``end`` once failed).

    ``marks`` are the markers by execution id, ``ended`` the request's terminal status (None
    while it runs), ``held`` the execution ids of iterations held by a pause. Without the
    graph (a per-request definition that cannot be rebuilt) only the nodes that ran show.
    """
    out = instance_states(marks, ended=ended, failed_node=failed_node, ended_at=ended_at,
                          held=held)
    if graph is None:
        return out
    for unreached in runnable_nodes(graph):
        if unreached.unique_id not in out:
            out[unreached.unique_id] = {"state": _unreached(graph, unreached, out, ended)}
    return dict(sorted(out.items(), key=lambda item: _order(graph, item[0])))


def instance_states(
    marks: Mapping[str, Mapping[str, Any]],
    *,
    ended: str | None,
    failed_node: str | None = None,
    ended_at: float | None = None,
    held: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """The states of the nodes that have an instance (see :func:`node_states`), in the order
    of their first marker."""
    instances: dict[str, list[tuple[str, Mapping[str, Any] | None]]] = {}
    for eid, doc in marks.items():
        node = instance_node(eid)
        instances.setdefault(node, []).append((_instance_state(doc, ended, failed_node, node),
                                               doc))
    for eid in held:
        node = instance_node(eid)
        if eid not in marks:
            instances.setdefault(node, []).append(("held", None))
    if failed_node and failed_node not in instances and ended == "failure":
        instances[failed_node] = [("failed", None)]  # failed before its claim (its input)
    out: dict[str, dict[str, Any]] = {}
    for node, found in instances.items():
        if len(found) == 1:
            state, mark = found[0]
            entry: dict[str, Any] = {"state": state}
            if mark is not None and state in ("running", "failed", "stopped"):
                entry["attempt"] = int(mark.get("att", 1))
                entry["start"] = mark.get("start")
                if state != "running":
                    entry["end"] = ended_at
        else:
            counts: dict[str, int] = {}
            for s, _ in found:
                counts[s] = counts.get(s, 0) + 1
            entry = {"state": min(counts, key=_PRECEDENCE.index), "counts": counts}
        out[node] = entry
    return out


def runnable_nodes(graph: Graph) -> list[GraphNode]:
    """The nodes that run: a static sub-DAG shows as its own nodes, a DAG's end is no node."""
    return [n for n in graph.nodes.values()
            if n.kind is not NodeKind.END and (n.kind is not NodeKind.SUBDAG)]


def _order(graph: Graph, unique_id: str) -> tuple[int, str]:
    node = graph.nodes.get(unique_id)
    return (0 if node is None else 1, unique_id)


def _unreached(graph: Graph, node: GraphNode, seen: Mapping[str, Mapping[str, Any]],
               ended: str | None) -> str:
    """A node with no instance: skipped when its conditional branch was not taken (or the
    request succeeded without it), else pending."""
    if ended == "success":
        return "skipped"
    dag = graph.dags.get(node.dag_id)
    while dag is not None and dag.owner is not None:
        owner = graph.nodes.get(dag.owner)
        if owner is None:
            break
        if owner.condition is not None and dag.branch is not None:
            chosen = seen.get(owner.unique_id, {}).get("state") == "succeeded"
            if chosen and not any(n.unique_id in seen for n in dag.nodes.values()):
                return "skipped"  # the condition chose, and no node of this branch ran
        dag = graph.dags.get(owner.dag_id)
    return "pending"


def held_instances(bodies: Iterable[bytes]) -> list[str]:
    """The execution ids of held iterations, from their message bodies (unverified: shown
    only, never run)."""
    from .ids import exec_id

    out = []
    for body in bodies:
        try:
            doc = json.loads(body)
            branches = tuple((b[0], b[1], int(b[2])) for b in doc.get("branches") or ())
            out.append(exec_id(str(doc["node"]), branches))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return out
