"""Records of every kind validate against docs/record.schema.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from faasflow import Flow
from faasflow.engine import Engine
from faasflow.interfaces import Response
from faasflow.settings import Settings

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "record.schema.json").read_text())
GATE = threading.Event()


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    kind = context.query.get("kind")
    if kind == "each":
        each = dag.foreach_branch("a", lambda d: {str(i): bytes([c]) for i, c in enumerate(d)},
                                  aggregator=lambda r: b"".join(r.values()))
        each.node("n").modify(lambda d: d)
    elif kind == "status":
        dag.node("a").apply("answer-502-binary")
    elif kind == "slow":
        dag.node("a").modify(lambda d: d)
    else:
        dag.node("a").modify(lambda d: 1 / 0)
    dag.node("b").modify(lambda d: d if GATE.wait(10) else b"")
    dag.edge("a", "b")


@pytest.mark.parametrize("kind", ["each", "status", "raise", "slow"])
def test_the_record_validates_against_the_schema(kind: str) -> None:
    if kind == "slow":
        GATE.clear()
    else:
        GATE.set()
    engine = Engine.from_settings(
        Flow(define, name="schema"), Settings.from_env({"FAASFLOW_CALL_RETRIES": "1"})
        .with_backends(invoker="local"),
        functions={"answer-502-binary": lambda _: Response(418, b"\xff\xfe" * 3000)})
    try:
        rid = engine.start(b"xyz", query=f"kind={kind}").request_id
        if kind == "slow":
            live = engine.record(rid)
            assert live is not None
            jsonschema.validate(live.to_json(), SCHEMA)
            GATE.set()
        record = engine.wait(rid, 20)
        assert record is not None
        jsonschema.validate(record.to_json(), SCHEMA)
    finally:
        GATE.set()
        engine.close()
