"""The definition API: what ``define(flow, context)`` uses to describe a flow.

``flow`` is a :class:`Workflow`; its DAGs (:class:`Dag`) hold nodes (:class:`Node`) that chain
operations. Mistakes that can be seen where they are made (a duplicate edge, a cycle, a
non-callable argument, an option that does nothing where it is given) raise
:class:`~faasflow.errors.DefinitionError` at once; whole-DAG rules (one start node, no empty DAG)
are checked by :func:`compile_workflow`, which turns the definition into an immutable
:class:`faasflow.graph.Graph`.
"""

from __future__ import annotations

import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from faasflow import graph
from faasflow.errors import DefinitionError
from faasflow.graph import NodeKind
from faasflow.operations import (
    Apply,
    FailureHook,
    HttpRequest,
    Modify,
    Operation,
    Request,
    RequestHook,
    ResponseHook,
    Retry,
    callable_name,
)

__all__ = [
    "SYNC_NODE",
    "Dag",
    "FanInWarning",
    "HttpRequest",
    "Node",
    "Retry",
    "Workflow",
    "compile_workflow",
]

#: Id of the node :meth:`Workflow.sync_node` returns (faas-flow's).
SYNC_NODE = "sync"

_HTTP_OPTIONS = (
    "method",
    "headers",
    "query",
    "on_failure",
    "request_handler",
    "response_handler",
    "retry",
    "timeout",
)
# Ids become parts of state keys ("<execId>--<uid>", "faasflow/<flow>/<request>/...") and URLs.
_BAD_ID = re.compile(r"--|[/\s]")


class FanInWarning(UserWarning):
    """A node has several data-carrying predecessors but no aggregator: its input is empty."""


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{what} must be a non-empty string, got {value!r}")
    if _BAD_ID.search(value):
        raise DefinitionError(
            f"{what} {value!r} contains '--', '/' or whitespace, which would make state keys "
            "ambiguous: use letters, digits, '_', '-' or '.'"
        )
    return value


def _check_callable(value: object, what: str) -> None:
    if not callable(value):
        raise DefinitionError(f"{what} must be callable, got {type(value).__name__} {value!r}")


