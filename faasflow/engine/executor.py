"""The engine: runs a request one iteration (one node) at a time.

An iteration checks that its request is running (holding itself back while it is paused),
computes the node's input, runs the node, marks it done with an atomic create (a duplicate
delivery stops there), and hands the output on: to the next iterations through the invoker,
through a fan-in counter, into a dynamic branch join, or to the end of the request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from faasflow.backends import Kind
from faasflow.context import Query, RequestView, running
from faasflow.errors import (
    BackendError,
    ConfigurationError,
    FaasflowError,
    FlowFailure,
    KeyNotFound,
    RequestIdInUse,
    RequestNotActive,
    RequestNotFound,
)
from faasflow.graph import Graph, Node, NodeKind
from faasflow.interfaces import DataStore, Invoker, StateStore, Tracer
from faasflow.operations import Call
from faasflow.operations import as_bytes as _as_bytes
from faasflow.settings import Settings

from .ids import check_request_id, new_request_id
from .message import Branch, Message, MessageError, verify_body_signature
from .records import NodeRun, RecordBook, RequestRecord
from .state import FINISHED, PAUSED, RUNNING, RequestControl, RequestState

__all__ = ["Backends", "Engine", "StartResult"]

log = logging.getLogger("faasflow.engine")

_DONE = "done--"
REQUEST_ID_HEADER = "X-Faas-Flow-Reqid"
CALLBACK_HEADER = "X-Faas-Flow-Callback-Url"


@attrs.frozen
class Backends:
    """The four backend objects an engine runs on."""

    state_store: StateStore
    data_store: DataStore
    tracer: Tracer
    invoker: Invoker

    @classmethod
    def from_settings(cls, settings: Settings, registry: Any = None) -> Backends:
        """Build the configured backend of each kind through the plugin registry."""
        from faasflow.plugins import Registry

        registry = registry or Registry.shared(settings)
        return cls(
            registry.create(Kind.STATE_STORE, settings),
            registry.create(Kind.DATA_STORE, settings),
            registry.create(Kind.TRACER, settings),
            registry.create(Kind.INVOKER, settings),
        )

    def close(self) -> None:
        for backend in (self.invoker, self.tracer, self.data_store, self.state_store):
            try:
                backend.close()
            except Exception:
                log.exception("closing %s failed", type(backend).__name__)


@attrs.frozen
class StartResult:
    """What starting a request gave: the output when it already ended."""

    request_id: str
    status: str
    """``success``, ``failure``, ``stopped`` or ``running``."""
    output: bytes | None = None
    error: str | None = None
    sync: bool = False


def exec_id(unique_id: str, branches: tuple[Branch, ...]) -> str:
    """faas-flow's execution id: branch keys innermost first, then the node's unique id."""
    if not branches:
        return unique_id
    return "--".join([b[1] for b in reversed(branches)] + [unique_id])


def as_bytes(value: object, what: str) -> bytes:
    """A user function's result as bytes; ``None`` counts as empty output."""
    return b"" if value is None else _as_bytes(value, what)


class _Stopped(Exception):
    """The request stopped while this iteration ran: end quietly."""


class _Duplicate(Exception):
    """This iteration was already completed by an earlier delivery."""


@attrs.define
class _Iteration:
    msg: Message
    graph: Graph
    states: StateStore
    data: DataStore
    tracer: Tracer
    control: RequestControl
    view: RequestView
    consumed: list[str] = attrs.field(factory=list)
    ended: bool = False
    """The request ended in this iteration (the tracer has been told)."""


