"""Which step of a node's hand-on writes its done marker and its move to handed.

A node's marker moves claimed -> done -> handed (``markers``). Where the store and the
hand-on allow it, one of those writes goes with a later step instead of a store call of its
own: the successor's claim (:func:`chains`, :func:`offers`) or the arrival at a fan-in or
branch join (:func:`folds`). Each decision here only moves a write; what is written, and the
fallback when the later step does not happen, stay the same.
"""

from __future__ import annotations

from faasflow.graph import GraphNode, NodeKind

from . import markers
from .capture import capture_node
from .coordination import hand_on
from .ids import CLAIM
from .iteration import Core, Handed, Iteration

__all__ = ["chain_on", "chains", "folds", "offers"]


def chains(core: Core, it: Iteration, node: GraphNode) -> bool:
    """Whether the node's done marker may go with its hand-over, in its one successor's claim:
    a successor that is handed on in this process as a message (``Core.local``: never
    encoded, never queued durably), on a store with atomic transactions, through an edge
    without a forwarder, and that is a node of operations (not a fan-in, which has its own
    fold, nor a dynamic node). A forward that leaves the process (``Core.sent`` alone, or no
    in-process invoker: ``faasflow up``'s gateway queue) writes the done marker first."""
    if (core.local is None or core.sent is None or len(node.children) != 1
            or not it.states.atomic_transactions):
        return False
    dag = it.graph.dags[node.dag_id]
    child = dag.nodes[node.children[0]]
    if len(child.parents) != 1 or child.kind is not NodeKind.OPERATIONS:
        return False  # a fan-in first: each of its branches asks
    edges = dag.out_edges(node.id)
    return len(edges) == 1 and edges[0].forwarder is None


def chain_on(
    core: Core, it: Iteration, node: GraphNode, offer: Handed, data: bytes, output: bytes
) -> None:
    """Hand the node's output on to its one successor with the node's move from its claim
    straight to handed (:func:`chains`, ``markers.offer_folded``): the successor's claim makes
    it, so the step is one store commit. The claim stays until then; a copy of this
    iteration finds the move in hand (``Core.pending``) and is a duplicate. Anything that
    keeps the message from being handed on writes the done marker as without the fold before
    the error goes on: a redelivery then hands on from the output, never runs the node again."""
    it.offer = offer
    try:
        if core.settings.capture == "all":
            capture_node(core, it.msg.request_id, offer.key[len(CLAIM):], data, output)
        hand_on(core, it, node, it.msg.branches, output)
    except Exception:
        it.offer = None
        markers.write_unfolded(it, offer, output)
        raise
    it.offer = None
    if not it.taken:  # handed on otherwise than as a message (``coordination.send`` takes it)
        handed = markers.write_unfolded(it, offer, output)
        if not it.ended:
            markers.hand_over(it.states, it.data, handed)


def folds(it: Iteration, node: GraphNode) -> bool:
    """Whether the node's done marker may be left to its arrival: at its one successor's
    fan-in (an edge without a forwarder) or at its foreach or conditional join, on a store
    with atomic transactions (the arrival moves the marker in the same step)."""
    states = it.states
    if not (states.atomic_transactions or states.locked_transactions):
        return False
    dag = it.graph.dags[node.dag_id]
    if node.children:
        edges = dag.out_edges(node.id)
        return (len(edges) == 1 and edges[0].forwarder is None
                and len(dag.nodes[edges[0].target].parents) > 1)
    owner = it.graph.owner_of(dag)
    return owner is not None and owner.is_dynamic and it.msg.branches[-1][2] > 1


def offers(core: Core, it: Iteration, node: GraphNode) -> bool:
    """Whether the node's hand-over may be left to the one last step of its hand-on: the
    claim of its one successor, forwarded in-process, or its arrival at its one successor's
    fan-in or at its foreach or conditional join."""
    if not it.states.atomic_transactions:
        return False
    dag = it.graph.dags[node.dag_id]
    if len(node.children) == 1:
        return core.sent is not None or len(dag.nodes[node.children[0]].parents) > 1
    owner = it.graph.owner_of(dag)
    return not node.children and owner is not None and owner.is_dynamic
