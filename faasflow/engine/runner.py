"""Running one iteration: admit it, claim its node, compute the input, run the operations,
mark the node done and hand its output on.

The order is what makes a redelivery safe at any point: the node's marker is checked and
claimed before anything runs (a done node is never run again: its hand-on is re-done from the
stored output), the output is durable before the node counts as done, and the inputs it
consumed are deleted only once everything it fed is durable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from faasflow.context import RequestView, enter_view, leave_view
from faasflow.errors import BackendError, FlowFailure, KeyNotFound, RequestNotActive
from faasflow.graph import GraphNode, NodeKind
from faasflow.interfaces import Tracer
from faasflow.operations import Call, Modify, Operation

from . import arrivals, endings, handing, markers
from .capture import capture_node
from .coordination import decode_branches, encode_branches, hand_on, select_branches, send_branches
from .ids import CLAIM, exec_id
from .iteration import (
    Core,
    Duplicate,
    Handed,
    Iteration,
    Stopped,
    as_bytes,
    describe,
    node_attributes,
    user,
)
from .message import Message
from .redrive import keep_iteration, keeps
from .state import FINISHED, PAUSED, RUNNING, RequestControl, RequestState

__all__ = ["DUPLICATE", "PARKED", "RAN", "iterate", "run_operations"]

log = logging.getLogger("faasflow.engine")

#: ``GraphNode.is_dynamic`` without its two property calls (every node asks).
_DYNAMIC = (NodeKind.FOREACH, NodeKind.CONDITION)

RAN = "ran"
DUPLICATE = "duplicate"
PARKED = "parked"


def iterate(
    core: Core,
    msg: Message,
    body: bytes,
    *,
    first: bool,
    carrier: dict[str, str] | None = None,
    token: str,
    attempt: int = 1,
    handed: Handed | None = None,
) -> str:
    """Run one iteration; RAN, DUPLICATE (another delivery did or does the work) or PARKED.

    ``handed``: the predecessor's move to handed, when it handed this iteration on in this
    process (written with this iteration's claim, or on its own if it gets none).

    Raises BackendError when a store or the gateway stayed unreachable (the delivery should
    be retried) and RequestNotActive when the request has ended."""
    rid = msg.request_id
    setup = core.setups.of(rid, msg.query)
    graph, control = setup.graph, setup.control
    states, store = control.states, control.data
    tracer = setup.tracer or core.tracer.scoped(core.name, rid)
    view = RequestView(core.name, rid, setup.parsed, data_store=store)
    it = Iteration(msg, graph, states, store, tracer, control, view, token, attempt,
                   handed=handed)
    silent = tracer.silent
    if first:
        tracer.request_start(carrier or {})
    elif not silent:
        tracer.request_continue(carrier or msg.trace)
    try:
        if not _admit(core, it, body, first, assume=True):
            return PARKED
        try:
            _run_node(core, it)
        except markers.Recheck:
            # the state this process last saw changed, or the claim or the predecessor's
            # marker is not as assumed: from what the store holds, as without the shortcut
            core.admitted.pop(rid, None)
            it.state = None
            _hand_over(core, it)
            if not _admit(core, it, body, first, assume=False):
                return PARKED
            _run_node(core, it)
        if not it.ended and not silent:
            tracer.request_end({"faasflow.status": "running"})
    except Stopped:
        log.info("[Request `%s`] ended while %s ran", rid, msg.node)
        _keep_if_failed(core, it)
        endings.clean_if_ended(it)
    except Duplicate:
        log.info("[Request `%s`] duplicate delivery of %s: its work is done or in hand", rid,
                 msg.node)
        return DUPLICATE
    except FlowFailure as exc:
        _hand_over(core, it)  # before the record: a folded one holds the node's done marker
        _capture_failed(core, it)
        endings.fail(core, it, exc)
    except (BackendError, RequestNotActive):
        raise
    except Exception as exc:  # user code outside operations, or an engine fault
        _hand_over(core, it)
        _capture_failed(core, it)
        endings.fail(core, it, FlowFailure(
            f"Node({msg.node}): {type(exc).__name__}: {exc}", node=msg.node, request_id=rid
        ))
    finally:
        if it.handed is not None:
            _hand_over(core, it)
        if not silent:
            tracer.flush()
    return RAN


def _hand_over(core: Core, it: Iteration) -> None:
    """The predecessor's move to handed, when this iteration's claim did not make it."""
    handed = it.handed
    if handed is None:
        return
    try:
        markers.hand_over(it.states, it.data, handed)
    except Exception as exc:
        if handed.folded:
            # it holds the node's done marker: kept (and in hand, ``Core.pending``) for the
            # claim or the end of this iteration, else for its delivery (``delivery``)
            log.warning("[Request `%s`] hand-over of %s not written yet: %s",
                        it.msg.request_id, handed.key, exc)
            return
        # best effort: a node left done (not handed) is only handed on again by a
        # redelivery, which its successor's marker turns into a duplicate
        log.debug("[Request `%s`] hand-over of %s not written: %s", it.msg.request_id,
                  handed.key, exc)
    it.handed = None
    core.pending.pop((it.msg.request_id, handed.key), None)


def _admit(core: Core, it: Iteration, body: bytes, first: bool, *, assume: bool) -> bool:
    """Whether the iteration may run now (False: it was parked).

    With ``assume``, on a store with atomic transactions, the request state this process last
    saw running is taken without a read: the claim's transaction checks it (``markers``)."""
    rid = it.msg.request_id
    atomic = it.states.atomic_transactions
    raw = core.admitted.get(rid) if assume and atomic else None
    if raw is not None:
        it.state = raw
        current = RequestState.decode(raw)
    else:
        found = it.control.read()
        if found is None:
            # refused: whatever an earlier in-flight iteration wrote after the end goes too
            it.states.cleanup()
            it.data.cleanup()
            raise RequestNotActive(rid, FINISHED)
        raw, current = found
        if atomic and current.state == RUNNING:
            core.admit(rid, raw)
    if current.terminal:
        if current.status == "stopped" or (current.by and current.by == it.token):
            # a stop (no hooks to wait for), or a redelivery of the iteration that ended the
            # request (it failed after the decision): its hooks (when they may not have run),
            # record and cleanup are finished here
            if current.status != "stopped":
                endings.redo_hooks(core, it, current)
            endings.finalize(core, rid, current, it.states, it.data)
            core.waiters.notify(rid)
        elif keeps(core, current) and not first:
            keep_iteration(it)  # refused because the request failed: a redrive sends it again
        raise RequestNotActive(rid, current.status or FINISHED)
    # a message handed on in this process as it is has no bytes (``Core.local``): made now
    if current.state == PAUSED and not first and it.control.park(
        body or it.msg.encode(core.key)
    ):
        log.info("[Request `%s`] paused: iteration %s held", rid, it.msg.node)
        it.tracer.request_end({"faasflow.parked": True})
        return False
    if current.definition_hash != it.graph.definition_hash:
        raise FlowFailure(
            f"the definition of flow {core.name!r} changed while request {rid} was running "
            f"(started as {current.definition_hash[:12]}, "
            f"now {it.graph.definition_hash[:12]}); "
            "requests run on the definition they started with - restart the request",
            request_id=rid,
        )
    if current.deadline is not None and time.time() > current.deadline:
        raise FlowFailure(f"request {rid} passed its deadline", request_id=rid)
    return True


def _capture_failed(core: Core, it: Iteration) -> None:
    if core.settings.capture != "none" and it.node_input is not None:
        capture_node(core, it.msg.request_id, it.node_input[0], it.node_input[1], None)


def _keep_if_failed(core: Core, it: Iteration) -> None:
    """An iteration interrupted by its request's failure is kept for a redrive."""
    found = it.control.read()
    if found is not None and found[1].terminal and keeps(core, found[1]):
        keep_iteration(it)


def _input_keys(it: Iteration, node: GraphNode) -> list[str]:
    """The DataStore keys this iteration's input comes from (deleted once it handed on)."""
    msg = it.msg
    if msg.data is not None:
        return []
    if msg.data_ref is not None:
        return [msg.data_ref]
    if len(node.parents) <= 1:
        return []
    sources = _sources(it, node)
    members = _arrivals(it, node, sources)
    return [f"{source}--{node.unique_id}" for source in sources
            if arrivals.member_payload(members.get(source)) is None]  # in the data store


def _sources(it: Iteration, node: GraphNode) -> list[str]:
    """The execution ids of the fan-in node's data-carrying predecessors."""
    dag = it.graph.dags[node.dag_id]
    branches = it.msg.branches
    return [exec_id(dag.nodes[edge.source].unique_id, branches)
            for edge in dag.in_edges(node.id) if not edge.execution_only]


def _arrivals(it: Iteration, node: GraphNode, sources: list[str]) -> dict[str, str]:
    """The fan-in's arrivals from ``sources``, with their values (their payloads)."""
    return arrivals.members_of(
        it.states, "arrived--" + exec_id(node.unique_id, it.msg.branches), sources
    )


def _read(it: Iteration, key: str) -> bytes:
    try:
        return it.data.get(key)
    except KeyNotFound:
        if it.control.live() is None:
            raise Stopped from None  # the request ended and its namespace went
        raise


def _input(it: Iteration, node: GraphNode, claim: dict[str, Any]) -> tuple[bytes, bool]:
    """The node's input, and whether an aggregator computed it now (what an earlier attempt's
    aggregator produced, kept in the node's ``claim``, is used instead of running it again)."""
    msg = it.msg
    if msg.data is not None:
        it.consumed = []
        if msg.source:
            it.view.node_input = {msg.source: msg.data}
        return msg.data, False
    if msg.data_ref is not None:
        it.consumed = [msg.data_ref]
        value = _read(it, msg.data_ref)
        if msg.source:
            it.view.node_input = {msg.source: value}
        return value, False
    if len(node.parents) <= 1:
        it.consumed = []
        return b"", False
    dag = it.graph.dags[node.dag_id]
    edges = [edge for edge in dag.in_edges(node.id) if not edge.execution_only]
    sources = [exec_id(dag.nodes[edge.source].unique_id, msg.branches) for edge in edges]
    members = _arrivals(it, node, sources)
    inputs: dict[str, bytes] = {}
    consumed: list[str] = []
    it.consumed = consumed
    for edge, source in zip(edges, sources, strict=True):
        brought = arrivals.member_payload(members.get(source))
        if brought is None:  # too large for the member: in the data store
            key = f"{source}--{node.unique_id}"
            consumed.append(key)
            brought = _read(it, key)
        inputs[edge.source] = brought
    it.view.node_input = inputs
    if node.aggregator is None:
        return b"", False
    kept = markers.kept_input(it, claim)
    if kept is not None:
        return kept, False
    return user(node.aggregator, inputs, f"Node({node.unique_id}) aggregator"), True


def _run_node(core: Core, it: Iteration) -> None:
    msg = it.msg
    entry = it.graph.nodes.get(msg.node)
    if entry is None:
        raise FlowFailure(f"request {msg.request_id} reached unknown node {msg.node!r}")
    node = entry
    while node.kind is NodeKind.SUBDAG:  # a static sub-DAG starts with its start node
        assert node.sub_dag is not None
        node = node.sub_dag.nodes[node.sub_dag.start]
    branches = msg.branches
    # outside any branch the execution id is the unique id (no call: every node makes one)
    eid = exec_id(node.unique_id, branches) if branches else node.unique_id
    handed: str | None = None
    shown = enter_view(it.view)
    try:
        mode, raw, doc = markers.claim(it, eid, core.settings.claim_lease, core.pending)
        if mode == markers.REDO:
            # done before a crash or an error: never run again, only hand on once more
            it.consumed = _input_keys(it, entry)
            output = markers.load_output(it.data, doc)
            it.view.node = eid
            if node.kind in _DYNAMIC:
                send_branches(core, it, node, branches, decode_branches(output))
            else:
                hand_on(core, it, node, branches, output, redo=True)
        else:
            data, aggregated = _input(it, entry, doc)
            if aggregated:
                raw, doc = markers.keep_input(it, eid, raw, doc, data)
            it.view.node = eid
            if node.kind in _DYNAMIC:
                it.tracer.node_start(eid, node_attributes(msg, node, it.attempt))
                try:
                    items = select_branches(node, data)
                except FlowFailure as exc:
                    it.tracer.node_failure(eid, exc)
                    raise
                raw, doc, handed = markers.mark_done(
                    it, eid, raw, doc, encode_branches(items), 1
                )
                send_branches(core, it, node, branches, items)
                it.tracer.node_end(eid, {"faasflow.branches": len(items)})
            else:
                it.node_input = (eid, data)
                output, attempts = run_operations(
                    core, msg, node, data, it.tracer, it.view, it.control, it.attempt
                )
                if handing.chains(core, it, node):
                    offer = markers.offer_folded(it, eid, raw, doc, attempts)
                    handing.chain_on(core, it, node, offer, data, output)
                    return
                claimed = raw
                raw, doc, handed = markers.done_of(it, eid, raw, doc, output, attempts)
                # one successor joined at a fan-in (or a branch's end at its join): the
                # arrival's step writes the done marker too (see ``coordination``)
                folds = handing.folds(it, node)
                if folds:
                    it.fold = markers.fold_of(it, eid, claimed, raw, doc, handed)
                else:
                    markers.write_done(it, CLAIM + eid, claimed, raw)
                if core.settings.capture == "all":
                    capture_node(core, msg.request_id, eid, data, output)
                # one successor: forwarded in-process, it writes this node's hand-over with
                # its own claim; joined at a fan-in, the arrival's transaction makes it when it
                # does not complete the set (whoever takes the offer makes it; not taken, it
                # is made here as always)
                if not folds and handing.offers(core, it, node):
                    it.offer = markers.offer_handed(it, eid, raw, doc, handed)
                hand_on(core, it, node, branches, output)
                it.offer = None
                assert it.fold is None, "a folded done marker was left unwritten"
                if it.taken:
                    return
    finally:
        leave_view(shown)
    if it.ended:
        return  # this node ended the request: its markers and inputs went with the cleanup
    markers.mark_handed(it, eid, raw, doc, handed)
    for key in it.consumed:
        it.data.delete(key)


def run_operations(
    core: Core,
    msg: Message,
    node: GraphNode,
    data: bytes,
    tracer: Tracer,
    view: RequestView,
    control: RequestControl | None,
    attempt: int = 1,
) -> tuple[bytes, int]:
    eid = view.node or node.unique_id
    operations = node.operations
    if tracer.silent and len(operations) == 1:
        return _run_untraced(core, msg, node, operations[0], data, eid)
    attrs_ = node_attributes(msg, node, attempt)
    tracer.node_start(eid, attrs_)
    attempts = 1
    default_retry = core.default_retry
    for index, op in enumerate(operations):
        if index and control is not None and control.live() is None:
            raise Stopped
        call = Call(
            core.invoker,
            core.name,
            msg.request_id,
            eid,
            idempotency_key=f"{msg.request_id}/{eid}",
            deadline=msg.deadline,
            default_method=core.settings.default_method,
            default_retry=default_retry,
        )
        tracer.operation_start(op.id, eid, {})
        tracer.inject(call.headers)
        try:
            result = op.execute(data, call)
            data = result if type(result) is bytes else as_bytes(result, f"operation {op.id}")
        except Exception as exc:
            tracer.operation_failure(op.id, eid, exc)
            failure = FlowFailure(
                f"Node({node.unique_id}), Operation ({op.id}) failed: {describe(exc)}",
                node=node.unique_id,
                request_id=msg.request_id,
            )
            tracer.node_failure(eid, failure)
            raise failure from exc
        attempts += int(call.attributes.get("faasflow.retries", 0) or 0)
        tracer.operation_end(op.id, eid, call.attributes)
    tracer.node_end(eid, attrs_)
    return data, attempts


def _run_untraced(
    core: Core, msg: Message, node: GraphNode, op: Operation, data: bytes, eid: str
) -> tuple[bytes, int]:
    """:func:`run_operations` of a node of one operation, for a tracer that ignores events."""
    try:
        if type(op) is Modify:  # never reads its call (nor retries): none is made
            return op.transform(data), 1
        call = Call(
            core.invoker, core.name, msg.request_id, eid,
            idempotency_key=f"{msg.request_id}/{eid}", deadline=msg.deadline,
            default_method=core.settings.default_method, default_retry=core.default_retry,
        )
        result = op.execute(data, call)
        data = result if type(result) is bytes else as_bytes(result, f"operation {op.id}")
    except Exception as exc:
        raise FlowFailure(
            f"Node({node.unique_id}), Operation ({op.id}) failed: {describe(exc)}",
            node=node.unique_id,
            request_id=msg.request_id,
        ) from exc
    return data, 1 + int(call.attributes.get("faasflow.retries", 0) or 0)
