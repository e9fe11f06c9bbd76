"""The hooks a faasflow plugin implements.

Each hook answers one question, "which backends of this kind do you provide?", and is called
once when the plugin manager is built. Nothing here runs per request: the engine calls the
chosen backend objects directly.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from faasflow.backends import Backend
from faasflow.runtime.queues import QueueKind
from faasflow.webapps import WebApp

PROJECT_NAME = "faasflow"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["hookimpl"]


@hookspec
def faasflow_state_stores() -> Iterable[Backend]:  # type: ignore[empty-body]
    """Declare the StateStore backends this plugin provides (see :class:`faasflow.StateStore`)."""


@hookspec
def faasflow_data_stores() -> Iterable[Backend]:  # type: ignore[empty-body]
    """Declare the DataStore backends this plugin provides (see :class:`faasflow.DataStore`)."""


@hookspec
def faasflow_tracers() -> Iterable[Backend]:  # type: ignore[empty-body]
    """Declare the Tracer backends this plugin provides (see :class:`faasflow.Tracer`)."""


@hookspec
def faasflow_invokers() -> Iterable[Backend]:  # type: ignore[empty-body]
    """Declare the Invoker backends this plugin provides (see :class:`faasflow.Invoker`)."""


@hookspec
def faasflow_web_apps() -> Iterable[WebApp]:  # type: ignore[empty-body]
    """Declare the web apps this plugin mounts under ``/ui/`` of ``faasflow up``'s gateway
    (see :class:`faasflow.webapps.WebApp`)."""


@hookspec
def faasflow_queues() -> Iterable[QueueKind]:  # type: ignore[empty-body]
    """Declare the kinds of queue this plugin provides for the local gateway's asynchronous
    calls (see :class:`faasflow.runtime.queues.QueueKind`), chosen by ``faasflow up --queue``."""
