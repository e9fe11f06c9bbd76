"""The Consul KV stand-in answers as Consul's KV HTTP API is documented to.

The Consul plugin's tests are only as good as this stand-in, so its semantics are pinned here
with plain HTTP calls, independent of the plugin and of py-consul.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from consul_standin import ConsulStandIn


def call(
    standin: ConsulStandIn, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(f"{standin.url}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            raw = answer.read()
            status, headers = answer.status, dict(answer.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, headers, json.loads(raw) if raw else None
    except ValueError:
        return status, headers, raw.decode()


def test_put_then_get_returns_base64_value_and_indexes(standin: ConsulStandIn) -> None:
    assert call(standin, "PUT", "/v1/kv/a/b", b"hello")[2] is True
    status, headers, entries = call(standin, "GET", "/v1/kv/a/b")
    assert status == 200
    (entry,) = entries
    assert base64.b64decode(entry["Value"]) == b"hello"
    assert entry["CreateIndex"] == entry["ModifyIndex"] == int(headers["X-Consul-Index"])


def test_overwrite_keeps_create_index_and_raises_modify_index(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/k", b"1")
    (first,) = call(standin, "GET", "/v1/kv/k")[2]
    call(standin, "PUT", "/v1/kv/k", b"2")
    (second,) = call(standin, "GET", "/v1/kv/k")[2]
    assert second["CreateIndex"] == first["CreateIndex"]
    assert second["ModifyIndex"] > first["ModifyIndex"]


def test_empty_value_reads_back_as_null(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/empty", b"")
    assert call(standin, "GET", "/v1/kv/empty")[2][0]["Value"] is None


def test_missing_key_is_404_with_an_index(standin: ConsulStandIn) -> None:
    status, headers, _ = call(standin, "GET", "/v1/kv/nothing")
    assert status == 404
    assert int(headers["X-Consul-Index"]) >= 1


def test_cas_zero_writes_only_an_absent_key(standin: ConsulStandIn) -> None:
    assert call(standin, "PUT", "/v1/kv/c?cas=0", b"first")[2] is True
    assert call(standin, "PUT", "/v1/kv/c?cas=0", b"second")[2] is False
    assert base64.b64decode(call(standin, "GET", "/v1/kv/c")[2][0]["Value"]) == b"first"


def test_cas_index_writes_only_at_that_modify_index(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/c", b"1")
    index = call(standin, "GET", "/v1/kv/c")[2][0]["ModifyIndex"]
    assert call(standin, "PUT", f"/v1/kv/c?cas={index + 1}", b"x")[2] is False
    assert call(standin, "PUT", f"/v1/kv/c?cas={index}", b"2")[2] is True
    assert call(standin, "PUT", f"/v1/kv/c?cas={index}", b"3")[2] is False
    assert call(standin, "PUT", "/v1/kv/absent?cas=5", b"x")[2] is False


def test_recurse_returns_the_prefix_sorted_and_keys_roll_up_at_separator(
    standin: ConsulStandIn,
) -> None:
    for key in ("p/b", "p/a", "p/d/x", "p/d/y", "q/z"):
        call(standin, "PUT", f"/v1/kv/{key}", b"v")
    entries = call(standin, "GET", "/v1/kv/p/?recurse")[2]
    assert [e["Key"] for e in entries] == ["p/a", "p/b", "p/d/x", "p/d/y"]
    assert call(standin, "GET", "/v1/kv/p/?keys&separator=/")[2] == ["p/a", "p/b", "p/d/"]
    assert call(standin, "GET", "/v1/kv/none/?recurse")[0] == 404


def test_recursive_delete_removes_only_the_prefix(standin: ConsulStandIn) -> None:
    for key in ("r1/a", "r1/b/c", "r10/a"):
        call(standin, "PUT", f"/v1/kv/{key}", b"v")
    assert call(standin, "DELETE", "/v1/kv/r1/?recurse")[2] is True
    assert call(standin, "GET", "/v1/kv/?keys")[2] == ["r10/a"]


def test_delete_with_cas_needs_the_modify_index(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/d", b"v")
    index = call(standin, "GET", "/v1/kv/d")[2][0]["ModifyIndex"]
    assert call(standin, "DELETE", "/v1/kv/d?cas=0")[2] is False
    assert call(standin, "DELETE", f"/v1/kv/d?cas={index + 1}")[2] is False
    assert call(standin, "DELETE", f"/v1/kv/d?cas={index}")[2] is True
    assert call(standin, "GET", "/v1/kv/d")[0] == 404


def test_read_after_delete_reports_the_tombstone_index(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/t", b"v")
    call(standin, "DELETE", "/v1/kv/t")
    deleted_at = int(call(standin, "GET", "/v1/kv/t")[1]["X-Consul-Index"])
    call(standin, "PUT", "/v1/kv/other", b"v")
    assert int(call(standin, "GET", "/v1/kv/t")[1]["X-Consul-Index"]) == deleted_at


def test_blocking_query_returns_after_a_write(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/w", b"old")
    index = int(call(standin, "GET", "/v1/kv/w")[1]["X-Consul-Index"])
    writer = threading.Timer(0.2, call, args=(standin, "PUT", "/v1/kv/w", b"new"))
    writer.start()
    try:
        _, headers, entries = call(standin, "GET", f"/v1/kv/w?index={index}&wait=8s")
    finally:
        writer.join()
    assert int(headers["X-Consul-Index"]) > index
    assert base64.b64decode(entries[0]["Value"]) == b"new"


def test_value_over_512_kib_is_refused(standin: ConsulStandIn) -> None:
    status, _, body = call(standin, "PUT", "/v1/kv/big", b"x" * (512 * 1024 + 1))
    assert status == 413
    assert "too large" in body


@pytest.mark.parametrize(
    "path", ["/v1/kv/k?acquire=session", "/v1/session/create"]
)
def test_unimplemented_features_answer_501(standin: ConsulStandIn, path: str) -> None:
    assert call(standin, "PUT", path, b"x")[0] == 501


def test_token_is_required_when_configured(token_standin: ConsulStandIn) -> None:
    assert call(token_standin, "GET", "/v1/kv/k")[0] == 403
    assert call(token_standin, "PUT", "/v1/kv/k?token=s3cr3t", b"v")[2] is True


def _txn(standin: ConsulStandIn, *ops: dict[str, Any]) -> tuple[int, Any]:
    body = json.dumps([{"KV": op} for op in ops]).encode()
    status, _, answer = call(standin, "PUT", "/v1/txn", body)
    return status, answer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_txn_applies_every_operation_under_one_index(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/gone", b"x")
    status, answer = _txn(
        standin,
        {"Verb": "check-not-exists", "Key": "a"},
        {"Verb": "set", "Key": "a", "Value": _b64("1")},
        {"Verb": "set", "Key": "b", "Value": _b64("2")},
        {"Verb": "delete", "Key": "gone"},
    )
    assert status == 200
    assert answer["Errors"] is None
    (a,), (b,) = call(standin, "GET", "/v1/kv/a")[2], call(standin, "GET", "/v1/kv/b")[2]
    assert a["ModifyIndex"] == b["ModifyIndex"]
    assert base64.b64decode(a["Value"]) == b"1"
    assert call(standin, "GET", "/v1/kv/gone")[0] == 404


def test_txn_with_a_stale_check_index_applies_nothing_and_answers_409(
    standin: ConsulStandIn,
) -> None:
    call(standin, "PUT", "/v1/kv/k", b"1")
    (entry,) = call(standin, "GET", "/v1/kv/k")[2]
    call(standin, "PUT", "/v1/kv/k", b"2")
    status, answer = _txn(
        standin,
        {"Verb": "set", "Key": "other", "Value": _b64("x")},
        {"Verb": "check-index", "Key": "k", "Index": entry["ModifyIndex"]},
    )
    assert status == 409
    assert answer["Results"] is None
    assert [e["OpIndex"] for e in answer["Errors"]] == [1]
    assert call(standin, "GET", "/v1/kv/other")[0] == 404


def test_txn_check_not_exists_fails_on_a_present_key(standin: ConsulStandIn) -> None:
    call(standin, "PUT", "/v1/kv/k", b"")
    status, answer = _txn(standin, {"Verb": "check-not-exists", "Key": "k"})
    assert status == 409
    assert "exists" in answer["Errors"][0]["What"]


def test_txn_of_more_than_64_operations_is_refused_with_413(standin: ConsulStandIn) -> None:
    ops = [{"Verb": "set", "Key": f"k{i}", "Value": _b64("v")} for i in range(65)]
    status, answer = _txn(standin, *ops)
    assert status == 413
    assert "too many operations" in str(answer)


def test_txn_verbs_the_standin_lacks_answer_501(standin: ConsulStandIn) -> None:
    status, _ = _txn(standin, {"Verb": "lock", "Key": "k", "Session": "s"})
    assert status == 501
