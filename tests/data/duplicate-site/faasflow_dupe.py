"""A plugin that declares a state store named like a built-in one."""

from faasflow import Backend, hookimpl
from faasflow.default_plugins.memory import MemoryStateStore


@hookimpl
def faasflow_state_stores():
    yield Backend("memory", MemoryStateStore.from_options, summary="a second memory store")
