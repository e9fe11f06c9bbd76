"""Signed iterations and authenticated requests (faasflow-behaviour.md §5 scenarios 27-29).

faas-flow signed only the execution position with SHA-1 and a public default key; here the
HMAC-SHA256 covers the whole message, there is no default key, and a refused message changes
nothing.
"""

from __future__ import annotations

import base64
import json

import pytest
from engine_harness import Harness

from faasflow.engine.message import MessageError, sign_body
from faasflow.errors import ConfigurationError, SignatureError
from faasflow.settings import Settings


def two_nodes(ran: list[bytes]):
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: d + b"1")
        dag.node("n2").modify(lambda d: (ran.append(d), d)[1])
        dag.edge("n1", "n2")

    return define


@pytest.fixture
def captured():
    ran: list[bytes] = []
    h = Harness(two_nodes(ran))
    rid = h.start(b"x").request_id
    (item,) = h.invoker.queue
    h.invoker.queue.clear()
    return h, rid, item, ran


def tampered(body: bytes, **changes: object) -> bytes:
    doc = json.loads(body)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_untouched_message_is_accepted(captured) -> None:
    h, rid, item, ran = captured
    h.deliver(item)
    assert ran == [b"x1"]


@pytest.mark.parametrize(
    "change",
    [
        {"node": "0_1_n1"},
        {"data": base64.b64encode(b"evil").decode()},
        {"query": "admin=1"},
        {"branches": [["0_9_x", "k", 1]]},
        {"callback": "http://127.0.0.1:9/"},
        {"extra": "field"},
    ],
)
def test_any_change_to_a_signed_message_is_refused_and_changes_nothing(captured, change) -> None:
    h, rid, item, ran = captured
    before = h.state_keys(rid)
    with pytest.raises(SignatureError, match="failed to validate"):
        h.engine.forward(tampered(item.body, **change))
    assert ran == []
    assert h.state_keys(rid) == before


@pytest.mark.parametrize("sign", ["", "sha256=00", "sha1=abc", None])
def test_missing_or_malformed_signature_is_refused(captured, sign) -> None:
    h, rid, item, ran = captured
    doc = json.loads(item.body)
    if sign is None:
        del doc["sign"]
    else:
        doc["sign"] = sign
    with pytest.raises(SignatureError):
        h.engine.forward(json.dumps(doc).encode())
    assert ran == []


def test_one_flipped_hex_digit_is_refused(captured) -> None:
    h, rid, item, ran = captured
    doc = json.loads(item.body)
    last = doc["sign"][-1]
    doc["sign"] = doc["sign"][:-1] + ("0" if last != "0" else "1")
    with pytest.raises(SignatureError):
        h.engine.forward(json.dumps(doc).encode())


def test_message_signed_with_another_key_is_refused(captured) -> None:
    h, rid, item, ran = captured
    other = Harness(two_nodes([]), settings=Settings(hmac_secret=b"k2"))
    with pytest.raises(SignatureError):
        other.engine.forward(item.body)


def test_validation_off_accepts_an_unsigned_message() -> None:
    ran: list[bytes] = []
    h = Harness(two_nodes(ran), settings=Settings(hmac_secret=None, validate_request=False))
    rid = h.start(b"y").request_id
    (item,) = h.invoker.queue
    h.invoker.queue.clear()
    doc = json.loads(item.body)
    assert "sign" not in doc
    h.engine.forward(item.body)
    assert ran == [b"y1"]
    assert h.engine.record(rid).status == "success"


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"v": 1}', b'{"v": 7, "sign": "x"}'])
def test_malformed_message_is_a_clear_error(body) -> None:
    h = Harness(two_nodes([]), settings=Settings(hmac_secret=None, validate_request=False))
    with pytest.raises(MessageError, match="forwarded iteration|version"):
        h.engine.forward(body)


def test_network_invoker_without_key_is_a_configuration_error() -> None:
    from faasflow import Flow
    from faasflow.backends import Kind
    from faasflow.engine import Backends, Engine
    from faasflow.plugins import Registry

    settings = Settings(hmac_secret=None)
    registry = Registry.from_settings(settings)
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "memory"),
        registry.create(Kind.DATA_STORE, settings, "memory"),
        registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "openfaas"),
    )
    with pytest.raises(ConfigurationError, match="faasflow-hmac-secret"):
        Engine(Flow(two_nodes([])), settings, backends)


def auth_settings(secret: bytes | None) -> Settings:
    return Settings(hmac_secret=secret, authenticate_request=True)


def test_authenticated_request_with_right_signature_runs() -> None:
    h = Harness(
        lambda flow, ctx: flow.sync_node().modify(lambda d: d), settings=auth_settings(b"s3cr3t")
    )
    result = h.start(b"hello", headers={"X-Hub-Signature-256": sign_body(b"s3cr3t", b"hello")})
    assert result.output == b"hello"


@pytest.mark.parametrize("header", [None, "sha256=00", sign_body(b"other", b"hello")])
def test_authenticated_request_with_wrong_or_missing_signature_is_refused(header) -> None:
    h = Harness(lambda flow, ctx: flow.sync_node(), settings=auth_settings(b"s3cr3t"))
    headers = {} if header is None else {"X-Hub-Signature-256": header}
    with pytest.raises(SignatureError, match="failed to authenticate request"):
        h.start(b"hello", headers=headers)


def test_authentication_without_secret_says_how_to_set_one() -> None:
    settings = Settings(hmac_secret=None, authenticate_request=True, validate_request=False)
    h = Harness(lambda flow, ctx: flow.sync_node(), settings=settings)
    with pytest.raises(ConfigurationError, match="failed to get auth key"):
        h.start(b"hello", headers={"X-Hub-Signature-256": "sha256=00"})


def test_a_non_ascii_signature_is_a_signature_error_not_a_crash(captured) -> None:
    h, rid, item, ran = captured
    signed = json.loads(item.body)
    body = tampered(item.body, sign="sha256=" + "é" * 64)
    assert signed["sign"] != "sha256=" + "é" * 64
    with pytest.raises(SignatureError, match="ASCII"):
        h.engine.forward(body, item.headers)
    assert ran == []


def test_json_nested_a_thousand_deep_is_a_message_error(captured) -> None:
    h, rid, item, ran = captured
    deep = b'{"v":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MessageError, match="too deeply"):
        h.engine.forward(deep, item.headers)
    assert ran == []


def test_a_non_ascii_request_signature_header_is_refused() -> None:
    h = Harness(two_nodes([]), settings=Settings(hmac_secret=b"k", authenticate_request=True))
    with pytest.raises(SignatureError, match="does not match"):
        h.start(b"x", headers={"X-Hub-Signature-256": "sha256=\u00e9\u00e9"})


def test_forwarded_messages_name_themselves_and_copies_share_the_name(captured) -> None:
    h, rid, item, ran = captured
    assert len(item.message.mid) == 24
    assert item.message.mid == json.loads(item.body)["mid"]


def test_request_ids_sort_by_time_and_are_not_guessable() -> None:
    import re

    from faasflow.engine.ids import new_request_id

    ids = [new_request_id() for _ in range(200)]
    assert all(re.fullmatch(r"[0-9a-v]{23}", i) for i in ids)
    assert len(set(ids)) == 200
    # the same second shares the 7-character time prefix; the other 16 characters are random
    assert len({i[:6] for i in ids}) <= 2
    assert len({i[8:] for i in ids}) == 200
