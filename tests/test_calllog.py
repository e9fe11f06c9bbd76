"""faasflow.testing.calllog: a call log that processes share, and the counting handler that
writes it (the crash and multi-host tests count calls with them)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from faasflow.runtime.python3http import Event, Headers, QueryArgs
from faasflow.testing import calllog


def load_handler(source: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(source, "handler.py", "exec"), namespace)
    return namespace["handle"]


def event(body: bytes, **headers: str) -> Event:
    return Event(body, Headers(headers.items()), "POST", QueryArgs(), "/")


def test_counting_handler_logs_the_call_and_answers_body_dot_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("COUNT_LOG", str(log))
    monkeypatch.setenv("HOST_NAME", "h1")
    handle = load_handler(calllog.counting_handler())
    answer = handle(event(b"b7", **{"X-Tag": "s", "Idempotency-Key": "r1/0_1_s"}), None)
    assert answer == "b7.s"
    (call,) = calllog.read(log)
    assert (call.key, call.tag, call.host, call.body) == ("r1/0_1_s", "s", "h1", "b7")


def test_counting_handler_without_tag_or_key_logs_placeholders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("COUNT_LOG", str(log))
    monkeypatch.delenv("HOST_NAME", raising=False)
    assert load_handler(calllog.counting_handler())(event(b"x"), None) == "x.?"
    (call,) = calllog.read(log)
    assert (call.key, call.tag, call.host) == ("", "?", "?")


def test_append_source_defines_append_alone(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(calllog.append_source(), namespace)
    namespace["append"](str(tmp_path / "log"), "agg", "out", "r/aggregator")
    assert [(c.key, c.tag, c.body) for c in calllog.read(tmp_path / "log")] == [
        ("r/aggregator", "agg", "out")
    ]


def test_a_body_with_tabs_reads_back_whole(tmp_path: Path) -> None:
    calllog.append(str(tmp_path / "log"), "t", "a\tb\tc")
    assert calllog.read(tmp_path / "log")[0].body == "a\tb\tc"


def test_read_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert calllog.read(tmp_path / "never-written") == []


def _append_many(log: str, tag: str) -> None:
    for index in range(300):
        calllog.append(log, tag, f"{tag}-{index}-" + "x" * 200)


def test_processes_appending_at_once_leave_whole_lines(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_append_many, args=(log, f"p{i}")) for i in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0] * 4
    calls = calllog.read(Path(log))
    assert len(calls) == 1200
    assert len({c.pid for c in calls}) == 4
    for i in range(4):
        mine = [c.body for c in calls if c.tag == f"p{i}"]
        assert mine == [f"p{i}-{n}-" + "x" * 200 for n in range(300)]


@pytest.mark.parametrize("environment", [{"COUNT_LOG": "/tmp/x y.log", "COUNT_SLEEP": "0.1"},
                                         None])
def test_write_stack_gives_a_stack_of_count_and_the_flow(
    tmp_path: Path, environment: dict[str, str] | None
) -> None:
    from faasflow.runtime.stack import Stack

    path = calllog.write_stack(tmp_path, "fan-1", "def define(flow, context):\n    pass\n",
                               environment)
    stack = Stack.load(path, {})
    assert sorted(stack.functions) == ["count", "fan-1"]
    assert stack.functions["fan-1"].is_flow
    assert dict(stack.functions["count"].environment) == (environment or {})
    assert (tmp_path / "count" / "handler.py").read_text() == calllog.counting_handler()
