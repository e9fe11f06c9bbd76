"""Operations: the steps a node runs in order, each turning its input bytes into output bytes.

The engine calls :meth:`Operation.execute` with a :class:`Call` that carries everything an
operation may need from the running request (the invoker, ids, deadline, propagation headers).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs

from faasflow.errors import DefinitionError, FaasflowError, FunctionError, FunctionTimeout
from faasflow.interfaces import Invoker, Response

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "Apply",
    "Call",
    "HttpRequest",
    "Modify",
    "Operation",
    "Request",
    "Retry",
    "as_bytes",
    "callable_name",
]

log = logging.getLogger("faasflow.operations")


@attrs.define
class Call:
    """What an operation gets from the running request."""

    invoker: Invoker
    flow_name: str
    request_id: str
    node: str
    """Execution id of the running node (unique per branch instance)."""
    idempotency_key: str
    """Stable for (request, node, branch key): sent as ``Idempotency-Key`` with function calls."""
    headers: dict[str, str] = attrs.field(factory=dict)
    """Headers every outgoing call must carry (trace propagation, request id)."""
    deadline: float | None = None
    """Wall-clock time (``time.time()``) by which the request must finish, if any."""
    default_method: str = "POST"
    default_retry: Retry | None = None
    """How a call without ``retry=`` is retried (the engine passes :meth:`Retry.transient`)."""
    attributes: dict[str, Any] = attrs.field(factory=dict)
    """Filled by the operation (HTTP status, retries, url); reported on its span."""

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline)."""
        import time

        return None if self.deadline is None else max(0.0, self.deadline - time.time())


class Operation(ABC):
    """One step of a node. Subclass it and pass an instance to ``node.add_operation(op)``."""

    @property
    @abstractmethod
    def id(self) -> str:
        """Name shown in exports and spans (function name, ``modifier``, ``http-req-...``)."""

    def properties(self) -> Mapping[str, list[str]]:
        """Flags exported with the DAG (faas-flow: ``isMod``, ``isFunction``, ...)."""
        return {}

    @abstractmethod
    def execute(self, data: bytes, call: Call) -> bytes:
        """Run the step on ``data`` and return its output; raise to fail the node."""


# --- built-in operations -------------------------------------------------------------------

#: ``on_failure(error) -> None | bytes | str``: returning swallows the failure (see :class:`Apply`).
FailureHook = Callable[[FunctionError], object]
#: ``request_handler(request)``: mutate the outgoing :class:`HttpRequest` before it is sent.
RequestHook = Callable[["HttpRequest"], object]
#: ``response_handler(response) -> bytes | str``: replaces the default response handling.
ResponseHook = Callable[[Response], "bytes | str"]

#: Statuses :class:`Retry` retries by default: 429 and every 5xx.
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})


def callable_name(fn: object) -> str:
    """``module.qualname`` of a callable (of its class for callable objects): stable across
    processes, used in exports, the definition hash and messages."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    target = getattr(target, "__func__", target)  # bound methods
    qualname = getattr(target, "__qualname__", None)
    if qualname is None:
        target = type(target)
        qualname = target.__qualname__
    module = getattr(target, "__module__", None) or getattr(
        getattr(target, "__objclass__", None), "__module__", "?"
    )
    return f"{module}.{qualname}"


def as_bytes(value: object, what: str) -> bytes:
    """``value`` as bytes: ``bytes``-like values as they are, ``str`` in UTF-8; anything else
    is a :class:`~faasflow.errors.FaasflowError` naming ``what`` returned it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise FaasflowError(
        f"{what} returned {type(value).__name__} {value!r:.80}; it must return bytes or str"
    )


