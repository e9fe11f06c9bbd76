"""The markers' text: written directly on the hot path, it must stay the JSON encoder's (old and
new readers parse the same markers, and a compare-and-swap compares the exact text)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.engine.markers import _claim_of, _encode, mark_done


class _It:
    """What mark_done and the claim read of an iteration."""

    def __init__(self, token: str, nonce: str, attempt: int = 1) -> None:
        self.token, self.nonce, self.attempt = token, nonce, attempt
        self.states = MemoryStateStore().scoped("f", "r")
        self.data = MemoryDataStore().scoped("f", "r")
        self.consumed: list[str] = []


def _done(raw: str, doc: dict[str, Any], it: _It, output: bytes) -> tuple[str, dict[str, Any]]:
    it.states.set("node--n1", raw)
    done_raw, done, handed_raw = mark_done(it, "n1", raw, doc, output, 2)  # type: ignore[arg-type]
    assert it.states.get("node--n1") == done_raw
    assert handed_raw == _encode({k: v for k, v in done.items() if k not in ("out", "ref")}
                                  | {"p": "handed"})
    return done_raw, done


@pytest.mark.parametrize("token", ["tok-1", 'quote"and,"until":1 \\', "é ü \u2028"])
def test_a_done_marker_made_from_a_claim_is_the_encoders_json(token: str) -> None:
    it = _It(token, "nonce-1", attempt=3)
    _, raw, doc = _claim_of(it, 30.0)  # type: ignore[arg-type]
    assert raw == _encode(doc)
    done_raw, done = _done(raw, doc, it, b"output")
    assert done_raw == _encode(done)
    assert json.loads(done_raw) == done
    assert done["p"] == "done" and done["token"] == token and done["deliveries"] == 3
    assert done["until"] == pytest.approx(done["end"] + 30.0)


def test_a_done_marker_made_from_a_claim_read_back_is_the_encoders_json() -> None:
    it = _It("tok", "nonce")
    raw = '{"p":"claimed","token":"tok","until":1700000030,"start":1700000000,"att":1,"n":"x"}'
    done_raw, done = _done(raw, json.loads(raw), it, b"o")
    assert done_raw == _encode(done)
    assert done["start"] == 1700000000 and done["until"] == pytest.approx(done["end"] + 30)


def test_a_done_marker_made_from_a_claim_with_other_members_is_the_encoders_json() -> None:
    it = _It("tok", "nonce")
    doc = {"p": "claimed", "n": "x", "token": "tok", "until": 1.5, "start": 1.0, "att": 1,
           "extra": [1, 2]}
    done_raw, done = _done(_encode(doc), doc, it, b"o" * 5000)
    assert done_raw == _encode(done)
    assert done["extra"] == [1, 2] and done["ref"] == "out--n1"
    assert it.data.get("out--n1") == b"o" * 5000


