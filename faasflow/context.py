"""The ``context`` a flow definition receives.

``define(flow, context)`` is compiled once and its graph reused by every request, so the
``context`` object that closures capture cannot belong to one request. It is a view: each
attribute and method reads the request that is running in the current thread (the engine sets it
around every node, aggregator, condition and hook it calls).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs

import attrs

from faasflow.errors import FaasflowError, KeyNotFound
from faasflow.interfaces import DataStore

__all__ = ["Context", "Query", "RequestView", "current", "enter_view", "leave_view", "running"]

CONTEXT_PREFIX = "context--"


class Query(Mapping[str, list[str]]):
    """The original request's query string as a multi-dict."""

    def __init__(self, raw: str = "") -> None:
        self.raw = raw.lstrip("?") if raw[:1] == "?" else raw  # made per iteration
        self._parsed: dict[str, list[str]] | None = None

    @property
    def _values(self) -> dict[str, list[str]]:
        # parsed on first use: most iterations never read the query
        if self._parsed is None:
            self._parsed = parse_qs(self.raw, keep_blank_values=True)
        return self._parsed

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of ``name``, or ``default``."""
        values = self._values.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name`` (empty list if absent)."""
        return list(self._values.get(name, []))

    def __getitem__(self, name: str) -> list[str]:
        # a copy, as getlist's: one query may serve every iteration of a request
        return list(self._values[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Query({self.raw!r})"


@attrs.define
class RequestView:
    """What :class:`Context` shows for the request running in this thread."""

    flow_name: str
    request_id: str = ""
    query: Query = attrs.field(factory=Query)
    node: str = ""
    node_input: dict[str, bytes] = attrs.field(factory=dict)
    state: str = "ongoing"
    data_store: DataStore | None = None
    defining: bool = False
    """True while ``define`` runs: reads of request-specific values are then recorded."""
    touched: bool = False
    """Set when ``define`` read ``query`` or ``request_id``: its graph is then per request."""


_view: ContextVar[RequestView | None] = ContextVar("faasflow_request", default=None)


class running:
    """Make ``view`` the request :class:`Context` shows in this thread while the block runs.

    A class rather than a generator context manager: the engine enters one around every
    node, and a generator costs several times more to set up."""

    __slots__ = ("_token", "_view")

    def __init__(self, view: RequestView) -> None:
        self._view = view

    def __enter__(self) -> RequestView:
        self._token = _view.set(self._view)
        return self._view

    def __exit__(self, *exc: object) -> None:
        _view.reset(self._token)


#: ``enter_view(view)``, a token for ``leave_view(token)``: :class:`running` without an object
#: or a call of its own (the engine shows one view per iteration).
enter_view = _view.set
leave_view = _view.reset


def current() -> RequestView | None:
    """The request running in this thread, if any."""
    return _view.get()


def encode_value(key: str, value: Any) -> bytes:
    """faas-flow's stored form ``{"key": k, "value": v}``; bytes keep their type."""
    if isinstance(value, (bytes, bytearray)):
        doc = {"key": key, "value": base64.b64encode(bytes(value)).decode(), "type": "bytes"}
    else:
        doc = {"key": key, "value": value}
    try:
        return json.dumps(doc, separators=(",", ":")).encode()
    except TypeError:
        raise FaasflowError(
            f"context value for {key!r} is a {type(value).__name__}, which is not JSON: "
            "store str, int, float, bool, None, bytes, or lists and dicts of those"
        ) from None


def decode_value(raw: bytes) -> Any:
    doc = json.loads(raw)
    if doc.get("type") == "bytes":
        return base64.b64decode(doc["value"])
    return doc["value"]


class Context:
    """The ``context`` argument of ``define(flow, context)``; see the module docstring."""

    def _view(self, need_store: bool = False) -> RequestView:
        view = _view.get()
        if view is None:
            raise FaasflowError(
                "the flow context is only available while a flow is defined or a request runs"
            )
        if need_store and view.data_store is None:
            raise FaasflowError(
                "context.set/get/delete work while a request runs, not while the flow is defined"
                " or exported: call them inside a modifier, aggregator or hook"
            )
        return view

    def _request_view(self) -> RequestView:
        view = self._view()
        if view.defining:
            view.touched = True
        return view

    @property
    def request_id(self) -> str:
        """Id of the running request."""
        return self._request_view().request_id

    @property
    def name(self) -> str:
        """The flow's name."""
        return self._view().flow_name

    @property
    def query(self) -> Query:
        """The query string of the request that started this run, on every iteration."""
        return self._request_view().query

    @property
    def node(self) -> str:
        """Execution id of the running node (faas-flow's was always empty)."""
        return self._view().node

    @property
    def node_input(self) -> dict[str, bytes]:
        """Outputs of the running node's data-carrying predecessors, keyed by their ids."""
        return dict(self._view().node_input)

    @property
    def state(self) -> str:
        """``ongoing`` while the request runs, then ``success`` or ``failure``."""
        return self._view().state

    def set(self, key: str, value: Any) -> None:
        """Store a JSON value (or bytes) for the rest of the request."""
        store = self._view(need_store=True).data_store
        assert store is not None
        store.set(CONTEXT_PREFIX + key, encode_value(key, value))

    def get(self, key: str, default: Any = None) -> Any:
        """A value stored with :meth:`set`, or ``default`` when there is none."""
        store = self._view(need_store=True).data_store
        assert store is not None
        try:
            return decode_value(store.get(CONTEXT_PREFIX + key))
        except KeyNotFound:
            return default

    def delete(self, key: str) -> None:
        """Forget a stored value (no error when absent)."""
        store = self._view(need_store=True).data_store
        assert store is not None
        store.delete(CONTEXT_PREFIX + key)