def _caller_level() -> int:
    """The ``stacklevel`` of the first caller outside faasflow, so a warning points at the
    user's ``Flow(...)`` (or ``faasflow.run(...)``) line, however deep the compiler is."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back
        level += 1
    return level


def _where(dag: Dag) -> str:
    return dag._label or "the dag"


class Node:
    """A vertex being defined: chain operations on it; they run in the order added.

    Get one from :meth:`Dag.node` (or :meth:`Workflow.sync_node`); calling it again with the same
    id returns the same node, so operations accumulate.
    """

    def __init__(self, node_id: str, dag: Dag, aggregator: graph.Aggregator | None = None) -> None:
        self.id = node_id
        self._dag = dag
        self.kind = NodeKind.OPERATIONS
        self.operations: list[Operation] = []
        self.aggregator = aggregator
        self.sub_dag: Dag | None = None
        self.foreach: graph.ForEach | None = None
        self.foreach_dag: Dag | None = None
        self.condition: graph.Condition | None = None
        self.conditional_dags: dict[str, Dag] = {}
        self.sub_aggregator: graph.Aggregator | None = None
        self.dynamic_execution_only = False

    def __repr__(self) -> str:
        return f"<Node {self.id!r} {self.kind.value} in {_where(self._dag)}>"

    def _describe(self) -> str:
        return f"node {self.id!r} in {_where(self._dag)}"

    def add_operation(self, operation: Operation) -> Node:
        """Append a custom :class:`~faasflow.operations.Operation`; returns the node."""
        if not isinstance(operation, Operation):
            raise DefinitionError(
                f"{self._describe()}: add_operation() takes a faasflow.Operation instance, "
                f"got {type(operation).__name__}"
            )
        if self.kind is not NodeKind.OPERATIONS:
            kind = {
                NodeKind.SUBDAG: "a sub-DAG node",
                NodeKind.FOREACH: "a foreach node",
                NodeKind.CONDITION: "a conditional node",
            }.get(self.kind, self.kind.value)
            raise DefinitionError(
                f"{self._describe()} is {kind}: it runs its sub-DAG, not operations "
                f"(cannot add {operation.id!r}); put the operations in a node before or after "
                "it, or inside its sub-DAG"
            )
        self.operations.append(operation)
        return self

    def apply(
        self,
        function: str,
        *,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str | Iterable[str]] | None = None,
        on_failure: FailureHook | None = None,
        request_handler: RequestHook | None = None,
        response_handler: ResponseHook | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        **unknown: object,
    ) -> Node:
        """Call the function named ``function`` (OpenFaaS ``/function/<name>`` or a local
        callable) with the data; its response body is the output. Returns the node."""
        if not isinstance(function, str) or not function.strip():
            raise DefinitionError(
                f"{self._describe()}: apply() needs a function name, got {function!r}"
            )
        what = f"{self._describe()}: apply({function!r})"
        options = self._http_options(
            what, method, headers, query, on_failure, request_handler, response_handler,
            retry, timeout, unknown,
        )
        return self.add_operation(Apply(function, **options))

    def request(
        self,
        url: str,
        *,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str | Iterable[str]] | None = None,
        on_failure: FailureHook | None = None,
        request_handler: RequestHook | None = None,
        response_handler: ResponseHook | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        **unknown: object,
    ) -> Node:
        """Call any HTTP(S) URL with the data as body; the response body is the output."""
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise DefinitionError(
                f"{self._describe()}: request() needs an absolute http:// or https:// URL, "
                f"got {url!r}"
            )
        what = f"{self._describe()}: request({url!r})"
        options = self._http_options(
            what, method, headers, query, on_failure, request_handler, response_handler,
            retry, timeout, unknown,
        )
        return self.add_operation(Request(url, **options))

    def modify(self, fn: Callable[[bytes], bytes | str]) -> Node:
        """Transform the data in-process with ``fn(data) -> bytes | str``. Returns the node."""
        _check_callable(fn, f"{self._describe()}: modify() argument")
        return self.add_operation(Modify(fn))

    def _http_options(
        self,
        what: str,
        method: str | None,
        headers: Mapping[str, str] | None,
        query: Mapping[str, str | Iterable[str]] | None,
        on_failure: FailureHook | None,
        request_handler: RequestHook | None,
        response_handler: ResponseHook | None,
        retry: Retry | None,
        timeout: float | None,
        unknown: Mapping[str, object],
    ) -> dict[str, Any]:
        if unknown:
            names = ", ".join(sorted(unknown))
            raise DefinitionError(
                f"{what}: option(s) {names} do not apply to a function call "
                f"(faas-flow ignores them, faasflow rejects them); valid options: "
                f"{', '.join(_HTTP_OPTIONS)}"
                + (
                    "; aggregator= belongs to dag.node() and forwarder= to dag.edge()"
                    if {"aggregator", "forwarder", "execution_only"} & set(unknown)
                    else ""
                )
            )
        if method is not None and (not isinstance(method, str) or not method.isalpha()):
            raise DefinitionError(f"{what}: method must be an HTTP method name, got {method!r}")
        clean_headers: dict[str, str] = {}
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise DefinitionError(f"{what}: headers must be a dict of str to str")
            for key, value in headers.items():
                if not isinstance(key, str) or not key or not isinstance(value, str):
                    raise DefinitionError(
                        f"{what}: header {key!r}: names and values must be strings, "
                        f"got {value!r}"
                    )
                clean_headers[key] = value
        clean_query: dict[str, list[str]] = {}
        if query is not None:
            if not isinstance(query, Mapping):
                raise DefinitionError(
                    f"{what}: query must be a dict of str to str or list of str"
                )
            raw: Mapping[Any, object] = query
            for name, given in raw.items():
                items: list[object]
                if isinstance(given, str):
                    items = [given]
                elif isinstance(given, Iterable) and not isinstance(given, (bytes, Mapping)):
                    items = list(given)
                else:
                    items = [given]
                if not isinstance(name, str) or not name or not all(
                    isinstance(v, str) for v in items
                ):
                    raise DefinitionError(
                        f"{what}: query {name!r}: values must be strings, got {given!r}"
                    )
                clean_query[name] = [str(v) for v in items]
        for name, fn in (
            ("on_failure", on_failure),
            ("request_handler", request_handler),
            ("response_handler", response_handler),
        ):
            if fn is not None:
                _check_callable(fn, f"{what}: {name}")
        if retry is not None and not isinstance(retry, Retry):
            raise DefinitionError(
                f"{what}: retry must be a faasflow.Retry(...), got {type(retry).__name__}"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise DefinitionError(f"{what}: timeout must be a positive number of seconds")
        return {
            "method": method.upper() if method else None,
            "headers": clean_headers,
            "query": clean_query,
            "on_failure": on_failure,
            "request_handler": request_handler,
            "response_handler": response_handler,
            "retry": retry,
            "timeout": float(timeout) if timeout is not None else None,
        }

    def _set_aggregator(self, aggregator: graph.Aggregator | None) -> None:
        if aggregator is None:
            return
        _check_callable(aggregator, f"{self._describe()}: aggregator")
        if self.aggregator is not None and self.aggregator is not aggregator:
            raise DefinitionError(
                f"{self._describe()} already has the aggregator "
                f"{callable_name(self.aggregator)}; a node has one aggregator"
            )
        self.aggregator = aggregator

    def _copy(self, dag: Dag) -> Node:
        node = Node(self.id, dag, self.aggregator)
        node.kind = self.kind
        node.operations = list(self.operations)
        node.sub_dag = self.sub_dag
        node.foreach = self.foreach
        node.foreach_dag = self.foreach_dag
        node.condition = self.condition
        node.conditional_dags = dict(self.conditional_dags)
        node.sub_aggregator = self.sub_aggregator
        node.dynamic_execution_only = self.dynamic_execution_only
        return node

    def _nested(self) -> Iterator[Dag]:
        if self.sub_dag is not None:
            yield self.sub_dag
        if self.foreach_dag is not None:
            yield self.foreach_dag
        yield from self.conditional_dags.values()


@attrs.frozen
class _EdgeSpec:
    source: str
    target: str
    forwarder: graph.Forwarder | None
    execution_only: bool


class Dag:
    """A DAG being defined. ``faasflow.Dag()`` builds a standalone one for composition with
    :meth:`sub_dag`, :meth:`append` or :meth:`Workflow.set_dag`."""

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}
        self._edges: list[_EdgeSpec] = []
        self._children: dict[str, list[str]] = {}  # for the cycle and duplicate checks
        self._label: str | None = None  # set for the root and branch DAGs, for messages
        # nodes only edge() has named so far, with that edge: a typo there silently makes a
        # new node, which validation then reports as a second start node
        self._by_edge: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"<Dag {_where(self)}: {len(self._nodes)} nodes, {len(self._edges)} edges>"

    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes defined so far, in creation order."""
        return types.MappingProxyType(self._nodes)

    def node(self, node_id: str, *, aggregator: graph.Aggregator | None = None) -> Node:
        """Get or create the node ``node_id``.

        ``aggregator(inputs) -> bytes | str`` receives the outputs of the data-carrying
        predecessors keyed by their ids, in edge declaration order, and its result is the
        node's input.
        """
        self._by_edge.pop(node_id, None)
        return self._get(node_id, aggregator)

    def _get(self, node_id: str, aggregator: graph.Aggregator | None = None) -> Node:
        node = self._nodes.get(node_id)
        if node is None:
            node = Node(_check_id(node_id, f"node id in {_where(self)}"), self)
            self._nodes[node_id] = node
        node._set_aggregator(aggregator)
        return node

    def edge(
        self,
        source: str,
        target: str,
        *,
        forwarder: graph.Forwarder | None = None,
        execution_only: bool = False,
    ) -> None:
        """Run ``target`` after ``source``, handing it ``source``'s output.

        Missing nodes are created. ``forwarder(data) -> bytes | str`` transforms the data for
        this edge only; ``execution_only=True`` orders execution without passing data.
        """
        what = f"edge {source!r} -> {target!r} in {_where(self)}"
        if forwarder is not None:
            _check_callable(forwarder, f"{what}: forwarder")
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
        self._add_edge(_EdgeSpec(source, target, forwarder, execution_only))

    def _add_edge(self, edge: _EdgeSpec) -> None:
        self._edges.append(edge)
        self._children.setdefault(edge.source, []).append(edge.target)

    def sub_dag(self, node_id: str, dag: Dag) -> None:
        """Add the node ``node_id`` that runs the whole of ``dag``; its output is ``dag``'s."""
        if not isinstance(dag, Dag):
            raise DefinitionError(
                f"sub_dag({node_id!r}) in {_where(self)} takes a faasflow.Dag, "
                f"got {type(dag).__name__}"
            )
        if dag is self or dag._contains(self):
            raise DefinitionError(
                f"sub_dag({node_id!r}) in {_where(self)} would include a DAG in itself "
                "(dag has recursive dependency)"
            )
        node = self._claim(node_id, NodeKind.SUBDAG)
        node.sub_dag = dag

    def append(self, dag: Dag) -> None:
        """Copy the nodes and edges of ``dag`` (as they are now) into this DAG; link them with
        :meth:`edge`. Node ids must not repeat."""
        if not isinstance(dag, Dag):
            raise DefinitionError(f"append() in {_where(self)} takes a faasflow.Dag")
        if dag is self:
            raise DefinitionError(f"append() in {_where(self)}: cannot append a DAG to itself")
        duplicates = [node_id for node_id in dag._nodes if node_id in self._nodes]
        if duplicates:
            raise DefinitionError(
                f"append() in {_where(self)}: node id(s) {', '.join(map(repr, duplicates))} "
                "exist in both DAGs (vertex redefined); rename them"
            )
        for node in dag._nodes.values():
            for nested in node._nested():
                if nested is self or nested._contains(self):
                    raise DefinitionError(
                        f"append() in {_where(self)}: node {node.id!r} of the appended DAG "
                        "includes this DAG (dag has recursive dependency)"
                    )
        for node_id, node in dag._nodes.items():
            self._nodes[node_id] = node._copy(self)
        self._by_edge.update(dag._by_edge)
        for edge in dag._edges:
            self._add_edge(edge)

    def foreach_branch(
        self,
        node_id: str,
        foreach: graph.ForEach,
        *,
        aggregator: graph.Aggregator | None = None,
        execution_only: bool = False,
    ) -> Dag:
        """Add the node ``node_id`` that runs the returned sub-DAG once per key of
        ``foreach(data) -> {key: bytes | str}``, in parallel, each with its value as input.

        ``aggregator(results) -> bytes | str`` gets the branch outputs keyed by foreach key and
        makes the node's output. ``execution_only=True``: the branches get no data and nothing
        is aggregated.
        """
        what = f"foreach_branch({node_id!r}) in {_where(self)}"
        _check_callable(foreach, f"{what}: foreach")
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
        condition: graph.Condition,
        *,
        aggregator: graph.Aggregator | None = None,
        execution_only: bool = False,
    ) -> dict[str, Dag]:
        """Add the node ``node_id`` with one sub-DAG per key of ``conditions``; at run time
        ``condition(data) -> [key, ...]`` selects the branches to run (every selected one runs,
        in parallel, with the node's input).

        ``aggregator(results) -> bytes | str`` gets the outputs of the branches that ran, keyed
        by condition. Every declared branch must get at least one node.
        """
        what = f"conditional_branch({node_id!r}) in {_where(self)}"
        if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Iterable):
            raise DefinitionError(f"{what}: conditions must be a list of condition names")
        keys = list(conditions)
        if not keys:
            raise DefinitionError(f"{what} declares no conditions")
        for key in keys:
            _check_id(key, f"{what}: condition")
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise DefinitionError(f"{what}: condition(s) {', '.join(repeated)} declared twice")
        _check_callable(condition, f"{what}: condition")
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
        self, what: str, aggregator: graph.Aggregator | None, execution_only: bool
    ) -> None:
        if not isinstance(execution_only, bool):
            raise DefinitionError(f"{what}: execution_only must be True or False")
        if aggregator is not None:
            _check_callable(aggregator, f"{what}: aggregator")
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
                f"node {node_id!r} in {_where(self)} is already defined "
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


