"""``faasflow.run``: run a flow to the end in this process, with no server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import attrs

from faasflow.backends import Kind
from faasflow.interfaces import Invoker, Response
from faasflow.results import Result, Status, take_failure
from faasflow.settings import Settings

from .executor import Backends, Engine

__all__ = ["RunResult", "run"]


RunResult = Result
"""Deprecated alias of :class:`faasflow.Result` (what ``faasflow.run`` answers)."""


@attrs.define
class _Embedded(Invoker):
    """Iterations and registered functions in this process; every other call goes to the
    configured invoker."""

    local: Any
    configured: Invoker
    in_process = True

    def call(self, function: str, data: bytes, **kwargs: Any) -> Response:
        if function in getattr(self.local, "functions", {}):
            return self.local.call(function, data, **kwargs)  # type: ignore[no-any-return]
        return self.configured.call(function, data, **kwargs)

    def request(self, method: str, url: str, data: bytes, **kwargs: Any) -> Response:
        return self.configured.request(method, url, data, **kwargs)

    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        self.local.forward(flow_name, request_id, message, headers)

    @property
    def forward_local(self) -> Any:
        """The local invoker's (the engine hands iterations on to it as messages)."""
        return getattr(self.local, "forward_local", None)

    @property
    def hand_on(self) -> Any:
        """The local invoker's (the engine hands iterations on to it as messages)."""
        return getattr(self.local, "hand_on", None)

    def bind(self, deliver: Any) -> None:
        self.local.bind(deliver)

    def close(self, *, wait: bool = True) -> None:
        self.local.close(wait=wait)
        if self.configured is not self.local:
            self.configured.close()


def run(
    flow_or_define: Any,
    data: bytes | str = b"",
    *,
    functions: Mapping[str, Callable[..., object]] | None = None,
    query: str | Mapping[str, str | list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
    settings: Settings | None = None,
) -> Result:
    """Run a flow (a :class:`faasflow.Flow` or a ``define(flow, context)`` function) on
    ``data`` and return its final output.

    ``functions`` maps function names to Python callables (``bytes -> bytes | str``); other
    names go through the configured invoker. Iterations run on an in-process worker pool, so
    parallel branches really run in parallel. After ``timeout`` seconds the request is stopped.
    """
    from faasflow.flow import Flow
    from faasflow.plugins import Registry

    flow = flow_or_define if isinstance(flow_or_define, Flow) else Flow(flow_or_define)
    settings = settings or Settings.from_env()
    registry = Registry.shared(settings)
    local = registry.create(Kind.INVOKER, settings, "local")
    if functions:
        local.add_functions(functions)
    configured = (
        local
        if settings.backend_name(Kind.INVOKER) == "local"
        else registry.create(Kind.INVOKER, settings)
    )
    invoker = _Embedded(local, configured)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings),
        registry.create(Kind.DATA_STORE, settings),
        registry.create(Kind.TRACER, settings),
        invoker,
    )
    engine = Engine(flow, settings, backends)
    body = data.encode() if isinstance(data, str) else bytes(data)
    raw_query = query if isinstance(query, str) or query is None else urlencode(query, doseq=True)
    finished = True
    try:
        started = engine.start(
            body, request_id=request_id, query=raw_query or "", headers=headers, timeout=timeout
        )
        if started.status is not Status.RUNNING:
            if started.sync or started.cause is not None:
                return started
            return attrs.evolve(started, cause=take_failure(started.request_id))
        record = engine.wait(started.request_id, timeout)
        if record is None:
            finished = False
            engine.stop(started.request_id)
            return Result(
                started.request_id,
                Status.STOPPED,
                b"",
                f"request {started.request_id} did not finish within {timeout}s and was stopped",
            )
        return Result.from_record(record, cause=take_failure(record.request_id))
    finally:
        if finished:
            engine.close()
        else:  # do not wait for the node that outlived the timeout: it ends on its own
            invoker.close(wait=False)
            for backend in (backends.tracer, backends.data_store, backends.state_store):
                backend.close()
