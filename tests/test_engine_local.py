"""Iterations handed on inside one process with the local invoker: as messages, never encoded
nor signed, while whatever leaves the process (a held iteration) is signed as ever."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.engine.message import Message
from faasflow.errors import SignatureError
from faasflow.plugins import Registry
from faasflow.settings import Settings


def _engine(define: Any, settings: Settings) -> Engine:
    registry = Registry.from_settings(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "memory"),
        registry.create(Kind.DATA_STORE, settings, "memory"),
        registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    )
    return Engine(Flow(define, name="local"), settings, backends)


def _chain(ran: list[str], gate: threading.Event | None = None, steps: int = 3) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for index in range(1, steps + 1):
            def step(data: bytes, name: str = f"n{index}") -> bytes:
                ran.append(name)
                if name == "n2" and gate is not None:
                    gate.wait(10)
                return data + name.encode()

            dag.node(f"n{index}").modify(step)
            if index > 1:
                dag.edge(f"n{index - 1}", f"n{index}")

    return define


def test_an_in_process_chain_hands_its_iterations_on_without_encoding_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[str] = []
    real = Message.encode

    def encode(self: Message, key: bytes | None) -> bytes:
        encoded.append(self.node)
        return real(self, key)

    monkeypatch.setattr(Message, "encode", encode)
    ran: list[str] = []
    engine = _engine(_chain(ran, steps=5), Settings(hmac_secret=b"secret"))
    try:
        rid = engine.start(b">").request_id
        record = engine.wait(rid, 10)
    finally:
        engine.close()
    assert record is not None and record.status == "success"
    assert record.output == b">n1n2n3n4n5"
    assert ran == ["n1", "n2", "n3", "n4", "n5"]
    assert encoded == []


def test_an_iteration_held_by_a_pause_in_process_is_signed_and_runs_once_on_resume() -> None:
    ran: list[str] = []
    gate = threading.Event()
    engine = _engine(_chain(ran, gate), Settings(hmac_secret=b"secret"))
    try:
        rid = engine.start(b">").request_id
        deadline = time.monotonic() + 10
        while "n2" not in ran and time.monotonic() < deadline:
            time.sleep(0.001)
        engine.pause(rid)
        gate.set()  # n2 finishes while paused: n3's iteration is held
        control = engine.core.control(rid)
        while time.monotonic() < deadline:
            live = control.live()
            if live is not None and live.parked:
                break
            time.sleep(0.001)
        assert live is not None
        (key,) = live.parked
        body = control.parked_body(key)
        assert body is not None
        held = Message.decode(body, b"secret")  # signed with the flow's key
        assert held.node.endswith("n3") and held.data == b">n1n2"
        with pytest.raises(SignatureError):
            Message.decode(body.replace(b'"node":"', b'"node":"x'), b"secret")
        with pytest.raises(SignatureError):
            Message.decode(body, b"another key")
        assert ran == ["n1", "n2"]
        engine.resume(rid)
        record = engine.wait(rid, 10)
    finally:
        engine.close()
    assert record is not None and record.status == "success"
    assert ran == ["n1", "n2", "n3"]