class Workflow:
    """The ``flow`` argument of ``define(flow, context)``."""

    def __init__(self, name: str = "flow") -> None:
        self.name = name
        self._dag = Dag()
        self._dag._label = "the root dag"
        self._on_failure: graph.FailureHandler | None = None
        self._finally: graph.FinallyHandler | None = None

    def sync_node(self, *, aggregator: graph.Aggregator | None = None) -> Node:
        """The node ``"sync"`` of the root DAG: a flow of this one node runs wholly inside the
        request that starts it and returns its output."""
        return self._dag.node(SYNC_NODE, aggregator=aggregator)

    def dag(self) -> Dag:
        """The root DAG."""
        return self._dag

    def set_dag(self, dag: Dag) -> None:
        """Replace the root DAG by one built separately with ``faasflow.Dag()``."""
        if not isinstance(dag, Dag):
            raise DefinitionError(f"set_dag() takes a faasflow.Dag, got {type(dag).__name__}")
        self._dag = dag

    def on_failure(self, fn: graph.FailureHandler) -> graph.FailureHandler:
        """Call ``fn(error)`` when a request fails (before :meth:`finally_`); usable as a
        decorator."""
        _check_callable(fn, "flow.on_failure() handler")
        self._on_failure = fn
        return fn

    def finally_(self, fn: graph.FinallyHandler) -> graph.FinallyHandler:
        """Call ``fn(state)`` with ``"success"`` or ``"failure"`` when a request ends; usable
        as a decorator."""
        _check_callable(fn, "flow.finally_() handler")
        self._finally = fn
        return fn


