"""Reading an ended request's record in the moment between its status claim and its full
record (``control.record``): it is looked for again at once, not after a fixed 10 ms."""

from __future__ import annotations

import time
from typing import Any

import pytest

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine, control
from faasflow.engine.records import RecordBook
from faasflow.plugins import Registry
from faasflow.settings import Settings


def _define(flow: Any, context: Any) -> None:
    dag = flow.dag()  # two nodes: a flow of one node runs synchronously and keeps no record
    dag.node("a").modify(lambda d: d + b"!")
    dag.node("b").modify(lambda d: d + b"?")
    dag.edge("a", "b")


class _Clock:
    """``control.time`` with the sleeps recorded instead of slept."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.time = time.time
        self.monotonic = time.monotonic

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def engine() -> Any:
    settings = Settings()
    registry = Registry.from_settings(settings)
    made = Engine(Flow(_define, name="record-wait"), settings, Backends(*(
        registry.create(kind, settings, name) for kind, name in (
            (Kind.STATE_STORE, "memory"), (Kind.DATA_STORE, "memory"),
            (Kind.TRACER, "none"), (Kind.INVOKER, "local")))))
    yield made
    made.close()


def _ended_unsaved(engine: Engine, monkeypatch: pytest.MonkeyPatch, looks: int
                   ) -> tuple[str, _Clock, list[int]]:
    """An ended request whose full record reads as missing for its first ``looks`` loads
    (not saved yet), control's sleeps recorded: (its id, the clock, the loads made)."""
    started = engine.start(b"hi")
    assert engine.wait(started.request_id, timeout=30) is not None
    clock = _Clock()
    monkeypatch.setattr(control, "time", clock)
    real = RecordBook.load
    count = [0]

    def load(self: RecordBook, request_id: str) -> Any:
        count[0] += 1
        return None if count[0] <= looks else real(self, request_id)

    monkeypatch.setattr(RecordBook, "load", load)
    return started.request_id, clock, count


def test_a_record_read_before_it_lands_is_looked_for_again_within_a_millisecond(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    rid, clock, count = _ended_unsaved(engine, monkeypatch, 3)
    record = engine.record(rid)
    assert record is not None and record.status == "success" and record.output == b"hi!?"
    assert count[0] == 4
    assert clock.slept[0] <= 0.001  # not the 10 ms it was
    assert clock.slept == sorted(clock.slept)  # then less often


def test_a_record_that_never_lands_gives_the_status_after_half_a_second(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    rid, clock, _ = _ended_unsaved(engine, monkeypatch, 10**6)
    record = engine.record(rid)
    assert record is not None and record.status == "success" and record.output is None
    assert 0.5 <= sum(clock.slept) < 0.52
    assert max(clock.slept) <= 0.01
