"""Handing a done node's output on: successors, fan-in joins, dynamic branches, the end.

Every step here is repeatable: a redelivery of a done node runs it again from the node's
stored output. Fan-in arrivals and branch completions are recorded per member (the source's
execution id, the branch key), never as a bare counter, so a repeated hand-on cannot count an
arrival twice. In the normal case exactly one iteration forwards a joined child (the one whose
arrival completed the set); a repeated hand-on forwards it again, which the child's own marker
turns into a harmless duplicate.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from faasflow.errors import BackendError, CompareFailed, FlowFailure, KeyNotFound
from faasflow.graph import GraphNode, NodeKind

from . import endings
from .arrivals import add_member, arrive_folded, inlines, member_payload, members_of
from .ids import CALLBACK_HEADER, REQUEST_ID_HEADER, encode_key, exec_id
from .iteration import Core, Duplicate, Folded, Handed, Iteration, Stopped, as_bytes, describe, user
from .markers import joined_output, write_done
from .message import Branch, Message
from .retrying import retry_after

__all__ = ["decode_branches", "encode_branches", "hand_on", "select_branches", "send_branches"]


def hand_on(
    core: Core,
    it: Iteration,
    node: GraphNode,
    branches: tuple[Branch, ...],
    output: bytes,
    *,
    redo: bool = False,
) -> None:
    """After ``node`` produced ``output``: its successors, a branch join, or the end."""
    graph = it.graph
    while True:
        if node.children:
            _dispatch_children(core, it, node, branches, output, redo)
            return
        dag = graph.dags[node.dag_id]
        owner = graph.owner_of(dag)
        if owner is None:
            endings.finish(core, it, output)
            return
        if owner.kind is NodeKind.SUBDAG:
            node = owner
            continue
        joined, checked = _join(core, it, owner, branches, output, redo)
        if joined is None:
            if not checked:
                endings.clean_if_ended(it)
            return
        node, branches, output = owner, branches[:-1], joined


def _dispatch_children(
    core: Core, it: Iteration, node: GraphNode, branches: tuple[Branch, ...], output: bytes,
    redo: bool,
) -> None:
    dag = it.graph.dags[node.dag_id]
    source = exec_id(node.unique_id, branches) if branches else node.unique_id
    waiting = False
    settled = False  # the last write was followed by an arrival that saw the request running
    fold, it.fold = it.fold, None  # left for a node whose one successor is a fan-in
    for edge in dag.out_edges(node.id):
        child = dag.nodes[edge.target]
        fan_in = len(child.parents) > 1
        if fold is not None and (edge.forwarder is not None or not fan_in):
            _unfold(it, fold)  # its done marker before anything else it makes durable
            fold = None
        payload: bytes | None = None
        if not edge.execution_only:
            payload = output
            if edge.forwarder is not None:
                payload = user(edge.forwarder, output, f"forwarder {edge.source}->{edge.target}")
        edge_key = f"{source}--{child.unique_id}"
        if fan_in:
            inline = inlines(it.states, payload)
            # a payload the member cannot keep is durable before the arrival is recorded
            stored = (edge_key, payload) if payload is not None and not inline else None
            joined = exec_id(child.unique_id, branches) if branches else child.unique_id
            arrived, last, checked = _arrive(
                core, it, "arrived--" + joined, source, len(child.parents),
                payload if inline else None, stored, fold, it.offer,
            )
            if fold is not None and not it.taken:  # done now: handed on as before
                it.offer = Handed(fold.key, fold.done, fold.handed, fold.data_keys)
            fold = None
            if arrived < len(child.parents) or (not redo and not last):
                waiting = True
                settled = checked
                continue
            payload = None
        send(core, it, child.unique_id, branches, payload, node.id, edge_key)
        settled = False
    if fold is not None:
        _unfold(it, fold)
    if waiting and not settled:
        endings.clean_if_ended(it)


def _arrive(
    core: Core, it: Iteration, key: str, member: str, total: int, payload: bytes | None,
    stored: tuple[str, bytes] | None, fold: Folded | None, offer: Handed | None,
) -> tuple[int, bool, bool]:
    """Record an arrival at the set ``key`` (see ``arrivals.add_member``): (members so far,
    completed, state held), after storing ``stored`` (data key, payload). With ``fold``, the
    arriving node's done marker goes with it (or, when that cannot be, is written first as
    before); with ``offer``, its hand-over."""
    if stored is not None:
        try:
            it.data.set(*stored)
        except BackendError:
            if fold is not None:
                _unfold(it, fold)  # a redelivery hands on from the output, as before
            raise
    state = core.admitted.get(it.msg.request_id)
    if fold is not None:
        try:
            found = arrive_folded(it.states, key, member, total, state, fold, payload)
        except (Stopped, Duplicate, CompareFailed, KeyNotFound, BackendError):
            # whatever it wrote is recognised from the marker by what follows (as before)
            found = None
        if found is not None:
            if not found[1]:  # handed: nothing follows this arrival
                _taken(it, fold.data_keys)
            return found
        _unfold(it, fold)
        offer = Handed(fold.key, fold.done, fold.handed, fold.data_keys)
    arrived, last, checked, made = add_member(
        it.states, key, member, total, state, offer, payload
    )
    if offer is not None and made:
        _taken(it, offer.data_keys)
    return arrived, last, checked


def _taken(it: Iteration, data_keys: tuple[str, ...]) -> None:
    """The node is handed (its arrival made the move): what it kept or consumed goes."""
    it.offer, it.taken = None, True
    for key in data_keys:
        it.data.delete(key)


def _unfold(it: Iteration, fold: Folded) -> None:
    """Write the done marker the node left to its arrival (as ``markers.mark_done``)."""
    write_done(it, fold.key, fold.claim, fold.done)


def encode_branches(items: list[tuple[str, bytes]]) -> bytes:
    """A dynamic node's output as stored in its marker: its branches and their inputs."""
    return json.dumps([[k, base64.b64encode(v).decode()] for k, v in items]).encode()


