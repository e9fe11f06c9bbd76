"""faasflow-example passes faasflow's conformance contracts, plus its own behaviour."""

from __future__ import annotations

import json

from faasflow_example import JsonFileStateStore, JsonlTracer

from faasflow.testing import StateStoreContract, TracerContract, assert_backend_registered


def test_backends_are_registered():
    assert assert_backend_registered("state_store", "jsonfile").distribution == "faasflow-example"
    assert assert_backend_registered("tracer", "jsonl").distribution == "faasflow-example"


class TestJsonFileStateStore(StateStoreContract):
    def make_store(self):
        # self.workdir is copied into the child processes of the multi-process tests.
        return JsonFileStateStore.from_options({"path": str(self.workdir / "state")})


class TestJsonlTracer(TracerContract):
    def make_tracer(self):
        return JsonlTracer.from_options({"path": str(self.workdir / "trace.jsonl")})


def read_events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tracer_writes_one_line_per_event(tmp_path):
    tracer = JsonlTracer.from_options({"path": str(tmp_path / "t.jsonl")}).scoped("flow", "r1")
    tracer.request_start({})
    tracer.node_start("node-1", {"attempt": 1})
    tracer.node_end("node-1", {})
    tracer.request_end({"status": "FINISHED"})
    events = read_events(tmp_path / "t.jsonl")
    assert [e["event"] for e in events] == [
        "request_start", "node_start", "node_end", "request_end",
    ]
    assert {(e["flow"], e["request"]) for e in events} == {("flow", "r1")}
    assert events[1]["attributes"] == {"attempt": 1}


def test_tracer_links_an_iteration_to_the_one_that_forwarded_it(tmp_path):
    backend = JsonlTracer.from_options({"path": str(tmp_path / "t.jsonl")})
    first = backend.scoped("flow", "r1")
    carrier = {}
    first.inject(carrier)
    second = backend.scoped("flow", "r1")
    second.request_continue(carrier)
    assert read_events(tmp_path / "t.jsonl")[-1]["parent"] == first.span


def test_state_file_disappears_after_cleanup(tmp_path):
    store = JsonFileStateStore.from_options({"path": str(tmp_path)}).scoped("flow", "r1")
    store.set("k", "v")
    assert list((tmp_path / "flow").glob("*.json"))
    store.cleanup()
    assert not list((tmp_path / "flow").glob("*.json"))
