"""``faasflow.run`` and ``faasflow.arun``: run a flow to its end in this process.

Beside what :func:`faasflow.engine.local.run` takes, the input may be any value the start node's
codec encodes (``faasflow.run(define, {"id": 42})`` for a ``flow.dag(codec=faasflow.JSON)``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any

from faasflow.codecs import BYTES, CodecError
from faasflow.engine.local import run as run_bytes
from faasflow.flow import Define, Flow
from faasflow.results import Result
from faasflow.settings import Settings

__all__ = ["arun", "run"]


def run(
    flow_or_define: Flow | Define,
    data: Any = b"",
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

    ``data`` that is ``bytes`` or ``str`` is sent as it is; any other value is encoded with the
    codec of the root DAG's start node. ``functions`` maps function names to Python callables
    (``bytes -> bytes | str``); other names go through the configured invoker. After
    ``timeout`` seconds the request is stopped.
    """
    flow = flow_or_define if isinstance(flow_or_define, Flow) else Flow(flow_or_define)
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        if flow.codec is BYTES:
            raise CodecError(
                f"faasflow.run() got a {type(data).__name__} as input, but flow {flow.name}'s "
                "start node has the bytes codec: pass bytes or str, or give the DAG a codec "
                "(flow.dag(codec=faasflow.JSON))"
            )
        data = flow.codec.encode(data)
    return run_bytes(
        flow, bytes(data) if not isinstance(data, str) else data, functions=functions,
        query=query, headers=headers, request_id=request_id, timeout=timeout,
        settings=settings,
    )


async def arun(
    flow_or_define: Flow | Define,
    data: Any = b"",
    *,
    functions: Mapping[str, Callable[..., object]] | None = None,
    query: str | Mapping[str, str | list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
    settings: Settings | None = None,
) -> Result:
    """:func:`run` for asyncio callers: the request runs on a worker thread (the engine's
    stores and invokers block), so the event loop stays free while it runs."""
    call = functools.partial(
        run, flow_or_define, data, functions=functions, query=query, headers=headers,
        request_id=request_id, timeout=timeout, settings=settings,
    )
    return await asyncio.to_thread(call)