def decode_branches(stored: bytes) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in json.loads(stored)]


def send_branches(
    core: Core, it: Iteration, node: GraphNode, branches: tuple[Branch, ...],
    items: list[tuple[str, bytes]],
) -> None:
    """Start every branch of a done dynamic node (again, on a repeated hand-on)."""
    eid = exec_id(node.unique_id, branches)
    total = len(items)
    if total > 1:
        it.states.set(f"{eid}-dynamic-branch-options", json.dumps([k for k, _ in items]))
    for key, value in items:
        start = node.branch_dag(key).start
        start_uid = node.branch_dag(key).nodes[start].unique_id
        send(
            core, it, start_uid, (*branches, (node.unique_id, key, total)), value, None,
            f"{encode_key(key)}--{eid}--{start_uid}",
        )


def select_branches(node: GraphNode, data: bytes) -> list[tuple[str, bytes]]:
    """The branches a foreach or conditional node runs, with each branch's input."""
    what = f"Dynamic Node {node.unique_id}"
    if node.kind is NodeKind.FOREACH:
        assert node.foreach is not None
        try:
            result = node.foreach(data)
            items = [(str(k), as_bytes(v, f"{what} foreach")) for k, v in dict(result).items()]
        except Exception as exc:
            raise FlowFailure(
                f"{what} foreach failed: {describe(exc)}", node=node.unique_id
            ) from exc
        kind = "foreach"
    else:
        assert node.condition is not None
        try:
            keys = list(node.condition(data) or ())
        except Exception as exc:
            raise FlowFailure(
                f"{what} condition failed: {describe(exc)}", node=node.unique_id
            ) from exc
        unknown = [k for k in keys if k not in node.conditional_dags]
        if unknown:
            raise FlowFailure(
                f"{what}: condition returned undeclared branch {unknown[0]!r}; declared: "
                f"{', '.join(node.conditional_dags)}",
                node=node.unique_id,
            )
        items = [(k, data) for k in dict.fromkeys(keys)]  # a key selected twice runs once
        kind = "condition"
    if not items:
        raise FlowFailure(
            f"{what}, failed to execute as {kind} returned no option", node=node.unique_id
        )
    if any(not k for k, _ in items):
        raise FlowFailure(f"{what}: {kind} returned an empty branch key", node=node.unique_id)
    return items


