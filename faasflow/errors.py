"""The faasflow error tree.

Every error a user can meet is a :class:`FaasflowError`; its message names the thing that went
wrong (request id, node id, backend, endpoint) and, where there is one, the fix.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BackendError",
    "CompareFailed",
    "ConfigurationError",
    "DefinitionError",
    "DuplicateBackendError",
    "FaasflowError",
    "FlowFailure",
    "FunctionError",
    "FunctionTimeout",
    "KeyNotFound",
    "PluginLoadError",
    "RequestIdInUse",
    "RequestNotActive",
    "RequestNotFound",
    "SignatureError",
    "UnknownBackendError",
]


class FaasflowError(Exception):
    """Base of every error raised by faasflow."""


class ConfigurationError(FaasflowError):
    """A setting (environment variable, option, secret) is missing or malformed."""


class DefinitionError(FaasflowError):
    """A flow definition is invalid; the message names the offending node, edge or DAG."""


class KeyNotFound(FaasflowError, KeyError):
    """A StateStore or DataStore key does not exist in the configured request namespace."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        self.where = where
        super().__init__(key)

    def __str__(self) -> str:
        suffix = f" in {self.where}" if self.where else ""
        return f"key {self.key!r} not found{suffix}"


class CompareFailed(FaasflowError):
    """An atomic compare-and-swap found a value other than the expected one."""

    def __init__(self, key: str, expected: str | None = None, where: str = "") -> None:
        self.key = key
        self.expected = expected
        self.where = where
        super().__init__(key)

    def __str__(self) -> str:
        suffix = f" in {self.where}" if self.where else ""
        return f"compare-and-swap of key {self.key!r} failed: value changed{suffix}"


class BackendError(FaasflowError):
    """A backend (store, tracer, invoker) failed; names the backend, endpoint and operation."""

    def __init__(self, backend: str, operation: str, endpoint: str, cause: object) -> None:
        self.backend = backend
        self.operation = operation
        self.endpoint = endpoint
        self.cause = cause
        super().__init__(f"{backend} {operation} failed at {endpoint}: {cause}")


class UnknownBackendError(FaasflowError, LookupError):
    """A configured backend name is not provided by any installed plugin."""

    def __init__(
        self, kind: str, name: str, available: Iterable[str], env_var: str, broken: str = ""
    ) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        self.env_var = env_var
        # faasflow's own plugins are not on PyPI yet: name the way that works today as well
        hint = (
            f"pip install faasflow-{name} once it is published; faasflow's own plugins install "
            f"from a clone of its repository: pip install <repo>/plugins/faasflow_"
            f"{name.replace('-', '_')}"
        )
        msg = (
            f"unknown {kind.replace('_', ' ')} {name!r} (from {env_var}); "
            f"available: {', '.join(self.available) or 'none'} "
            f"- is the plugin installed? ({hint})"
        )
        if broken:
            msg += f"; note: {broken}"
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


class PluginLoadError(FaasflowError):
    """A plugin could not be imported or declared an invalid backend."""


class DuplicateBackendError(PluginLoadError):
    """Two plugins declare a backend of the same kind under the same name."""


class SignatureError(FaasflowError):
    """A forwarded iteration or an authenticated request carries a missing or wrong signature."""


class RequestNotFound(FaasflowError, LookupError):
    """No active or recorded request has this id."""

    def __init__(self, request_id: str, action: str = "find") -> None:
        self.request_id = request_id
        super().__init__(
            f"failed to {action} request {request_id}, check if request is active"
        )


class RequestIdInUse(FaasflowError):
    """A caller-supplied request id belongs to a request that is running or still recorded."""

    def __init__(self, request_id: str, flow: str) -> None:
        self.request_id = request_id
        super().__init__(
            f"request id {request_id!r} of flow {flow!r} is already in use; send another "
            "X-Faas-Flow-Reqid, or none to get a generated one"
        )


class RequestNotActive(FaasflowError):
    """An iteration or a control action reached a request that is not running."""

    def __init__(self, request_id: str, state: str, action: str = "continue") -> None:
        self.request_id = request_id
        self.state = state
        # states are spelled in lower case in every message, whichever layer names them
        # (the request state says RUNNING, the record says running)
        shown = state.lower()
        if action == "resume":
            reason = "flow is not paused"
        elif action == "pause" and shown == "paused":
            reason = "flow is paused already"
        else:
            reason = "flow is not running"
        super().__init__(f"failed to {action} request {request_id}: {reason} (state {shown})")


class FunctionError(FaasflowError):
    """A function or HTTP call answered with a non-2xx status or could not be reached."""

    timeout: bool = False
    """True when the call did not answer in time."""

    def __init__(
        self, message: str, *, url: str = "", status: int | None = None, body: bytes = b""
    ) -> None:
        self.url = url
        self.status = status
        self.body = body
        super().__init__(message)


class FunctionTimeout(FunctionError):
    """A function or endpoint did not answer within the timeout."""

    timeout = True


class FlowFailure(FaasflowError):
    """A request failed: an operation, aggregator, condition or foreach raised."""

    def __init__(self, message: str, *, node: str = "", request_id: str = "") -> None:
        self.node = node
        self.request_id = request_id
        super().__init__(message)
