"""What the compiler wraps around user callables so the engine keeps seeing bytes -> bytes.

A callable is wrapped only when its node's codec is not :data:`~faasflow.codecs.BYTES` or when
it is ``async def``, so a faas-flow-style flow compiles to the very callables it was given. A
wrapper keeps the callable's name (exports, DOT and the definition hash do not change).

``async def`` callables run to completion on a private event loop of the calling thread (one
per engine worker thread, reused, closed when the thread ends). A thread that already runs an
event loop (``faasflow.run`` called from a coroutine) cannot block on a second one there, so the
coroutine then runs on a short-lived helper thread with a copy of the current context.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from faasflow.codecs import BYTES, Codec
from faasflow.operations import callable_name

__all__ = [
    "adapt_aggregator",
    "adapt_condition",
    "adapt_data",
    "adapt_foreach",
    "adapt_hook",
    "adapt_result",
    "is_async",
    "resolve",
]

F = TypeVar("F", bound=Callable[..., Any])

_loops: dict[int, asyncio.AbstractEventLoop] = {}
_loops_lock = threading.Lock()


def is_async(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (``async def``, also behind ``partial`` or
    as an object's ``async def __call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callable()
    )


def _close_loop(ident: int) -> None:
    with _loops_lock:
        loop = _loops.pop(ident, None)
    if loop is not None and not loop.is_closed():
        loop.close()


def _thread_loop() -> asyncio.AbstractEventLoop:
    thread = threading.current_thread()
    ident = id(thread)
    with _loops_lock:
        loop = _loops.get(ident)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        with _loops_lock:
            _loops[ident] = loop
        weakref.finalize(thread, _close_loop, ident)
    return loop


def _run_here(awaitable: Any) -> Any:
    return _thread_loop().run_until_complete(awaitable)


def resolve(value: Any) -> Any:
    """``value``, or what it resolves to when it is awaitable (run to completion here)."""
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(value)
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="faasflow-async") as pool:
        return pool.submit(context.run, asyncio.run, _await(value)).result()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _named_like(wrapper: F, fn: object) -> F:
    """``wrapper`` with ``fn``'s ``module.qualname``, as :func:`callable_name` reports it."""
    module, _, qualname = callable_name(fn).rpartition(".")
    wrapper.__module__ = module
    wrapper.__qualname__ = qualname
    wrapper.__name__ = qualname
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    return wrapper


def _needs_wrap(fn: object, codec: Codec) -> bool:
    return codec is not BYTES or is_async(fn)


def _encode(codec: Codec, value: Any) -> Any:
    # with the default codec the engine checks the value itself (bytes, str), as it always did
    return value if codec is BYTES else codec.encode(value)


def adapt_data(fn: F, codec: Codec) -> F:
    """A modifier or forwarder: ``data -> data``."""
    if not _needs_wrap(fn, codec):
        return fn

    def data_step(data: bytes) -> Any:
        return _encode(codec, resolve(fn(codec.decode(data))))

    return _named_like(data_step, fn)  # type: ignore[return-value]


def adapt_aggregator(fn: F, codec: Codec) -> F:
    """An aggregator: ``{key: data} -> data``."""
    if not _needs_wrap(fn, codec):
        return fn

    def aggregate(inputs: Mapping[str, bytes]) -> Any:
        decoded = {key: codec.decode(value) for key, value in inputs.items()}
        return _encode(codec, resolve(fn(decoded)))

    return _named_like(aggregate, fn)  # type: ignore[return-value]


def adapt_foreach(fn: F, codec: Codec) -> F:
    """A foreach function: ``data -> {key: data}``, each value encoded for its branch."""
    if not _needs_wrap(fn, codec):
        return fn

    def split(data: bytes) -> Any:
        result = resolve(fn(codec.decode(data)))
        if codec is BYTES:
            return result
        return {key: codec.encode(value) for key, value in dict(result).items()}

    return _named_like(split, fn)  # type: ignore[return-value]


def adapt_condition(fn: F, codec: Codec) -> F:
    """A condition: ``data -> [key, ...]``."""
    if not _needs_wrap(fn, codec):
        return fn

    def choose(data: bytes) -> Any:
        return resolve(fn(codec.decode(data)))

    return _named_like(choose, fn)  # type: ignore[return-value]


def adapt_hook(fn: F) -> F:
    """A hook (workflow ``on_failure`` / ``finally_``, ``request_handler``): only async."""
    if not is_async(fn):
        return fn

    def hook(arg: Any) -> Any:
        return resolve(fn(arg))

    return _named_like(hook, fn)  # type: ignore[return-value]


def adapt_result(fn: F, codec: Codec) -> F:
    """``on_failure`` or ``response_handler`` of a call: what it returns (unless ``None``) is
    encoded with the node's codec."""
    if not _needs_wrap(fn, codec):
        return fn

    def handler(arg: Any) -> Any:
        result = resolve(fn(arg))
        return result if result is None else _encode(codec, result)

    return _named_like(handler, fn)  # type: ignore[return-value]
