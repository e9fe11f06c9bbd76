"""faasflow: function composition for serverless functions.

Write ``define(flow, context)``; faasflow compiles it into a graph that chains, branches, fans
out and aggregates calls to OpenFaaS functions, HTTP endpoints or Python callables, and runs it
on OpenFaaS or on one machine with no infrastructure.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from faasflow.backends import Backend, Kind
from faasflow.context import Context, Query
from faasflow.errors import (
    BackendError,
    CompareFailed,
    ConfigurationError,
    DefinitionError,
    FaasflowError,
    FlowFailure,
    FunctionError,
    KeyNotFound,
    PluginLoadError,
    RequestNotActive,
    RequestNotFound,
    SignatureError,
    UnknownBackendError,
)
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Invoker, Options, Response, StateStore, Tracer
from faasflow.operations import Call, Operation

if TYPE_CHECKING:
    from faasflow.codecs import BYTES, JSON, TEXT, Codec, CodecError
    from faasflow.dsl import Dag, HttpRequest, Retry
    from faasflow.engine.local import RunResult
    from faasflow.flow import Flow
    from faasflow.results import Result, Status
    from faasflow.runs import arun, run

# Heavier parts load on first use so that `import faasflow` (and every plugin) stays cheap.
_LAZY = {
    "Flow": "faasflow.flow",
    "Dag": "faasflow.dsl",
    "Retry": "faasflow.dsl",
    "HttpRequest": "faasflow.dsl",
    "run": "faasflow.runs",
    "arun": "faasflow.runs",
    "RunResult": "faasflow.engine.local",
    "Result": "faasflow.results",
    "Status": "faasflow.results",
    "Codec": "faasflow.codecs",
    "CodecError": "faasflow.codecs",
    "BYTES": "faasflow.codecs",
    "JSON": "faasflow.codecs",
    "TEXT": "faasflow.codecs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'faasflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "BYTES",
    "JSON",
    "TEXT",
    "Backend",
    "BackendError",
    "Call",
    "Codec",
    "CodecError",
    "CompareFailed",
    "ConfigurationError",
    "Context",
    "Dag",
    "DataStore",
    "DefinitionError",
    "FaasflowError",
    "Flow",
    "FlowFailure",
    "FunctionError",
    "HttpRequest",
    "Invoker",
    "KeyNotFound",
    "Kind",
    "Operation",
    "Options",
    "PluginLoadError",
    "Query",
    "RequestNotActive",
    "RequestNotFound",
    "Response",
    "Result",
    "Retry",
    "RunResult",
    "SignatureError",
    "StateStore",
    "Status",
    "Tracer",
    "UnknownBackendError",
    "arun",
    "hookimpl",
    "run",
]
