"""A test plugin: a ``fake`` state store (memory underneath) and a ``fake`` tracer."""

from faasflow import Backend, hookimpl
from faasflow.default_plugins.memory import MemoryStateStore
from faasflow.default_plugins.tracers import NoTracer


class FakeStateStore(MemoryStateStore):
    def __init__(self, options):
        super().__init__()
        self.options = dict(options)


@hookimpl
def faasflow_state_stores():
    yield Backend("fake", FakeStateStore, summary="fake state store", options={"color": "a color"})


@hookimpl
def faasflow_tracers():
    return [Backend("fake", lambda options: NoTracer(), summary="fake tracer")]
