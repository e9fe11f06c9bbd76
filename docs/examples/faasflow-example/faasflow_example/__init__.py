"""faasflow-example: two small backends that need no server.

- ``jsonfile`` StateStore: one JSON document per request, safe for several processes of one
  machine (``FAASFLOW_STATE_STORE=jsonfile``, ``FAASFLOW_JSONFILE_PATH``).
- ``jsonl`` Tracer: one JSON object per event appended to a file (``FAASFLOW_TRACER=jsonl``,
  ``FAASFLOW_JSONL_PATH``).
"""

from __future__ import annotations

from collections.abc import Iterable

import faasflow
from faasflow_example.jsonfile import DEFAULT_PATH as STATE_PATH
from faasflow_example.jsonfile import JsonFileStateStore
from faasflow_example.jsonl import DEFAULT_PATH as TRACE_PATH
from faasflow_example.jsonl import JsonlTracer

__all__ = ["JsonFileStateStore", "JsonlTracer"]


@faasflow.hookimpl
def faasflow_state_stores() -> Iterable[faasflow.Backend]:
    yield faasflow.Backend(
        "jsonfile",
        JsonFileStateStore.from_options,
        summary="One JSON file per request, locked with flock (several processes, one machine).",
        options={"path": f"directory of the JSON files (default {STATE_PATH})"},
    )


@faasflow.hookimpl
def faasflow_tracers() -> Iterable[faasflow.Backend]:
    yield faasflow.Backend(
        "jsonl",
        JsonlTracer.from_options,
        summary="Appends every request, node and operation event to a JSON-lines file.",
        options={"path": f"file the events are appended to (default {TRACE_PATH})"},
    )
