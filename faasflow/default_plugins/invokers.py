"""``local`` and ``openfaas`` (alias ``http``): the built-in invokers.

``openfaas`` calls functions through an OpenFaaS gateway (``/function/<name>``) and hands each
next iteration of a request to the gateway's asynchronous queue
(``/async-function/<flow>/flow/<id>/forward``), over pooled keep-alive connections.

``local`` calls Python callables in this process and runs forwarded iterations on a thread pool
of this process; a function name it does not know goes to the gateway over HTTP when one is
configured. A registered callable is either ``fn(data) -> bytes | str | None`` or
``fn(data, request)``, where ``request`` is a :class:`LocalRequest` (method, headers, query); it
may also return a :class:`~faasflow.Response` to choose the status. An exception inside it
becomes a 500 answer whose body is ``"<Type>: <message>"``. A Python callable runs to its end:
``timeout`` applies only to calls that go over HTTP (a thread cannot be interrupted).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import attrs

from faasflow.backends import Backend
from faasflow.errors import BackendError, ConfigurationError, FunctionError
from faasflow.hookspecs import hookimpl
from faasflow.http import DEFAULT_TIMEOUT, HttpClient
from faasflow.interfaces import Deliver, Invoker, Options, Response
from faasflow.shortcuts import call_shortcut, forward_shortcut

from .workpool import WorkPool

__all__ = [
    "HandOn", "LocalFunction", "LocalInvoker", "LocalRequest", "LocalRun", "OpenFaasInvoker",
]

log = logging.getLogger("faasflow.invoker")

DEFAULT_GATEWAY = "http://gateway.openfaas:8080"
DEFAULT_WORKERS = 8
#: Iterations waiting for the local invoker's pool past which a pool worker runs the next one
#: it hands on itself (back-pressure: bounded memory for wide fan-outs).
QUEUE_LIMIT = 1024

#: ``fn(data)`` or ``fn(data, request)``; returns bytes, str, None or a Response.
LocalFunction = Callable[..., Any]


def _gateway(raw: str, backend: str) -> str:
    url = raw.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"  # faas-flow accepted a bare host:port
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigurationError(
            f"gateway URL {raw!r} of the {backend} invoker is not an http(s) URL; set "
            "FAASFLOW_GATEWAY_URL=http://<host>:<port>"
        )
    return url


def _seconds(raw: str | None, name: str, default: float) -> float:
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be positive")
    return value


def _function_url(gateway: str, function: str, query: Mapping[str, list[str]] | None) -> str:
    url = f"{gateway}/function/{quote(function, safe='')}"
    if query:
        url += "?" + urlencode(query, doseq=True)
    return url


@attrs.define(eq=False)
class OpenFaasInvoker(Invoker):
    """Calls functions and forwards iterations through an OpenFaaS gateway."""

    gateway_url: str = DEFAULT_GATEWAY
    timeout: float = DEFAULT_TIMEOUT
    client: HttpClient = attrs.field(
        default=attrs.Factory(lambda self: HttpClient(timeout=self.timeout), takes_self=True)
    )

    @classmethod
    def from_options(cls, options: Options) -> OpenFaasInvoker:
        """Options: ``gateway_url`` (also ``FAASFLOW_GATEWAY_URL``, ``gateway``), ``timeout``."""
        return cls(
            _gateway(options.get("gateway_url") or DEFAULT_GATEWAY, "openfaas"),
            _seconds(options.get("timeout"), "FAASFLOW_OPENFAAS_TIMEOUT", DEFAULT_TIMEOUT),
        )

    def call(
        self,
        function: str,
        data: bytes,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, list[str]] | None = None,
        timeout: float | None = None,
    ) -> Response:
        shortcut = call_shortcut(self.gateway_url)
        if shortcut is not None:
            answer = shortcut.call(function, data, method=method, headers=headers or {},
                                   query=query,
                                   timeout=self.client.timeout if timeout is None else timeout)
            if answer is not None:
                return answer
        url = _function_url(self.gateway_url, function, query)
        return self.client.request(method, url, data, headers=headers, timeout=timeout)

    def request(
        self,
        method: str,
        url: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        return self.client.request(method, url, data, headers=headers, timeout=timeout)

    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        shortcut = forward_shortcut(self.gateway_url)
        if shortcut is not None and shortcut.forward(flow_name, request_id, message, headers):
            return
        url = (
            f"{self.gateway_url}/async-function/{quote(flow_name, safe='')}"
            f"/flow/{quote(request_id, safe='')}/forward"
        )
        sent = {**headers, "Content-Type": "application/json"}
        try:
            try:
                answer = self.client.request("POST", url, message, headers=sent)
            except FunctionError as exc:
                if exc.timeout or not isinstance(exc.__cause__, ConnectionError):
                    raise
                # a pooled connection the gateway closed as the request went out: once more
                # on a fresh one (a second copy of an iteration is a harmless duplicate)
                answer = self.client.request("POST", url, message, headers=sent)
        except FunctionError as exc:
            raise BackendError("openfaas invoker", "forward", url, exc) from exc
        if answer.status not in (200, 202):
            body = answer.body[:500].decode(errors="replace")
            raise BackendError("openfaas invoker", "forward", url, f"{answer.status}: {body}")

    def close(self) -> None:
        self.client.close()


@attrs.frozen
class LocalRequest:
    """What a two-argument local function receives besides the body."""

    function: str
    method: str = "POST"
    headers: Mapping[str, str] = attrs.field(factory=dict)
    query: Mapping[str, list[str]] = attrs.field(factory=dict)


@attrs.frozen
class _Registered:
    fn: LocalFunction
    wants_request: bool


def _wants_request(fn: LocalFunction) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            positional += 1
    return positional >= 2


def _as_response(name: str, result: object) -> Response:
    url = f"local:{name}"
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(200, b"", {}, url)
    if isinstance(result, str):
        return Response(200, result.encode(), {}, url)
    if isinstance(result, bytes | bytearray | memoryview):
        return Response(200, bytes(result), {}, url)
    message = (
        f"TypeError: local function {name!r} returned {type(result).__name__}; "
        "return bytes, str, None or a faasflow.Response"
    )
    return Response(500, message.encode(), {}, url)


@attrs.define(eq=False)
class LocalInvoker(Invoker):
    """Python callables and an in-process worker pool; unknown names go to ``gateway_url``."""

    in_process = True

    gateway_url: str | None = None
    workers: int = DEFAULT_WORKERS
    timeout: float = DEFAULT_TIMEOUT
    _functions: dict[str, _Registered] = attrs.field(factory=dict, init=False)
    _deliver: Deliver | None = attrs.field(default=None, init=False)
    _pool: WorkPool[_Job] | None = attrs.field(default=None, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _client: HttpClient | None = attrs.field(default=None, init=False)

    @classmethod
    def from_options(cls, options: Options) -> LocalInvoker:
        """Options: ``gateway_url`` (optional), ``workers``, ``timeout``."""
        raw_workers = options.get("workers") or str(DEFAULT_WORKERS)
        try:
            workers = int(raw_workers)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ConfigurationError(
                f"FAASFLOW_LOCAL_WORKERS={raw_workers!r} must be a whole number of at least 1"
            )
        gateway = options.get("gateway_url")
        return cls(
            _gateway(gateway, "local") if gateway else None,
            workers,
            _seconds(options.get("timeout"), "FAASFLOW_LOCAL_TIMEOUT", DEFAULT_TIMEOUT),
        )

    def add_functions(self, functions: Mapping[str, LocalFunction]) -> None:
        """Register Python callables by function name (replacing earlier ones of that name)."""
        for name, fn in functions.items():
            if not callable(fn):
                raise ConfigurationError(
                    f"local function {name!r} is {type(fn).__name__}, not a callable"
                )
            self._functions[name] = _Registered(fn, _wants_request(fn))

    @property
    def functions(self) -> list[str]:
        """Names of the registered callables."""
        return sorted(self._functions)

    def _http(self) -> HttpClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = HttpClient(timeout=self.timeout)
        return self._client

    def call(
        self,
        function: str,
        data: bytes,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, list[str]] | None = None,
        timeout: float | None = None,
    ) -> Response:
        registered = self._functions.get(function)
        if registered is None:
            if self.gateway_url is None:
                known = ", ".join(self.functions) or "none"
                raise FunctionError(
                    f"function {function!r} is not registered with the local invoker "
                    f"(registered: {known}); pass it in functions={{{function!r}: callable}} "
                    "or set FAASFLOW_GATEWAY_URL to call it on an OpenFaaS gateway",
                    url=f"local:{function}",
                )
            url = _function_url(self.gateway_url, function, query)
            return self._http().request(method, url, data, headers=headers, timeout=timeout)
        try:
            if registered.wants_request:
                request = LocalRequest(function, method, dict(headers or {}), dict(query or {}))
                result = registered.fn(data, request)
            else:
                result = registered.fn(data)
        except Exception as exc:
            return Response(500, f"{type(exc).__name__}: {exc}".encode(), {}, f"local:{function}")
        return _as_response(function, result)

    def request(
        self,
        method: str,
        url: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        return self._http().request(method, url, data, headers=headers, timeout=timeout)

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        deliver = self._deliver
        if deliver is None:
            raise BackendError(
                "local invoker", "forward", "in-process",
                "no engine is bound to run iterations (call bind(deliver) first)",
            )
        self._queue((deliver, flow_name, request_id, message, dict(headers)), request_id)

    def forward_local(
        self, run: LocalRun, flow_name: str, request_id: str, item: object
    ) -> None:
        """Run ``run(flow_name, request_id, item, None)`` as a forwarded iteration is run (on
        the pool, the first one handed on by a pool worker next on that worker, with the same
        back-pressure): for an engine whose iteration never leaves this process, so that it
        hands on the message itself instead of its signed bytes."""
        self._queue((run, flow_name, request_id, item, None), request_id)

    def hand_on(self, run: HandOn, flow_name: str) -> Callable[[str, Any, Any], None]:
        """``hand(request_id, message, handed)``: runs ``run(flow_name, request_id, message,
        handed)`` as :meth:`forward_local` runs its item, in one call on the path every
        iteration handed on in this process takes (a chain's next step goes straight to the
        worker's own queue)."""
        to_pool = self._to_pool

        def hand(request_id: str, message: Any, handed: Any) -> None:
            job = (run, flow_name, request_id, message, handed)
            pending = _worker.pending
            if pending is not None and not pending:
                pending.append(job)  # next on this worker, as _queue does
                return
            to_pool(job, request_id, pending)

        return hand

    def _queue(self, job: _Job, request_id: str) -> None:
        pending = _worker.pending
        if pending is not None and not pending:
            # The first iteration handed on by an iteration running on a worker runs next on
            # that same worker: a chain never waits for a thread hand-off. Any further ones
            # go to the pool and run in parallel.
            pending.append(job)
            return
        self._to_pool(job, request_id, pending)

    def _to_pool(self, job: _Job, request_id: str, pending: list[_Job] | None) -> None:
        """Queue ``job`` on the pool (``pending``: the calling worker's own queue, None on a
        thread that is no worker)."""
        pool = self._pool
        if pool is None:  # not ``or``: a pool with an empty queue is falsy (``len``)
            pool = self._open(request_id)
        if pending is not None and len(pool.jobs) >= QUEUE_LIMIT and not _worker.inline:
            # Back-pressure: a worker handing on more iterations than the pool keeps up with
            # (a foreach of 100,000 branches) runs this one itself, so the queue, and the
            # memory its messages hold, stays bounded. One level only: what that iteration
            # hands on is queued.
            _worker.inline = True
            try:
                _deliver(job)
            finally:
                _worker.inline = False
            return
        if pending is None and len(pool.jobs) >= QUEUE_LIMIT:
            # back-pressure on a thread of the caller's (an in-process start handing on a
            # wide foreach): it waits for the pool, which never waits for it
            pool.wait_for_room(QUEUE_LIMIT, 1.0)
        if not pool.put(job):
            if not self._closed:
                # as an executor refuses work once the interpreter shuts down: the iteration
                # fails its request rather than keep the process from ending
                raise RuntimeError(
                    f"iteration of request {request_id} not queued: the interpreter is "
                    "shutting down"
                )
            raise self._closed_error(request_id)

    def _open(self, request_id: str) -> WorkPool[_Job]:
        with self._lock:
            if self._closed:
                raise self._closed_error(request_id)
            if self._pool is None:
                self._pool = WorkPool(self.workers, _run, "faasflow")
            return self._pool

    @staticmethod
    def _closed_error(request_id: str) -> BackendError:
        return BackendError(
            "local invoker", "forward", "in-process",
            f"the invoker is closed; iteration of request {request_id} not queued",
        )

    def close(self, *, wait: bool = True) -> None:
        """Wait for queued iterations to finish, then stop the workers and the HTTP pool.

        With ``wait=False`` queued iterations are dropped and a running one is left to finish
        on its own (a thread cannot be interrupted): for a caller that gave up on a request.
        """
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop(wait=wait, drop=not wait)
        if self._client is not None:
            self._client.close()


#: What :meth:`LocalInvoker.forward_local` runs: (flow, request id, item, None).
LocalRun = Callable[[str, str, Any, None], None]
#: What :meth:`LocalInvoker.hand_on` runs: (flow, request id, message, hand-over).
HandOn = Callable[[str, str, Any, Any], None]
#: (deliver, flow, request id, message, headers), (run, flow, request id, item, None) or
#: (hand-on run, flow, request id, message, hand-over).
_Job = tuple[Deliver | LocalRun | HandOn, str, str, Any, Any]


class _Worker(threading.local):
    """What a thread of the pool is doing (on any other thread: the class defaults)."""

    pending: list[_Job] | None = None
    """The iterations the running one handed on first, to run next on this thread."""
    inline: bool = False
    """The worker runs an iteration handed on past the queue limit itself."""


_worker = _Worker()


def _run(job: _Job) -> None:
    """Run one iteration on a pool worker, then the iteration it handed on first, and so on."""
    pending: list[_Job] = [job]
    _worker.pending = pending
    _worker.inline = False
    try:
        while pending:
            deliver, flow_name, request_id, message, headers = pending.pop()
            try:  # _deliver, written out: one call less per iteration of a chain
                deliver(flow_name, request_id, message, headers)
            except Exception:
                _failed(flow_name, request_id)
    finally:
        _worker.pending = None


def _deliver(job: _Job) -> None:
    deliver, flow_name, request_id, message, headers = job
    try:
        deliver(flow_name, request_id, message, headers)
    except Exception:
        _failed(flow_name, request_id)


def _failed(flow_name: str, request_id: str) -> None:
    log.exception(
        "iteration of request %s of flow %s failed in the local invoker", request_id, flow_name,
    )


_GATEWAY_ENV = {"gateway_url": ("FAASFLOW_GATEWAY_URL", "gateway")}


@hookimpl
def faasflow_invokers() -> Iterable[Backend]:
    yield Backend(
        "local",
        LocalInvoker.from_options,
        summary="Python callables in this process; iterations on an in-process worker pool.",
        env={**_GATEWAY_ENV, "workers": ("FAASFLOW_WORKERS",)},
        options={
            "gateway_url": "gateway for functions not registered locally (default: none)",
            "workers": f"threads running iterations (default {DEFAULT_WORKERS})",
            "timeout": f"seconds to wait for a gateway function (default {DEFAULT_TIMEOUT:g})",
        },
    )
    openfaas_options = {
        "gateway_url": f"OpenFaaS gateway (default {DEFAULT_GATEWAY})",
        "timeout": f"seconds to wait for a function (default {DEFAULT_TIMEOUT:g})",
    }
    yield Backend(
        "openfaas",
        OpenFaasInvoker.from_options,
        summary="Functions and async iterations through an OpenFaaS gateway (pooled HTTP).",
        env=_GATEWAY_ENV,
        options=openfaas_options,
    )
    yield Backend(
        "http",
        OpenFaasInvoker.from_options,
        summary="Alias of openfaas.",
        env=_GATEWAY_ENV,
        options=openfaas_options,
    )
