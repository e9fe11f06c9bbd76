"""The in-process hand-off of an iteration: ``LocalInvoker.hand_on`` (the next step of a chain
on the worker that handed it on, any other on the pool) and ``delivery.local_delivery`` (the
attempts, the sweep, the hand-over with the first attempt only)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import pytest

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.default_plugins.invokers import LocalInvoker
from faasflow.engine import Backends, Engine, delivery, runner
from faasflow.engine.ids import unique
from faasflow.engine.iteration import Handed
from faasflow.engine.local import _Embedded
from faasflow.engine.message import Message
from faasflow.errors import BackendError, RequestNotActive
from faasflow.plugins import Registry
from faasflow.settings import Settings


def _engine(define: Any, settings: Settings, invoker: Any = None) -> Engine:
    registry = Registry.from_settings(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "memory"),
        registry.create(Kind.DATA_STORE, settings, "memory"),
        registry.create(Kind.TRACER, settings, "none"),
        invoker or registry.create(Kind.INVOKER, settings, "local"),
    )
    return Engine(Flow(define, name="handoff"), settings, backends)


def _chain(steps: int) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for index in range(1, steps + 1):
            dag.node(f"n{index}").modify(lambda d, name=f"n{index}": d + name.encode())
            if index > 1:
                dag.edge(f"n{index - 1}", f"n{index}")

    return define


def _run(engine: Engine, data: bytes = b">") -> Any:
    rid = engine.start(data).request_id
    record = engine.wait(rid, 20)
    assert record is not None
    return record


# --- LocalInvoker.hand_on ------------------------------------------------------------------


def test_a_hand_on_from_a_worker_runs_next_on_that_worker_and_the_others_on_the_pool() -> None:
    invoker = LocalInvoker(workers=2)
    ran: list[tuple[str, str, Any, Any]] = []
    threads: dict[str, str] = {}
    done = threading.Event()

    def run(flow: str, rid: str, message: Any, handed: Any) -> None:
        ran.append((flow, rid, message, handed))
        threads[message] = threading.current_thread().name
        if message == "root":
            hand("r", "first", "h1")  # runs next, on this worker
            hand("r", "second", None)  # queued on the pool
        if len(ran) == 3:
            done.set()

    hand = invoker.hand_on(run, "f")
    try:
        hand("r", "root", None)  # from a thread that is no worker: queued
        assert done.wait(10)
    finally:
        invoker.close()
    assert sorted(m for _, _, m, _ in ran) == ["first", "root", "second"]
    assert ("f", "r", "first", "h1") in ran
    assert threads["first"] == threads["root"]
    assert threads["root"].startswith("faasflow")


def test_a_hand_on_that_raises_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    invoker = LocalInvoker(workers=1)
    ran: list[str] = []
    done = threading.Event()

    def run(flow: str, rid: str, message: Any, handed: Any) -> None:
        ran.append(message)
        if message == "root":
            hand("r", "boom", None)
            return
        if message == "boom":
            hand("r", "after", None)
            raise RuntimeError("engine fault")
        done.set()

    hand = invoker.hand_on(run, "f")
    try:
        hand("r", "root", None)
        assert done.wait(10)
    finally:
        invoker.close()
    assert ran == ["root", "boom", "after"]
    assert "iteration of request r of flow f failed in the local invoker" in caplog.text


def test_a_hand_on_to_a_closed_invoker_raises_a_backend_error() -> None:
    invoker = LocalInvoker(workers=1)
    hand = invoker.hand_on(lambda *_: None, "f")
    invoker.close()
    with pytest.raises(BackendError, match="closed"):
        hand("r", "m", None)


def test_the_embedded_invoker_hands_on_through_the_local_one() -> None:
    local = LocalInvoker(workers=1)
    embedded = _Embedded(local, local)
    assert embedded.hand_on == local.hand_on
    assert _Embedded(object(), local).hand_on is None
    local.close()


# --- the engine on hand_on, and on an invoker with forward_local only -------------------------


@attrs.define(eq=False)
class _ForwardLocalOnly:
    """An in-process invoker of the older shape: ``forward_local`` and no ``hand_on``."""

    local: LocalInvoker
    in_process: bool = True
    items: list[Any] = attrs.field(factory=list)

    def call(self, function: str, data: bytes, **kwargs: Any) -> Any:
        return self.local.call(function, data, **kwargs)

    def forward(self, flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        self.local.forward(flow, rid, message, headers)

    def forward_local(self, run: Any, flow: str, rid: str, item: Any) -> None:
        self.items.append(item)
        self.local.forward_local(run, flow, rid, item)

    def bind(self, deliver: Any) -> None:
        self.local.bind(deliver)

    def close(self, *, wait: bool = True) -> None:
        self.local.close(wait=wait)


def test_an_engine_on_the_local_invoker_hands_its_chain_on_through_hand_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []
    real = LocalInvoker.hand_on

    def spy(self: LocalInvoker, run: Any, flow: str) -> Any:
        made.append(flow)
        return real(self, run, flow)

    monkeypatch.setattr(LocalInvoker, "hand_on", spy)
    engine = _engine(_chain(4), Settings())
    try:
        record = _run(engine)
    finally:
        engine.close()
    assert made == ["handoff"]
    assert record.status == "success" and record.output == b">n1n2n3n4"


def test_an_engine_on_an_invoker_with_forward_local_only_still_hands_on_messages() -> None:
    invoker = _ForwardLocalOnly(LocalInvoker(workers=1))
    engine = _engine(_chain(3), Settings(), invoker)
    try:
        record = _run(engine)
    finally:
        engine.close()
    assert record.status == "success" and record.output == b">n1n2n3"
    assert [type(item[0]) for item in invoker.items] == [Message, Message]


def test_an_engine_on_an_invoker_that_leaves_the_process_has_no_local_hand_on() -> None:
    invoker = _ForwardLocalOnly(LocalInvoker(workers=1), in_process=False)
    settings = Settings(hmac_secret=b"k")
    engine = _engine(_chain(2), settings, invoker)
    try:
        assert engine.core.local is None
    finally:
        engine.close()


# --- delivery.local_delivery: attempts, sweep, hand-over ----------------------------------------


@attrs.define
class _Engine:
    """The engine as a local delivery sees it."""

    next_sweep: float = float("inf")
    swept: int = 0

    def maybe_sweep(self) -> bool:
        self.swept += 1
        return False


def _message(rid: str = "r1") -> Message:
    return Message(rid, "handoff", "hash", "node")


def _core_of(settings: Settings) -> Any:
    engine = _engine(_chain(1), settings)
    engine.close()
    return engine.core


def test_a_local_delivery_looks_at_the_sweep_only_once_it_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(runner, "iterate", lambda core, msg, body, **kw: calls.append(kw))
    sweeps = _Engine()
    run = delivery.local_delivery(_core_of(Settings()), sweeps)
    run("handoff", "r1", _message(), None)
    assert sweeps.swept == 0
    sweeps.next_sweep = 0.0  # due
    run("handoff", "r1", _message(), None)
    assert sweeps.swept == 1
    assert len(calls) == 2


def test_a_failed_attempt_is_retried_with_its_token_and_without_the_hand_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, int, Handed | None]] = []

    def iterate(core: Any, msg: Message, body: bytes, **kw: Any) -> str:
        seen.append((kw["token"], kw["attempt"], kw["handed"]))
        if kw["attempt"] == 1:
            raise BackendError("memory", "transaction", "k", "down")
        return runner.RAN

    monkeypatch.setattr(runner, "iterate", iterate)
    monkeypatch.setattr(delivery.time, "sleep", lambda _: None)
    handed = Handed("node--a", "done", "handed")
    msg = _message()
    delivery.local_delivery(_core_of(Settings()), _Engine())("handoff", "r1", msg, handed)
    assert seen == [(msg.mid, 1, handed), (msg.mid, 2, None)]


def test_a_refused_iteration_ends_its_delivery_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def iterate(core: Any, msg: Message, body: bytes, **kw: Any) -> str:
        seen.append(kw["attempt"])
        raise RequestNotActive("r1", "finished")

    failed: list[Any] = []
    monkeypatch.setattr(runner, "iterate", iterate)
    monkeypatch.setattr(delivery, "fail_message", lambda *a: failed.append(a))
    delivery.local_delivery(_core_of(Settings()), _Engine())("handoff", "r1", _message(), None)
    assert seen == [1] and failed == []


def test_an_iteration_failing_every_attempt_fails_its_request_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    def iterate(core: Any, msg: Message, body: bytes, **kw: Any) -> str:
        seen.append(kw["attempt"])
        raise BackendError("memory", "transaction", "k", "down")

    failed: list[tuple[Any, ...]] = []
    monkeypatch.setattr(runner, "iterate", iterate)
    monkeypatch.setattr(delivery.time, "sleep", lambda _: None)
    monkeypatch.setattr(delivery, "fail_message", lambda *a: failed.append(a))
    core = _core_of(Settings(iteration_attempts=3))
    msg = _message()
    delivery.local_delivery(core, _Engine())("handoff", "r1", msg, None)
    assert seen == [1, 2, 3]
    assert len(failed) == 1 and failed[0][1] is msg and failed[0][2] == 3


def test_an_engine_starts_its_sweep_from_a_local_delivery_once_due() -> None:
    engine = _engine(_chain(2), Settings(sweep_interval=3600.0))
    try:
        assert engine.next_sweep != float("inf")
        engine.next_sweep = 0.0
        record = _run(engine)
        assert engine.next_sweep > 0.0  # a sweep was started, the next one is an hour away
    finally:
        engine.close()
    assert record.status == "success"


def test_an_engine_whose_sweep_is_off_never_sweeps() -> None:
    engine = _engine(_chain(1), Settings(sweep_interval=0.0))
    try:
        assert engine.next_sweep == float("inf")
        assert not engine.maybe_sweep()
    finally:
        engine.close()


# --- ids and messages ---------------------------------------------------------------------------


def test_unique_ids_are_24_hex_digits_never_repeated() -> None:
    made = [unique() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(len(m) == 24 and int(m, 16) >= 0 for m in made)


def test_a_forked_child_makes_other_unique_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, unique().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = unique()
    assert len(child) == 24 and child[:12] != mine[:12]


def test_a_message_compares_by_its_fields_and_evolve_makes_another() -> None:
    msg = _message()
    same = Message(msg.request_id, msg.flow, msg.definition_hash, msg.node, mid=msg.mid)
    assert msg == same
    again = attrs.evolve(msg, node="other")
    assert again.node == "other" and msg.node == "node" and again.mid == msg.mid
    assert _message().mid != msg.mid