def compile_workflow(workflow: Workflow, name: str, *, warn: bool = True) -> graph.Graph:
    """Check ``workflow`` and turn it into an immutable :class:`~faasflow.graph.Graph`.

    Raises :class:`~faasflow.errors.DefinitionError` with the bare reason (the caller adds the
    flow name); emits :class:`FanInWarning` when ``warn``.
    """
    from faasflow.export import definition_hash

    compiler = _Compiler(warn)
    root = compiler.dag(workflow.dag(), "0", None, None, "dag 0")
    built = graph.Graph(
        name=name,
        root=root,
        nodes=types.MappingProxyType({uid: compiler.nodes[uid] for uid in compiler.order}),
        dags=types.MappingProxyType({dag_id: compiler.dags[dag_id] for dag_id in compiler.where}),
        definition_hash="",
        on_failure=workflow._on_failure,
        finally_=workflow._finally,
    )
    return attrs.evolve(built, definition_hash=definition_hash(built))


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
        self.nodes: dict[str, graph.Node] = {}
        self.dags: dict[str, graph.Dag] = {}
        self.where: dict[str, str] = {}
        """Description of every DAG id, in the order the DAGs are reached (outer first)."""
        self.order: dict[str, None] = {}
        """Node unique ids, each before the nodes of its sub-DAGs."""
        self.stack: list[Dag] = []

    def dag(
        self, spec: Dag, dag_id: str, owner: str | None, branch: str | None, where: str
    ) -> graph.Dag:
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
            return self._build(spec, dag_id, owner, branch, where)
        finally:
            self.stack.pop()

    def _build(
        self, spec: Dag, dag_id: str, owner: str | None, branch: str | None, where: str
    ) -> graph.Dag:
        edges = [
            graph.Edge(e.source, e.target, e.forwarder, e.execution_only) for e in spec._edges
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

        nodes: dict[str, graph.Node] = {}
        for index, node_id in enumerate(order, start=1):
            nodes[node_id] = self._node(
                spec._nodes[node_id], index, dag_id, where, in_edges[node_id],
                out_edges[node_id],
            )
        if end not in nodes:
            nodes[end] = self._register(
                graph.Node(
                    id=end,
                    index=len(order) + 1,
                    unique_id=self._reserve(f"{dag_id}_{len(order) + 1}_{end}", where),
                    dag_id=dag_id,
                    kind=NodeKind.END,
                    parents=tuple(e.source for e in in_edges[end]),
                ),
            )
        built = graph.Dag(
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
    ) -> graph.Node:
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
                stacklevel=_caller_level(),
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
        conditional: dict[str, graph.Dag] = {}
        if spec.kind is NodeKind.SUBDAG:
            assert spec.sub_dag is not None
            sub_dag = self.dag(
                spec.sub_dag, child_id, unique_id, None, f"dag {child_id} (sub-DAG of {label})"
            )
        elif spec.kind is NodeKind.FOREACH:
            assert spec.foreach_dag is not None
            foreach_dag = self.dag(
                spec.foreach_dag, child_id, unique_id, None,
                f"dag {child_id} (foreach branch of {label})",
            )
        elif spec.kind is NodeKind.CONDITION:
            for key, branch in spec.conditional_dags.items():
                branch_id = f"{child_id}_{key}"
                conditional[key] = self.dag(
                    branch, branch_id, unique_id, key,
                    f"dag {branch_id} (branch {key!r} of conditional {label})",
                )
        return self._register(
            graph.Node(
                id=spec.id,
                index=index,
                unique_id=unique_id,
                dag_id=dag_id,
                kind=spec.kind,
                operations=tuple(spec.operations),
                aggregator=spec.aggregator,
                sub_dag=sub_dag,
                foreach=spec.foreach,
                foreach_dag=foreach_dag,
                condition=spec.condition,
                conditional_dags=types.MappingProxyType(conditional),
                sub_aggregator=spec.sub_aggregator,
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

    def _register(self, node: graph.Node) -> graph.Node:
        self.nodes[node.unique_id] = node
        return node