class Engine:
    """Runs requests of one flow on the configured backends."""

    def __init__(
        self,
        flow: Any,
        settings: Settings,
        backends: Backends,
        *,
        name: str | None = None,
        functions: Mapping[str, Callable[..., object]] | None = None,
    ) -> None:
        self.flow = flow
        self.settings = settings
        self.backends = backends
        self.name: str = name or settings.flow_name or flow.name
        if functions:
            add = getattr(backends.invoker, "add_functions", None)
            if add is None:
                raise ConfigurationError(
                    f"functions= needs an invoker that runs Python callables; "
                    f"{type(backends.invoker).__name__} does not (use FAASFLOW_INVOKER=local)"
                )
            add(functions)
        secret = settings.hmac_secret
        if secret is None and backends.invoker.in_process:
            secret = os.urandom(32)  # iterations never leave this process: a private key
        if secret is None and settings.validate_request:
            raise ConfigurationError(
                f"flow {self.name!r} forwards iterations over the network but has no signing "
                "key: create the OpenFaaS secret faasflow-hmac-secret or set "
                "FAASFLOW_HMAC_SECRET (FAASFLOW_VALIDATE_REQUEST=false turns signing off)"
            )
        self._key: bytes | None = secret if settings.validate_request else None
        self._auth_key = settings.hmac_secret
        self.records = RecordBook.of(
            backends.state_store, backends.data_store, self.name, settings.record_retention
        )
        self._ended: OrderedDict[str, threading.Event] = OrderedDict()
        self._ended_lock = threading.Lock()
        self._sync_data: DataStore | None = None
        # Messages this process sent to an in-process invoker, by body identity: when the very
        # same bytes object comes back it never left the process, so it is not parsed and
        # verified again (a parked copy read back from a store is a new object and is).
        self._sent: dict[int, tuple[bytes, Message]] | None = (
            {} if backends.invoker.in_process else None
        )
        backends.invoker.bind(self._deliver)

    @classmethod
    def from_settings(
        cls,
        flow: Any,
        settings: Settings | None = None,
        *,
        name: str | None = None,
        functions: Mapping[str, Callable[..., object]] | None = None,
        registry: Any = None,
    ) -> Engine:
        """An engine on the backends ``settings`` (default: the environment) selects."""
        settings = settings or Settings.from_env()
        return cls(
            flow,
            settings,
            Backends.from_settings(settings, registry),
            name=name,
            functions=functions,
        )

    def close(self) -> None:
        """Stop in-process workers and release backend connections."""
        self.backends.close()

    # ------------------------------------------------------------------ new requests

    def start(
        self,
        data: bytes = b"",
        *,
        request_id: str | None = None,
        query: str = "",
        callback_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> StartResult:
        """Start a request. Sync flows run to the end here; DAG flows run their first node
        here and continue through the invoker."""
        headers = dict(headers or {})
        if self.settings.authenticate_request:
            verify_body_signature(self._auth_key, data, _header(headers, "X-Hub-Signature-256"))
        rid = check_request_id(request_id) if request_id else new_request_id()
        query = query.lstrip("?")
        graph = self.flow.graph(query, rid)
        limit = timeout if timeout is not None else self.settings.request_timeout
        deadline = time.time() + limit if limit else None
        if graph.is_sync:
            return self._run_sync(graph, data, rid, query, callback_url, headers, deadline)
        states, store = self._stores(rid)
        if not self.records.open(rid, deadline):
            raise RequestIdInUse(rid, self.name)
        control = RequestControl(rid, states, store)
        if not control.begin(RequestState(RUNNING, graph.definition_hash, deadline)):
            raise RequestIdInUse(rid, self.name)
        states.init()
        store.init()
        event = self._watch(rid)
        log.info("[Request `%s`] Created (flow %s)", rid, self.name)
        msg = Message(
            rid,
            self.name,
            graph.definition_hash,
            graph.root.nodes[graph.root.start].unique_id,
            data=data,
            query=query,
            callback=callback_url,
            deadline=deadline,
        )
        self._iterate(msg, b"", first=True, carrier=headers)
        if event.is_set():
            record = self.record(rid)
            if record is not None and record.done:
                return StartResult(rid, record.status, record.output, record.error)
        return StartResult(rid, "running")

    def _run_sync(
        self,
        graph: Graph,
        data: bytes,
        rid: str,
        query: str,
        callback: str | None,
        headers: Mapping[str, str],
        deadline: float | None,
    ) -> StartResult:
        node = graph.root.nodes[graph.root.start]
        if self._sync_data is None:
            from faasflow.plugins import Registry

            registry = Registry.shared(self.settings)
            self._sync_data = registry.create(Kind.DATA_STORE, self.settings, "memory")
        store = self._sync_data.scoped(self.name, rid)
        tracer = self.backends.tracer.scoped(self.name, rid)
        view = RequestView(self.name, rid, Query(query), node.unique_id, data_store=store)
        tracer.request_start(headers)
        msg = Message(
            rid,
            self.name,
            graph.definition_hash,
            node.unique_id,
            query=query,
            callback=callback,
            deadline=deadline,
        )
        try:
            with running(view):
                output, _ = self._run_operations(msg, node, data, tracer, view, None)
                view.state = "success"
                self._hook(graph.finally_, "success", rid)
        except FlowFailure as exc:
            with running(view):
                view.state = "failure"
                self._hook(graph.on_failure, exc, rid)
                self._hook(graph.finally_, "failure", rid)
            tracer.request_failure(exc)
            tracer.flush()
            store.cleanup()
            return StartResult(rid, "failure", None, str(exc), sync=True)
        store.cleanup()
        tracer.request_end({})
        tracer.flush()
        if callback:
            self._callback(callback, rid, output)
        return StartResult(rid, "success", output, None, sync=True)

    # ------------------------------------------------------------------ iterations

    def forward(self, message: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Run one forwarded iteration; the message must be signed with this flow's key."""
        sent = None if self._sent is None else self._sent.pop(id(message), None)
        if sent is not None and sent[0] is message:
            msg = sent[1]
        else:
            msg = Message.decode(message, self._key)
        if msg.flow != self.name:
            raise MessageError(
                f"iteration of flow {msg.flow!r} was delivered to flow {self.name!r}"
            )
        self._iterate(msg, message, first=False, carrier=msg.trace)

    def _deliver(
        self, flow: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        try:
            self.forward(message, headers)
        except RequestNotActive as exc:
            log.debug("[Request `%s`] iteration refused: %s", request_id, exc)
        except Exception:
            log.exception("[Request `%s`] iteration failed", request_id)

    def _stores(self, rid: str) -> tuple[StateStore, DataStore]:
        return (
            self.backends.state_store.scoped(self.name, rid),
            self.backends.data_store.scoped(self.name, rid),
        )

    def _iterate(
        self, msg: Message, body: bytes, *, first: bool, carrier: Mapping[str, str]
    ) -> None:
        rid = msg.request_id
        graph = self.flow.graph(msg.query, rid)
        states, store = self._stores(rid)
        control = RequestControl(rid, states, store)
        tracer = self.backends.tracer.scoped(self.name, rid)
        view = RequestView(self.name, rid, Query(msg.query), data_store=store)
        it = _Iteration(msg, graph, states, store, tracer, control, view)
        if first:
            tracer.request_start(carrier)
        else:
            tracer.request_continue(carrier)
        try:
            if not first and not self._admit(it, body):
                return
            self._run_node(it)
            if not it.ended:
                tracer.request_end({"faasflow.status": "running"})
        except _Stopped:
            self._clean_after_stop(it)
        except _Duplicate:
            log.info("[Request `%s`] duplicate delivery of %s ignored", rid, msg.node)
        except FlowFailure as exc:
            self._fail(it, exc)
        except (BackendError, RequestNotActive):
            raise
        except Exception as exc:  # user code outside operations, or an engine fault
            self._fail(
                it,
                FlowFailure(
                    f"Node({msg.node}): {type(exc).__name__}: {exc}", node=msg.node, request_id=rid
                ),
            )
        finally:
            tracer.flush()

    def _admit(self, it: _Iteration, body: bytes) -> bool:
        """Whether the iteration may run now (False: it was parked)."""
        rid = it.msg.request_id
        found = it.control.read()
        if found is None:
            # refused: whatever an earlier in-flight iteration wrote after a stop goes too
            it.states.cleanup()
            it.data.cleanup()
            raise RequestNotActive(rid, FINISHED)
        _, current = found
        if current.state == PAUSED and it.control.park(body):
            log.info("[Request `%s`] paused: iteration %s held", rid, it.msg.node)
            it.tracer.request_end({"faasflow.parked": True})
            return False
        if current.definition_hash != it.graph.definition_hash:
            raise FlowFailure(
                f"the definition of flow {self.name!r} changed while request {rid} was running "
                f"(started as {current.definition_hash[:12]}, "
                f"now {it.graph.definition_hash[:12]}); "
                "requests run on the definition they started with - restart the request",
                request_id=rid,
            )
        if current.deadline is not None and time.time() > current.deadline:
            raise FlowFailure(f"request {rid} passed its deadline", request_id=rid)
        return True

    def _input(self, it: _Iteration, node: Node) -> bytes:
        msg = it.msg
        if msg.data is not None:
            if msg.source:
                it.view.node_input = {msg.source: msg.data}
            return msg.data
        if msg.data_ref is not None:
            try:
                value = it.data.get(msg.data_ref)
            except KeyNotFound:
                self._check_duplicate(it, node)
                raise
            it.consumed.append(msg.data_ref)
            if msg.source:
                it.view.node_input = {msg.source: value}
            return value
        if len(node.parents) <= 1:
            return b""
        dag = it.graph.dags[node.dag_id]
        inputs: dict[str, bytes] = {}
        for edge in dag.in_edges(node.id):
            if edge.execution_only:
                continue
            source = dag.nodes[edge.source]
            key = f"{exec_id(source.unique_id, msg.branches)}--{node.unique_id}"
            try:
                inputs[edge.source] = it.data.get(key)
            except KeyNotFound:
                self._check_duplicate(it, node)
                raise
            it.consumed.append(key)
        it.view.node_input = inputs
        if node.aggregator is None:
            return b""
        return self._user(node.aggregator, inputs, f"Node({node.unique_id}) aggregator")

    def _check_duplicate(self, it: _Iteration, node: Node) -> None:
        try:
            it.states.get(_DONE + exec_id(node.unique_id, it.msg.branches))
        except KeyNotFound:
            return
        raise _Duplicate

    def _user(self, fn: Callable[..., object], arg: object, what: str) -> bytes:
        try:
            return as_bytes(fn(arg), what)
        except FaasflowError as exc:
            raise FlowFailure(f"{what} failed: {exc}") from exc
        except Exception as exc:
            raise FlowFailure(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def _run_node(self, it: _Iteration) -> None:
        msg = it.msg
        node = it.graph.nodes.get(msg.node)
        if node is None:
            raise FlowFailure(f"request {msg.request_id} reached unknown node {msg.node!r}")
        with running(it.view):
            data = self._input(it, node)
            branches = msg.branches
            while node.kind is NodeKind.SUBDAG:  # a static sub-DAG starts with its start node
                assert node.sub_dag is not None
                node = node.sub_dag.nodes[node.sub_dag.start]
            eid = exec_id(node.unique_id, branches)
            it.view.node = eid
            started = time.time()
            if node.is_dynamic:
                self._dispatch_branches(it, node, data, branches, started)
                return
            output, attempts = self._run_operations(msg, node, data, it.tracer, it.view, it.control)
            self._mark_done(it, eid, started, attempts)
            self._hand_on(it, node, branches, output)

    def _mark_done(self, it: _Iteration, eid: str, started: float, attempts: int = 1) -> None:
        done = f'{{"start":{started!r},"end":{time.time()!r},"attempts":{attempts}}}'
        if not it.states.create(_DONE + eid, done):
            raise _Duplicate
        for key in it.consumed:
            it.data.delete(key)

    def _run_operations(
        self,
        msg: Message,
        node: Node,
        data: bytes,
        tracer: Tracer,
        view: RequestView,
        control: RequestControl | None,
    ) -> tuple[bytes, int]:
        eid = view.node or node.unique_id
        attrs_ = _node_attributes(msg, node)
        tracer.node_start(eid, attrs_)
        attempts = 1
        for index, op in enumerate(node.operations):
            if index and control is not None:
                found = control.read()
                if found is None:
                    raise _Stopped
            call = Call(
                self.backends.invoker,
                self.name,
                msg.request_id,
                eid,
                idempotency_key=f"{msg.request_id}/{eid}",
                deadline=msg.deadline,
                default_method=self.settings.default_method,
            )
            tracer.operation_start(op.id, eid, {})
            tracer.inject(call.headers)
            try:
                data = as_bytes(op.execute(data, call), f"operation {op.id}")
            except Exception as exc:
                tracer.operation_failure(op.id, eid, exc)
                failure = FlowFailure(
                    f"Node({node.unique_id}), Operation ({op.id}) failed: {_describe(exc)}",
                    node=node.unique_id,
                    request_id=msg.request_id,
                )
                tracer.node_failure(eid, failure)
                raise failure from exc
            attempts += int(call.attributes.get("faasflow.retries", 0) or 0)
            tracer.operation_end(op.id, eid, call.attributes)
        tracer.node_end(eid, attrs_)
        return data, attempts

    # ------------------------------------------------------------------ handing on

    def _hand_on(
        self, it: _Iteration, node: Node, branches: tuple[Branch, ...], output: bytes
    ) -> None:
        """After ``node`` produced ``output``: its successors, a branch join, or the end."""
        graph = it.graph
        while True:
            if node.children:
                self._dispatch_children(it, node, branches, output)
                return
            dag = graph.dags[node.dag_id]
            owner = graph.owner_of(dag)
            if owner is None:
                self._finish(it, output)
                return
            if owner.kind is NodeKind.SUBDAG:
                node = owner
                continue
            joined = self._join(it, owner, branches, output)
            if joined is None:
                self._check_still_running(it)
                return
            node, branches, output = owner, branches[:-1], joined

    def _dispatch_children(
        self, it: _Iteration, node: Node, branches: tuple[Branch, ...], output: bytes
    ) -> None:
        dag = it.graph.dags[node.dag_id]
        source = exec_id(node.unique_id, branches)
        waiting = False
        for edge in dag.out_edges(node.id):
            child = dag.nodes[edge.target]
            payload: bytes | None = None
            if not edge.execution_only:
                payload = output
                if edge.forwarder is not None:
                    payload = self._user(
                        edge.forwarder, output, f"forwarder {edge.source}->{edge.target}"
                    )
            edge_key = f"{source}--{child.unique_id}"
            if len(child.parents) > 1:
                if payload is not None:
                    it.data.set(edge_key, payload)
                arrived = it.states.increment(exec_id(child.unique_id, branches))
                if arrived < len(child.parents):
                    waiting = True
                    continue
                payload = None
            self._send(it, child.unique_id, branches, payload, node.id, edge_key)
        if waiting:
            self._check_still_running(it)

    def _dispatch_branches(
        self, it: _Iteration, node: Node, data: bytes, branches: tuple[Branch, ...], started: float
    ) -> None:
        eid = exec_id(node.unique_id, branches)
        it.tracer.node_start(eid, _node_attributes(it.msg, node))
        try:
            items = self._select_branches(node, data)
        except FlowFailure as exc:
            it.tracer.node_failure(eid, exc)
            raise
        self._mark_done(it, eid, started)
        total = len(items)
        if total > 1:
            it.states.set(f"{eid}-dynamic-branch-options", json.dumps([k for k, _ in items]))
        for key, value in items:
            start = node.branch_dag(key).start
            start_uid = node.branch_dag(key).nodes[start].unique_id
            self._send(
                it,
                start_uid,
                (*branches, (node.unique_id, key, total)),
                value,
                None,
                f"{key}--{eid}--{start_uid}",
            )
        it.tracer.node_end(eid, {"faasflow.branches": total})

    def _select_branches(self, node: Node, data: bytes) -> list[tuple[str, bytes]]:
        """The branches a foreach or conditional node runs, with each branch's input."""
        what = f"Dynamic Node {node.unique_id}"
        if node.kind is NodeKind.FOREACH:
            assert node.foreach is not None
            try:
                result = node.foreach(data)
                items = [(str(k), as_bytes(v, f"{what} foreach")) for k, v in dict(result).items()]
            except Exception as exc:
                raise FlowFailure(
                    f"{what} foreach failed: {_describe(exc)}", node=node.unique_id
                ) from exc
            kind = "foreach"
        else:
            assert node.condition is not None
            try:
                keys = list(node.condition(data) or ())
            except Exception as exc:
                raise FlowFailure(
                    f"{what} condition failed: {_describe(exc)}", node=node.unique_id
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
        self, it: _Iteration, owner: Node, branches: tuple[Branch, ...], output: bytes
    ) -> bytes | None:
        """A branch of ``owner`` ended with ``output``; the last one to end aggregates."""
        _, key, total = branches[-1]
        outer = branches[:-1]
        owner_eid = exec_id(owner.unique_id, outer)
        collect = not owner.dynamic_execution_only and owner.sub_aggregator is not None

        def result_key(k: str) -> str:
            return f"{k}--{owner_eid}--{owner.unique_id}"

        if total > 1:
            if collect:
                it.data.set(result_key(key), output)
            done = it.states.increment(f"{owner_eid}-branch-completion")
            if done < total:
                return None
        if not collect:
            return b""
        assert owner.sub_aggregator is not None
        if total > 1:
            keys = json.loads(it.states.get(f"{owner_eid}-dynamic-branch-options"))
            results = {k: output if k == key else it.data.get(result_key(k)) for k in keys}
        else:
            results = {key: output}
        it.view.node = owner_eid
        return self._user(
            owner.sub_aggregator, results, f"Dynamic Node {owner.unique_id} aggregator"
        )

    def _send(
        self,
        it: _Iteration,
        target: str,
        branches: tuple[Branch, ...],
        payload: bytes | None,
        source: str | None,
        ref_key: str,
    ) -> None:
        msg = it.msg
        data_ref = None
        if payload is not None and len(payload) > self.settings.inline_limit:
            it.data.set(ref_key, payload)
            payload, data_ref = None, ref_key
        carrier: dict[str, str] = {}
        it.tracer.inject(carrier)
        nxt = Message(
            msg.request_id,
            self.name,
            msg.definition_hash,
            target,
            branches,
            source,
            payload,
            data_ref,
            msg.query,
            msg.callback,
            carrier,
            msg.deadline,
        )
        headers = {REQUEST_ID_HEADER: msg.request_id, "Content-Type": "application/json", **carrier}
        if msg.callback:
            headers[CALLBACK_HEADER] = msg.callback
        body = nxt.encode(self._key)
        if self._sent is not None:
            self._sent[id(body)] = (body, nxt)
        try:
            self.backends.invoker.forward(self.name, msg.request_id, body, headers)
        except Exception as exc:
            if self._sent is not None:
                self._sent.pop(id(body), None)
            raise FlowFailure(
                f"Node({target}): failed to forward the iteration: {_describe(exc)}",
                node=target,
                request_id=msg.request_id,
            ) from exc

    def _check_still_running(self, it: _Iteration) -> None:
        """This iteration wrote state and hands nothing on: if a stop raced it, tidy up."""
        if it.control.read() is None:
            it.states.cleanup()
            it.data.cleanup()

    def _clean_after_stop(self, it: _Iteration) -> None:
        log.info("[Request `%s`] stopped while %s ran", it.msg.request_id, it.msg.node)
        it.states.cleanup()
        it.data.cleanup()

    # ------------------------------------------------------------------ endings

    def _node_runs(self, states: StateStore) -> dict[str, NodeRun]:
        runs = {}
        for key, raw in states.scan(_DONE).items():
            try:
                runs[key[len(_DONE) :]] = NodeRun.from_json(key[len(_DONE) :], json.loads(raw))
            except (ValueError, KeyError):
                continue
        return runs

    def _finish(self, it: _Iteration, output: bytes) -> None:
        rid = it.msg.request_id
        if it.control.read() is None:  # stopped while the last node ran
            self._clean_after_stop(it)
            return
        record = RequestRecord(
            rid,
            self.name,
            "success",
            self._created(rid),
            time.time(),
            output,
            nodes=self._node_runs(it.states),
        )
        if not self.records.close(record):
            return
        it.view.state = "success"
        self._hook(it.graph.finally_, "success", rid)
        self._release(it)
        it.tracer.request_end({"faasflow.status": "success"})
        it.ended = True
        log.info("[Request `%s`] Completed successfully", rid)
        if it.msg.callback:
            self._callback(it.msg.callback, rid, output)
        self._notify(rid)

    def _fail(self, it: _Iteration, error: FlowFailure) -> None:
        rid = it.msg.request_id
        nodes = self._node_runs(it.states)
        if error.node:
            now = time.time()
            nodes[error.node] = NodeRun(error.node, now, now, status="failure", error=str(error))
        record = RequestRecord(
            rid, self.name, "failure", self._created(rid), time.time(), None, str(error), nodes
        )
        if not self.records.close(record):
            return  # another branch already failed it, or it was stopped: hooks ran once
        log.info("[Request `%s`] Failed: %s", rid, error)
        with running(it.view):
            it.view.state = "failure"
            self._hook(it.graph.on_failure, error, rid)
            self._hook(it.graph.finally_, "failure", rid)
        self._release(it)
        it.tracer.request_failure(error)
        self._notify(rid)

    def _release(self, it: _Iteration) -> None:
        it.states.delete("request-state")  # later iterations are refused from here on
        it.states.cleanup()
        it.data.cleanup()

    def _created(self, rid: str) -> float:
        found = self.records.entry(rid)
        return float(found[1]["created"]) if found else time.time()

    def _hook(self, hook: Callable[[Any], object] | None, arg: Any, rid: str) -> None:
        if hook is None:
            return
        try:
            hook(arg)
        except Exception:
            log.exception("[Request `%s`] %s hook raised", rid, getattr(hook, "__name__", "flow"))

    def _callback(self, url: str, rid: str, output: bytes) -> None:
        try:
            response = self.backends.invoker.request(
                "POST", url, output, headers={REQUEST_ID_HEADER: rid}, timeout=30.0
            )
            if not response.ok:
                log.warning("[Request `%s`] callback %s answered %s", rid, url, response.status)
        except Exception as exc:
            log.warning("[Request `%s`] callback %s failed: %s", rid, url, exc)

    # ------------------------------------------------------------------ waiting

    def _watch(self, rid: str) -> threading.Event:
        with self._ended_lock:
            event = self._ended.get(rid)
            if event is None:
                event = self._ended[rid] = threading.Event()
                while len(self._ended) > 4096:
                    self._ended.popitem(last=False)
            return event

    def _notify(self, rid: str) -> None:
        with self._ended_lock:
            event = self._ended.get(rid)
        if event is not None:
            event.set()

    def wait(self, request_id: str, timeout: float | None = None) -> RequestRecord | None:
        """Block until the request ends and return its record (None if still running).

        An end in this process wakes the waiter at once; an end in another process is seen by
        polling the records with a growing interval.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ended_lock:
            event = self._ended.get(request_id) or threading.Event()
        delay = 0.002
        while True:
            found = self.records.entry(request_id)  # status only: cheap enough to poll
            if found is None:
                raise RequestNotFound(request_id, "wait for")
            if found[1]["status"] != "running":
                return self.record(request_id)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            event.wait(delay if left is None else min(delay, left))
            delay = min(delay * 1.5, 0.1)

    # ------------------------------------------------------------------ control

    def pause(self, request_id: str) -> None:
        """Hold the request's next iterations until :meth:`resume`."""
        states, store = self._stores(request_id)
        try:
            RequestControl(request_id, states, store).pause()
        except RequestNotFound:
            raise self._ended_error(request_id, "pause") from None
        log.info("[Request `%s`] Paused", request_id)

    def resume(self, request_id: str) -> None:
        """Run the iterations held while the request was paused (each exactly once)."""
        states, store = self._stores(request_id)
        try:
            held = RequestControl(request_id, states, store).resume()
        except RequestNotFound:
            raise self._ended_error(request_id, "resume") from None
        log.info("[Request `%s`] Resumed (%d held iterations)", request_id, len(held))
        for body in held:
            headers = {REQUEST_ID_HEADER: request_id, "Content-Type": "application/json"}
            self.backends.invoker.forward(self.name, request_id, body, headers)

    def _ended_error(self, request_id: str, action: str) -> FaasflowError:
        """Not running: NotActive when the request is recorded as ended, else NotFound."""
        found = self.records.entry(request_id)
        if found is None:
            return RequestNotFound(request_id, action)
        return RequestNotActive(request_id, found[1]["status"], action)

    def stop(self, request_id: str) -> None:
        """End the request now: no hooks, no callback; its state is deleted."""
        found = self.records.entry(request_id)
        if found is None:
            raise RequestNotFound(request_id, "stop")
        if found[1]["status"] != "running":
            raise RequestNotActive(request_id, found[1]["status"], "stop")
        states, store = self._stores(request_id)
        record = RequestRecord(
            request_id,
            self.name,
            "stopped",
            float(found[1]["created"]),
            time.time(),
            nodes=self._node_runs(states),
        )
        if not self.records.close(record):
            raise RequestNotActive(request_id, "ended", "stop")
        states.delete("request-state")
        states.cleanup()
        store.cleanup()
        log.info("[Request `%s`] Stopped", request_id)
        self._notify(request_id)

    def state(self, request_id: str) -> str:
        """``RUNNING``, ``PAUSED`` or ``FINISHED`` (also for unknown ids, as faas-flow)."""
        states, store = self._stores(request_id)
        found = RequestControl(request_id, states, store).read()
        return FINISHED if found is None else found[1].state

    def record(self, request_id: str) -> RequestRecord | None:
        """The request's record: live progress while it runs, the outcome once it ended."""
        found = self.records.entry(request_id)
        if found is None:
            return None
        entry = found[1]
        if entry["status"] == "running":
            states, store = self._stores(request_id)
            live = RequestControl(request_id, states, store).read()
            status = "paused" if live is not None and live[1].state == PAUSED else "running"
            return RequestRecord(
                request_id,
                self.name,
                status,
                float(entry["created"]),
                nodes=self._node_runs(states),
            )
        for _ in range(50):  # the full record lands right after the status claim
            record = self.records.load(request_id)
            if record is not None:
                return record
            time.sleep(0.01)
        return RequestRecord(
            request_id, self.name, entry["status"], float(entry["created"]), entry.get("ended")
        )

    def requests(self) -> list[RequestRecord]:
        """Requests of this flow still running or kept after they ended, newest first."""
        out = [
            RequestRecord(rid, self.name, e["status"], float(e["created"]), e.get("ended"))
            for rid, e in self.records.entries().items()
        ]
        return sorted(out, key=lambda r: r.created, reverse=True)

    def sweep(self, now: float | None = None) -> int:
        """Forget records past their retention and fail running requests past their deadline.

        Returns how many requests it acted on. The local gateway calls it periodically.
        """
        now = time.time() if now is None else now
        acted = 0
        for rid, entry in self.records.entries().items():
            if entry["status"] != "running":
                if entry.get("expires") is not None and entry["expires"] < now:
                    self.records.forget(rid)
                    acted += 1
                continue
            deadline = entry.get("deadline")
            if deadline is not None and deadline < now:
                states, store = self._stores(rid)
                record = RequestRecord(
                    rid,
                    self.name,
                    "failure",
                    float(entry["created"]),
                    now,
                    None,
                    f"request {rid} passed its deadline",
                    self._node_runs(states),
                )
                if self.records.close(record):
                    states.delete("request-state")
                    states.cleanup()
                    store.cleanup()
                    self._notify(rid)
                    acted += 1
        return acted

    def export(self) -> dict[str, Any]:
        """The flow's definition as faas-flow's export-dag JSON."""
        result: dict[str, Any] = self.flow.export()
        return result


def _node_attributes(msg: Message, node: Node) -> dict[str, object]:
    return {
        "faasflow.request_id": msg.request_id,
        "faasflow.node": node.id,
        "faasflow.node.unique_id": node.unique_id,
        "faasflow.branch": "/".join(b[1] for b in msg.branches),
        "faasflow.attempt": 1,
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FaasflowError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None
