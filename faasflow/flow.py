"""``faasflow.Flow``: a user's ``define(flow, context)`` compiled into the graph the engine runs."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from faasflow.codecs import Codec
from faasflow.context import Context, Query, RequestView, running
from faasflow.dsl import FlowBuilder, compile_workflow, start_codec
from faasflow.errors import DefinitionError
from faasflow.graph import Graph

__all__ = ["Define", "Flow"]

#: ``define(flow, context)``: builds the flow on ``flow``. What it returns is ignored, except an
#: exception instance (faas-flow's ``return err``), which fails the definition.
Define = Callable[[FlowBuilder, Context], object]

#: Per-request graphs kept when ``define`` reads ``context.query`` or ``context.request_id``.
CACHE_SIZE = 128


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "/ \t\r\n"):
        raise DefinitionError(
            f"flow name must be a non-empty string without '/' or whitespace, got {name!r}"
        )
    return name


class Flow:
    """A compiled flow definition.

    ``Flow(define)`` runs ``define(flow, context)`` once, at once, and checks the result:
    :class:`~faasflow.errors.DefinitionError` says what is wrong. When ``define`` reads
    ``context.query`` or ``context.request_id`` its graph depends on the request, and
    :meth:`graph` compiles it again per request (cached).
    """

    def __init__(self, define: Define, *, name: str = "flow") -> None:
        self.name = _check_name(name)
        if not callable(define):
            raise DefinitionError(
                f"Flow() takes a function define(flow, context), got {type(define).__name__}"
            )
        self.define = define
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Graph] = OrderedDict()
        self._graph, self._per_request, self._codec = self._compile("", "", warn=True)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r} {self.definition_hash[:12]}>"

    @property
    def definition_hash(self) -> str:
        """sha256 of the default graph's canonical export."""
        return self._graph.definition_hash

    @property
    def codec(self) -> Codec:
        """The codec of the root DAG's start node: how :func:`faasflow.run` encodes an input
        that is neither bytes nor str."""
        return self._codec

    @property
    def per_request(self) -> bool:
        """Whether ``define`` reads the request (query or id), so graphs are per request."""
        return self._per_request

    def graph(self, query: str = "", request_id: str = "") -> Graph:
        """The graph to run for a request with this raw query string and id."""
        if not self._per_request:
            return self._graph
        key = (query.lstrip("?"), request_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        compiled, _, _ = self._compile(*key, warn=False)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def export(self) -> dict[str, Any]:
        """The graph as JSON-ready data (faas-flow's ``export-dag`` format, extended)."""
        from faasflow.export import export_graph

        return export_graph(self._graph)

    def to_dot(self) -> str:
        """The graph as Graphviz DOT."""
        from faasflow.export import to_dot

        return to_dot(self._graph)

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart."""
        from faasflow.export import to_mermaid

        return to_mermaid(self._graph)

    def _compile(
        self, query: str, request_id: str, *, warn: bool
    ) -> tuple[Graph, bool, Codec]:
        view = RequestView(
            flow_name=self.name, request_id=request_id, query=Query(query), defining=True
        )
        workflow = FlowBuilder(self.name)
        with running(view):
            try:
                returned = self.define(workflow, Context())
            except DefinitionError as exc:
                raise DefinitionError(f"Invalid dag in flow {self.name}: {exc}") from exc
            except Exception as exc:
                raise DefinitionError(
                    f"Failed to define flow {self.name}: {exc or type(exc).__name__}"
                ) from exc
        if isinstance(returned, BaseException):  # a Go-style `return err`
            raise DefinitionError(
                f"Failed to define flow {self.name}: {returned or type(returned).__name__}"
            ) from returned
        try:
            compiled = compile_workflow(workflow, self.name, warn=warn)
        except DefinitionError as exc:
            raise DefinitionError(f"Invalid dag in flow {self.name}: {exc}") from exc
        return compiled, view.touched, start_codec(workflow, compiled)
