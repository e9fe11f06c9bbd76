"""The options of a function call (``apply``) or HTTP request (``request``), defined once.

:class:`CallOptions` is what type checkers see (``**options: Unpack[CallOptions]``, so a
misspelt option is a type error); :func:`check_call_options` is what runs, so a misspelt option
from untyped code is a :class:`~faasflow.errors.DefinitionError` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from faasflow.errors import DefinitionError
from faasflow.operations import FailureHook, RequestHook, ResponseHook, Retry

from .checks import check_callable

__all__ = ["CALL_OPTIONS", "CallOptions", "check_call_options"]


class CallOptions(TypedDict, total=False):
    """Keyword options of ``node.apply(function, ...)`` and ``node.request(url, ...)``."""

    method: str
    """HTTP method; default ``POST`` (or ``FAASFLOW_DEFAULT_METHOD``)."""
    headers: Mapping[str, str]
    query: Mapping[str, str | Iterable[str]]
    on_failure: FailureHook
    request_handler: RequestHook
    response_handler: ResponseHook
    retry: Retry
    timeout: float
    """Seconds to wait for each attempt's answer."""


#: The option names, in the order messages list them.
CALL_OPTIONS: tuple[str, ...] = tuple(CallOptions.__annotations__)


def check_call_options(what: str, options: Mapping[str, object]) -> dict[str, Any]:
    """The keyword arguments of :class:`~faasflow.operations.Apply` / ``Request`` for
    ``options``, checked; ``what`` names the call in messages."""
    unknown = [name for name in options if name not in CALL_OPTIONS]
    if unknown:
        raise DefinitionError(
            f"{what}: option(s) {', '.join(sorted(unknown))} do not apply to a function call "
            f"(faas-flow ignores them, faasflow rejects them); valid options: "
            f"{', '.join(CALL_OPTIONS)}"
            + (
                "; aggregator= belongs to dag.node() and forwarder= to dag.edge()"
                if {"aggregator", "forwarder", "execution_only"} & set(unknown)
                else ""
            )
        )
    method = options.get("method")
    if method is not None and (not isinstance(method, str) or not method.isalpha()):
        raise DefinitionError(f"{what}: method must be an HTTP method name, got {method!r}")
    for name in ("on_failure", "request_handler", "response_handler"):
        if options.get(name) is not None:
            check_callable(options[name], f"{what}: {name}")
    retry = options.get("retry")
    if retry is not None and not isinstance(retry, Retry):
        raise DefinitionError(
            f"{what}: retry must be a faasflow.Retry(...), got {type(retry).__name__}"
        )
    timeout = options.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise DefinitionError(f"{what}: timeout must be a positive number of seconds")
    return {
        "method": method.upper() if isinstance(method, str) else None,
        "headers": _headers(what, options.get("headers")),
        "query": _query(what, options.get("query")),
        "on_failure": options.get("on_failure"),
        "request_handler": options.get("request_handler"),
        "response_handler": options.get("response_handler"),
        "retry": retry,
        "timeout": float(timeout) if isinstance(timeout, (int, float)) else None,
    }


def _headers(what: str, headers: object) -> dict[str, str]:
    clean: dict[str, str] = {}
    if headers is None:
        return clean
    if not isinstance(headers, Mapping):
        raise DefinitionError(f"{what}: headers must be a dict of str to str")
    for key, value in headers.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise DefinitionError(
                f"{what}: header {key!r}: names and values must be strings, got {value!r}"
            )
        clean[key] = value
    return clean


def _query(what: str, query: object) -> dict[str, list[str]]:
    clean: dict[str, list[str]] = {}
    if query is None:
        return clean
    if not isinstance(query, Mapping):
        raise DefinitionError(f"{what}: query must be a dict of str to str or list of str")
    for name, given in query.items():
        items: list[object]
        if isinstance(given, str):
            items = [given]
        elif isinstance(given, Iterable) and not isinstance(given, (bytes, Mapping)):
            items = list(given)
        else:
            items = [given]
        if not isinstance(name, str) or not name or not all(isinstance(v, str) for v in items):
            raise DefinitionError(f"{what}: query {name!r}: values must be strings, got {given!r}")
        clean[name] = [str(v) for v in items]
    return clean
