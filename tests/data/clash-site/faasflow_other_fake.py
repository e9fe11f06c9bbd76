"""A plugin that uses the entry-point name another distribution already took."""

from faasflow import Backend, hookimpl
from faasflow.default_plugins.tracers import NoTracer


@hookimpl
def faasflow_tracers():
    yield Backend("otherfake", lambda options: NoTracer())