def _positive(name: str, value: float, *, allow_zero: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DefinitionError(f"Retry({name}=...) must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise DefinitionError(f"Retry({name}=...) must be positive, got {value!r}")


def _statuses(values: Iterable[int]) -> frozenset[int]:
    statuses = frozenset(values)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise DefinitionError(f"Retry(retry_on=...) takes HTTP statuses, got {status!r}")
    return statuses


@attrs.frozen
class Retry:
    """How a function call or HTTP request is retried (faas-flow has no retries).

    ``attempts`` counts every try, the first included. Before retry ``n`` (1-based) the call
    waits ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` seconds, shortened by up
    to ``jitter`` (a fraction) at random, longer if the answer's ``Retry-After`` asks for it (up
    to ``max_backoff``), and never past the request's deadline. Retried: the statuses in
    ``retry_on`` (429 and 5xx), connection errors and timeouts (each can be switched off).
    """

    attempts: int = attrs.field(default=3)
    initial_backoff: float = attrs.field(default=0.1)
    multiplier: float = attrs.field(default=2.0)
    max_backoff: float = attrs.field(default=10.0)
    jitter: float = attrs.field(default=0.2)
    retry_on: frozenset[int] = attrs.field(default=DEFAULT_RETRY_STATUSES, converter=_statuses)
    connection_errors: bool = True
    timeouts: bool = True
    refused_or_reset_only: bool = False
    """Retry only connection errors caused by a refused, reset or dropped connection."""

    @classmethod
    def transient(cls, attempts: int = 3) -> Retry:
        """The default of every function call without ``retry=``: a refused or reset
        connection and 502/503/504 (a gateway whose function replica died) are tried
        ``attempts`` times in all; timeouts and other statuses are not (the call may have
        done its work)."""
        return cls(
            attempts=attempts, initial_backoff=0.1, max_backoff=1.0,
            retry_on=frozenset({502, 503, 504}), timeouts=False, refused_or_reset_only=True,
        )

    @classmethod
    def never(cls) -> Retry:
        """One attempt: ``retry=Retry.never()`` switches the default retry off for a call."""
        return cls(attempts=1)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise DefinitionError(f"Retry(attempts=...) must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise DefinitionError(f"Retry(attempts=...) must be at least 1, got {self.attempts}")
        _positive("initial_backoff", self.initial_backoff)
        _positive("max_backoff", self.max_backoff)
        _positive("multiplier", self.multiplier)
        if self.multiplier < 1:
            raise DefinitionError(f"Retry(multiplier=...) must be >= 1, got {self.multiplier}")
        _positive("jitter", self.jitter)
        if self.jitter > 1:
            raise DefinitionError(f"Retry(jitter=...) is a fraction in [0, 1], got {self.jitter}")

    def backoff(self, retry: int, *, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        delay = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        delay *= 1 - self.jitter * random.random()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay

    def retries_status(self, status: int) -> bool:
        return status in self.retry_on

    def retries_error(self, error: FunctionError) -> bool:
        if error.timeout:
            return self.timeouts
        if self.refused_or_reset_only and not isinstance(error.__cause__, ConnectionError):
            return False
        return self.connection_errors


@attrs.define
class HttpRequest:
    """The outgoing call a ``request_handler`` may change before it is sent.

    For ``apply`` the ``url`` is the function name (the invoker resolves it: the gateway's
    ``/function/<name>`` or a local callable); changing it calls another function.
    """

    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, list[str]]
    body: bytes


def _merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win; names compare case-insensitively and keep the winner's spelling."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


def _with_query(url: str, query: Mapping[str, list[str]]) -> str:
    if not query:
        return url
    encoded = urlencode([(k, v) for k, values in query.items() for v in values])
    parts = urlsplit(url)
    joined = f"{parts.query}&{encoded}" if parts.query else encoded
    return urlunsplit(parts._replace(query=joined))


def _retry_after(response: Response) -> float | None:
    for name, value in response.headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


@attrs.frozen(eq=False, kw_only=True)
class _HttpOperation(Operation):
    """What ``apply`` and ``request`` share: headers, retries, handlers, failure handling."""

    method: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    query: Mapping[str, list[str]] = attrs.field(factory=dict)
    on_failure: FailureHook | None = None
    request_handler: RequestHook | None = None
    response_handler: ResponseHook | None = None
    retry: Retry | None = None
    timeout: float | None = None

    def properties(self) -> Mapping[str, list[str]]:
        return {
            "isMod": ["false"],
            "isFunction": [str(isinstance(self, Apply)).lower()],
            "isHttpRequest": [str(isinstance(self, Request)).lower()],
            "hasFailureHandler": [str(self.on_failure is not None).lower()],
            "hasResponseHandler": [str(self.response_handler is not None).lower()],
        }

    @abstractmethod
    def _target(self) -> str:
        """The function name or URL the call goes to."""

    @abstractmethod
    def _send(self, request: HttpRequest, call: Call, timeout: float | None) -> Response:
        """One attempt."""

    def _fallback_url(self, request: HttpRequest) -> str:
        return request.url

    def execute(self, data: bytes, call: Call) -> bytes:
        method = self.method
        if method is None:
            method = next(
                (v.upper() for k, v in self.headers.items() if k.lower() == "method"),
                call.default_method,
            )
        request = HttpRequest(
            method=method,
            url=self._target(),
            headers=_merge_headers(
                call.headers,
                {"X-Faas-Flow-Reqid": call.request_id, "Idempotency-Key": call.idempotency_key},
                self.headers,
            ),
            query={k: list(v) for k, v in self.query.items()},
            body=data,
        )
        if self.request_handler is not None:
            self.request_handler(request)
            request.body = as_bytes(request.body, f"request_handler of {self.id!r}")
        response, error = self._attempts(request, call)
        if response is not None and self.response_handler is not None:
            return as_bytes(self.response_handler(response), f"response_handler of {self.id!r}")
        if response is not None and response.ok:
            return response.body
        if error is None:
            assert response is not None
            url = response.url or self._fallback_url(request)
            error = FunctionError(
                f"invalid return status {response.status} while connecting {url}",
                url=url,
                status=response.status,
                body=response.body,
            )
        if self.on_failure is None:
            raise error
        replacement = self.on_failure(error)
        if replacement is None:
            return response.body if response is not None else b""
        return as_bytes(replacement, f"on_failure handler of {self.id!r}")

    def _attempts(
        self, request: HttpRequest, call: Call
    ) -> tuple[Response | None, FunctionError | None]:
        """Send with retries; the last answer, or the last connection error."""
        retry = self.retry if self.retry is not None else call.default_retry
        attempts = retry.attempts if retry is not None else 1
        call.attributes["http.request.method"] = request.method
        call.attributes["url.full"] = self._fallback_url(request)
        retries = 0
        while True:
            response: Response | None = None
            error: FunctionError | None = None
            try:
                response = self._send(request, call, self._timeout(call, request))
            except FunctionError as exc:
                error = exc
            if response is not None:
                call.attributes["http.response.status_code"] = response.status
                if response.url:
                    call.attributes["url.full"] = response.url
            call.attributes["faasflow.retries"] = retries
            if retry is None or retries + 1 >= attempts:
                return response, error
            if response is not None:
                if response.ok or not retry.retries_status(response.status):
                    return response, None
                delay = retry.backoff(retries + 1, retry_after=_retry_after(response))
            else:
                assert error is not None
                if not retry.retries_error(error):
                    return None, error
                delay = retry.backoff(retries + 1)
            if call.deadline is not None and time.time() + delay >= call.deadline:
                return response, error
            # at least once: the function may have run although its answer was lost
            log.warning(
                "[Request `%s`] %s at %s %s; retrying (%d of %d) in %.2f s", call.request_id,
                self.id, self._fallback_url(request),
                f"answered {response.status}" if response is not None else f"failed: {error}",
                retries + 1, attempts - 1, delay,
            )
            time.sleep(delay)
            retries += 1

    def _timeout(self, call: Call, request: HttpRequest) -> float | None:
        remaining = call.remaining()
        if remaining is not None and remaining <= 0:
            raise FunctionTimeout(
                f"request {call.request_id} reached its deadline before calling "
                f"{self._fallback_url(request)}",
                url=self._fallback_url(request),
            )
        if remaining is None:
            return self.timeout
        if self.timeout is None:
            # the invoker's own timeout still applies: a request deadline (an hour by
            # default) only ever shortens a call's wait, never lengthens it
            default = getattr(call.invoker, "timeout", None)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                return min(float(default), remaining)
            return remaining
        return min(self.timeout, remaining)


@attrs.frozen(eq=False)
class Apply(_HttpOperation):
    """``node.apply(function)``: call a function through the invoker with the data as body.

    The output is the response body. A non-2xx answer (after retries) or a connection error
    fails the node with :class:`~faasflow.errors.FunctionError`, unless ``on_failure(error)``
    returns normally: the chain then goes on with the response body (empty after a connection
    error), or with what ``on_failure`` returned if that is bytes or str. ``response_handler``
    replaces all of this: its result is the output and the status is not checked.
    """

    function: str = attrs.field(kw_only=False)

    @property
    def id(self) -> str:
        return self.function

    def _target(self) -> str:
        return self.function

    def _fallback_url(self, request: HttpRequest) -> str:
        return f"/function/{request.url}"

    def _send(self, request: HttpRequest, call: Call, timeout: float | None) -> Response:
        call.attributes["faasflow.function"] = request.url
        return call.invoker.call(
            request.url,
            request.body,
            method=request.method,
            headers=request.headers,
            query=request.query,
            timeout=timeout,
        )


@attrs.frozen(eq=False)
class Request(_HttpOperation):
    """``node.request(url)``: call any HTTP URL with the data as body; same options and
    failure handling as :class:`Apply` (and ``response_handler``'s result is the output,
    which faas-flow lost)."""

    url: str = attrs.field(kw_only=False)

    @property
    def id(self) -> str:
        return f"http-req-{self.url[-16:]}"

    def _target(self) -> str:
        return self.url

    def _send(self, request: HttpRequest, call: Call, timeout: float | None) -> Response:
        return call.invoker.request(
            request.method,
            _with_query(request.url, request.query),
            request.body,
            headers=request.headers,
            timeout=timeout,
        )


@attrs.frozen(eq=False)
class Modify(Operation):
    """``node.modify(fn)``: transform the data in-process; ``fn`` may return bytes or str."""

    fn: Callable[[bytes], object]

    @property
    def id(self) -> str:
        return "modifier"

    def properties(self) -> Mapping[str, list[str]]:
        return {
            "isMod": ["true"],
            "isFunction": ["false"],
            "isHttpRequest": ["false"],
            "hasFailureHandler": ["false"],
            "hasResponseHandler": ["false"],
        }

    def execute(self, data: bytes, call: Call) -> bytes:
        return self.transform(data)

    def transform(self, data: bytes) -> bytes:
        """:meth:`execute` without its :class:`Call`, which a modifier never reads (the engine
        calls this directly and makes no call)."""
        result = self.fn(data)
        if type(result) is bytes:  # the common case: no name looked up for a message
            return result
        return as_bytes(result, f"modifier {callable_name(self.fn)}")
