"""Codecs: user functions see values, the engine and the wire keep bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest

import faasflow


class Reversed:
    """A custom codec: text stored reversed, to prove the flow uses encode and decode."""

    content_type = "text/x-reversed"

    def encode(self, value: Any) -> bytes:
        return str(value)[::-1].encode()

    def decode(self, data: bytes) -> str:
        return data.decode()[::-1]


def test_json_modifiers_get_and_return_objects_and_run_accepts_an_object() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("a").modify(lambda doc: {**doc, "seen": True})

    result = faasflow.run(define, {"id": 42})
    assert result.ok, result.error
    assert result.json() == {"id": 42, "seen": True}


def test_bytes_and_str_inputs_are_sent_as_they_are_under_a_codec() -> None:
    def define(flow, context):
        flow.dag(codec=faasflow.JSON).node("a").modify(lambda doc: doc["n"] * 2)

    assert faasflow.run(define, b'{"n": 2}').json() == 4
    assert faasflow.run(define, '{"n": 3}').json() == 6


def test_an_object_input_to_a_bytes_flow_is_refused_naming_the_fix() -> None:
    def define(flow, context):
        flow.sync_node().modify(lambda data: data)

    with pytest.raises(faasflow.CodecError, match=r"flow.dag\(codec=faasflow.JSON\)"):
        faasflow.run(define, {"id": 1})


def test_json_edges_carry_encoded_values_between_nodes() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("a").modify(lambda n: n + 1)
        dag.node("b").modify(lambda n: n * 10)
        dag.edge("a", "b")

    assert faasflow.run(define, 1).json() == 20


def test_a_forwarder_sees_the_source_nodes_values() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("a").modify(lambda doc: {"items": [1, 2]})
        dag.edge("a", "b", forwarder=lambda doc: doc["items"] + [3])
        dag.node("b").modify(lambda items: sum(items))

    assert faasflow.run(define, {}).json() == 6


def test_an_edge_codec_overrides_how_its_forwarder_sees_the_data() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("a").modify(lambda doc: "abc")
        dag.edge("a", "b", forwarder=lambda text: text.upper(), codec=faasflow.TEXT)
        dag.node("b", codec=faasflow.BYTES).modify(lambda data: data + b"!")

    # the JSON string "abc" is the text '"abc"'; upper-cased it stays valid JSON
    assert faasflow.run(define, {}).output == b'"ABC"!'


def test_an_edge_codec_without_a_forwarder_is_a_definition_error() -> None:
    def define(flow, context):
        flow.dag().edge("a", "b", codec=faasflow.JSON)

    with pytest.raises(faasflow.DefinitionError, match="only says how its forwarder"):
        faasflow.Flow(define)


def test_aggregators_receive_a_dict_of_decoded_values() -> None:
    seen: list[dict[str, Any]] = []

    def join(inputs: dict[str, Any]) -> Any:
        seen.append(inputs)
        return inputs["b"] + inputs["c"]

    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("b").modify(lambda n: n + 1)
        dag.node("c").modify(lambda n: n + 2)
        dag.node("d", aggregator=join)
        dag.edge("a", "b")
        dag.edge("a", "c")
        dag.edge("b", "d")
        dag.edge("c", "d")

    assert faasflow.run(define, 10).json() == 23
    assert seen == [{"b": 11, "c": 12}]


def test_foreach_values_are_encoded_per_branch_and_aggregated_decoded() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        branch = dag.foreach_branch(
            "F",
            lambda doc: {name: {"name": name, "n": n} for name, n in doc.items()},
            aggregator=lambda results: sorted(results.values()),
        )
        branch.node("square").modify(lambda item: item["n"] ** 2)

    assert faasflow.run(define, {"x": 3, "y": 4}).json() == [9, 16]


def test_conditions_receive_decoded_values() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        branches = dag.conditional_branch(
            "C", ["big", "small"], lambda doc: ["big"] if doc["n"] > 10 else ["small"],
            aggregator=lambda results: list(results.values())[0],
        )
        branches["big"].node("b").modify(lambda doc: "big")
        branches["small"].node("s").modify(lambda doc: "small")

    assert faasflow.run(define, {"n": 11}).json() == "big"
    assert faasflow.run(define, {"n": 1}).json() == "small"


def test_context_values_stay_json_values_inside_a_json_flow() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)

        def remember(doc: Any) -> Any:
            context.set("doc", doc)
            return None

        dag.node("a").modify(remember)
        dag.node("b").modify(lambda nothing: {"was": nothing, "doc": context.get("doc")})
        dag.edge("a", "b")

    assert faasflow.run(define, {"k": [1]}).json() == {"was": None, "doc": {"k": [1]}}


def test_function_calls_get_bytes_with_the_codecs_content_type() -> None:
    seen: dict[str, Any] = {}

    def echo(data: bytes, request: Any) -> bytes:
        seen.update(body=data, type=request.headers.get("Content-Type"))
        return json.dumps({"echoed": json.loads(data)}).encode()

    def define(flow, context):
        flow.dag(codec=faasflow.JSON).node("a").apply("echo").modify(lambda doc: doc["echoed"])

    assert faasflow.run(define, {"id": 7}, functions={"echo": echo}).json() == {"id": 7}
    assert seen == {"body": b'{"id":7}', "type": "application/json"}


def test_a_calls_own_content_type_header_wins_over_the_codecs() -> None:
    seen: list[str] = []

    def echo(data: bytes, request: Any) -> bytes:
        seen.extend(v for k, v in request.headers.items() if k.lower() == "content-type")
        return data

    def define(flow, context):
        flow.dag(codec=faasflow.JSON).node("a").apply(
            "echo", headers={"content-type": "application/vnd.x+json"}
        )

    faasflow.run(define, {}, functions={"echo": echo})
    assert seen == ["application/vnd.x+json"]


def test_the_bytes_codec_adds_no_content_type() -> None:
    seen: list[str | None] = []

    def echo(data: bytes, request: Any) -> bytes:
        seen.append(request.headers.get("Content-Type"))
        return data

    faasflow.run(lambda flow, context: flow.sync_node().apply("echo"), b"x",
                 functions={"echo": echo})
    assert seen == [None]


def test_a_node_codec_overrides_the_dags() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("a").modify(lambda doc: {"text": "hi"})
        dag.node("b", codec=faasflow.BYTES).modify(lambda data: data.upper())
        dag.edge("a", "b")

    assert faasflow.run(define, {}).output == b'{"TEXT":"HI"}'


def test_nested_dags_inherit_the_codec_unless_they_set_their_own() -> None:
    inner = faasflow.Dag(codec=faasflow.TEXT)
    inner.node("t").modify(lambda text: text + "!")

    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("a").modify(lambda doc: doc["name"])
        branch = dag.foreach_branch("F", lambda name: {"k": name}, aggregator=lambda r: r["k"])
        branch.node("up").modify(lambda name: name.upper())  # inherits JSON
        dag.sub_dag("S", inner)  # TEXT: sees the JSON text '"ADA"'
        dag.chain("a", "F", "S")

    assert faasflow.run(define, {"name": "ada"}).output == b'"ADA"!'


def test_a_custom_codec_is_used_for_data_and_content_type() -> None:
    codec = Reversed()
    seen: list[tuple[bytes, str]] = []

    def echo(data: bytes, request: Any) -> bytes:
        seen.append((data, request.headers["Content-Type"]))
        return data

    def define(flow, context):
        flow.dag(codec=codec).node("a").modify(lambda text: text + "def").apply("echo")

    result = faasflow.run(define, "cba", functions={"echo": echo})  # decoded: "abc"
    assert result.output == b"fedcba"
    assert seen == [(b"fedcba", "text/x-reversed")]


def test_a_codec_that_is_not_one_is_a_definition_error_naming_the_protocol() -> None:
    def define(flow, context):
        flow.dag(codec=json)

    with pytest.raises(faasflow.DefinitionError, match=r"content_type, encode\(\) and decode"):
        faasflow.Flow(define)


def test_data_the_codec_cannot_decode_fails_the_request_naming_the_modifier() -> None:
    def define(flow, context):
        flow.dag(codec=faasflow.JSON).node("a").modify(lambda doc: doc)

    result = faasflow.run(define, b"not json")
    assert result.status == "failure"
    assert "not JSON" in (result.error or "")


def test_a_value_the_codec_cannot_encode_fails_the_request() -> None:
    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("a").modify(lambda doc: {1, 2})
        dag.edge("a", "b")

    result = faasflow.run(define, {})
    assert result.status == "failure"
    assert "cannot encode set" in (result.error or "")


def test_on_failure_and_response_handler_results_are_encoded_with_the_codec() -> None:
    def fail(data: bytes) -> bytes:
        raise RuntimeError("no")

    def define(flow, context):
        node = flow.dag(codec=faasflow.JSON).node("a")
        node.apply("fail", on_failure=lambda error: {"status": error.status})
        node.apply("fail", response_handler=lambda response: [response.status])

    result = faasflow.run(define, {}, functions={"fail": fail})
    assert result.json() == [500]


def test_wrapping_keeps_names_so_the_export_and_hash_match_across_codecs() -> None:
    def double(n: Any) -> Any:
        return n * 2

    def plain(flow, context):
        flow.dag().node("a").modify(double)

    def coded(flow, context):
        flow.dag(codec=faasflow.JSON).node("a").modify(double)

    plain_export = faasflow.Flow(plain).export()
    coded_export = faasflow.Flow(coded).export()
    assert coded_export["nodes"]["a"] == plain_export["nodes"]["a"]
    assert faasflow.Flow(coded).graph().root.node("a").operations[0].fn is not double
