"""A plugin that misspells a hook name (singular instead of plural)."""

from faasflow import Backend, hookimpl
from faasflow.default_plugins.memory import MemoryStateStore


@hookimpl
def faasflow_state_store():
    yield Backend("typo", MemoryStateStore.from_options)