def _join(
    core: Core, it: Iteration, owner: GraphNode, branches: tuple[Branch, ...], output: bytes,
    redo: bool,
) -> tuple[bytes | None, bool]:
    """A branch of ``owner`` ended with ``output``; the one completing the set aggregates.

    With None (another branch completes the set): whether the arrival saw the request
    running (see ``add_member``)."""
    _, key, total = branches[-1]
    outer = branches[:-1]
    owner_eid = exec_id(owner.unique_id, outer)
    collect = not owner.dynamic_execution_only and owner.sub_aggregator is not None

    def result_key(k: str) -> str:
        return f"{encode_key(k)}--{owner_eid}--{owner.unique_id}"

    # the branch's hand-over goes with its arrival when that is the last step (the set is
    # not complete); withdrawn either way: after a completing arrival more follows
    offer, it.offer = it.offer, None
    fold, it.fold = it.fold, None
    if total > 1:
        inline = collect and inlines(it.states, output)
        stored = (result_key(key), output) if collect and not inline else None
        done, last, checked = _arrive(
            core, it, f"branches--{owner_eid}", encode_key(key), total,
            output if inline else None, stored, fold, offer,
        )
        if done < total or (not redo and not last):
            return None, checked
    elif fold is not None:
        _unfold(it, fold)
    if not collect:
        return b"", True
    aggregate = owner.sub_aggregator
    assert aggregate is not None

    def compute() -> bytes:
        if total > 1:
            keys = json.loads(it.states.get(f"{owner_eid}-dynamic-branch-options"))
            members = members_of(
                it.states, f"branches--{owner_eid}", [encode_key(k) for k in keys if k != key]
            )
            results = {
                k: output if k == key else _result(it, members.get(encode_key(k)), result_key(k))
                for k in keys
            }
        else:
            results = {key: output}
        it.view.node = owner_eid
        return user(aggregate, results, f"Dynamic Node {owner.unique_id} aggregator")

    return joined_output(it, owner_eid, compute), True


def _result(it: Iteration, member: str | None, data_key: str) -> bytes:
    """A branch's result: kept in its member's value, or stored under ``data_key``."""
    kept = member_payload(member)
    return it.data.get(data_key) if kept is None else kept


def send(
    core: Core,
    it: Iteration,
    target: str,
    branches: tuple[Branch, ...],
    payload: bytes | None,
    source: str | None,
    ref_key: str,
) -> None:
    msg = it.msg
    data_ref = None
    if payload is not None and len(payload) > core.settings.inline_limit:
        it.data.set(ref_key, payload)
        payload, data_ref = None, ref_key
    carrier: dict[str, str] = {}
    if not it.tracer.silent:  # a tracer that ignores events has no context to pass on
        it.tracer.inject(carrier)
    nxt = Message(
        msg.request_id, core.name, msg.definition_hash, target, branches, source, payload,
        data_ref, msg.query, msg.callback, carrier, msg.deadline,
    )
    rid = msg.request_id
    offer = None
    if core.sent is not None:
        # the sending node's hand-over goes with the message (taken here: at most one send)
        offer, it.offer = it.offer, None
        if offer is not None:
            it.taken = True
            core.pending[(rid, offer.key)] = offer.done
    local = core.local
    if local is not None:
        # it never leaves this process: handed on as it is, neither encoded nor signed (what
        # stores it, a pause, encodes and signs it then)
        _forward(core, target, rid, offer, None, local, rid, nxt, offer)
        return
    headers = {REQUEST_ID_HEADER: rid, "Content-Type": "application/json", **carrier}
    if msg.callback:
        headers[CALLBACK_HEADER] = msg.callback
    body = nxt.encode(core.key)
    if core.sent is not None:
        core.sent[id(body)] = (body, nxt, offer)
    _forward(core, target, rid, offer, body, core.invoker.forward, core.name, rid, body, headers)


def _forward(
    core: Core, target: str, rid: str, offer: Handed | None, body: bytes | None,
    forward: Callable[..., None], *args: Any,
) -> None:
    """``forward(*args)``, retried on BackendError within the backend retry budget; a failure
    takes the message (``body``) and the hand-over that went with it back."""
    budget = core.settings.backend_retry
    started = time.monotonic()
    try:
        try:  # the first try directly: only a failure needs the retry loop (and a closure)
            forward(*args)
        except BackendError as exc:
            if budget <= 0:
                raise
            retry_after(budget, started, lambda: forward(*args), exc)
    except BackendError:
        _unsent(core, rid, body, offer)
        raise  # transient and exhausted: the iteration answers 503 and may be redelivered
    except Exception as exc:
        _unsent(core, rid, body, offer)
        raise FlowFailure(
            f"Node({target}): failed to forward the iteration: {describe(exc)}",
            node=target,
            request_id=rid,
        ) from exc


def _unsent(core: Core, rid: str, body: bytes | None, offer: Handed | None) -> None:
    """A forward failed: its message is not in hand, nor is the hand-over that went with it."""
    if core.sent is not None and body is not None:
        core.sent.pop(id(body), None)
    if offer is not None:
        core.pending.pop((rid, offer.key), None)
