"""The gateway's log ring: bounded per function, tail/since selection, following, and the
tagged line format workers write."""

from __future__ import annotations

import threading
import time

import pytest

from faasflow.runtime.logbook import LogBook, LogLine, Tag, decode, encode, parse_time, rfc3339


def line(name: str, text: str, at: float = 0.0) -> LogLine:
    return LogLine(name=name, namespace="openfaas-fn", instance="shared-0",
                   timestamp=at or time.time(), text=text)


def test_each_function_keeps_only_its_last_lines() -> None:
    book = LogBook(per_function=3)
    for i in range(5):
        book.add(line("a", f"a{i}"))
    book.add(line("b", "b0"))
    assert [entry.text for entry in book.read("a")] == ["a2", "a3", "a4"]
    assert [entry.text for entry in book.read("b")] == ["b0"]


def test_tail_and_since_select_lines() -> None:
    book = LogBook()
    for i in range(5):
        book.add(line("a", f"a{i}", at=1000.0 + i))
    assert [e.text for e in book.read("a", tail=2)] == ["a3", "a4"]
    assert book.read("a", tail=0) == []
    assert [e.text for e in book.read("a", since=1003.0)] == ["a3", "a4"]


def test_follow_yields_new_lines_until_stopped() -> None:
    book = LogBook()
    book.add(line("a", "old"))
    stop = threading.Event()
    got: list[str] = []

    def follow() -> None:
        for entry in book.follow("a", tail=0, stop=stop.is_set, poll=0.05):
            got.append(entry.text)

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.1)
    book.add(line("b", "elsewhere"))
    book.add(line("a", "new"))
    time.sleep(0.2)
    stop.set()
    book.wake()
    reader.join(2)
    assert not reader.is_alive()
    assert got == ["new"]


def test_tagged_lines_round_trip_and_untagged_lines_have_no_tag() -> None:
    tag = Tag("fn", "call-1", "req-1")
    assert decode(encode(tag, "hello \u00e9") + b"\n") == (tag, "hello \u00e9")
    assert decode(b"plain text\n") == (None, "plain text")
    assert decode(b"\x1efaasflow-log {broken\n")[0] is None


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-12-01T21:00:00Z", 1796158800.0),
    ("2026-12-01T21:00:00.5Z", 1796158800.5),
    ("2026-12-01T21:00:00.123456789Z", 1796158800.123456),
    ("2026-12-01T22:00:00+01:00", 1796158800.0),
])
def test_rfc3339_times_as_faas_cli_sends_them_are_parsed(raw: str, expected: float) -> None:
    assert parse_time(raw) == pytest.approx(expected)


def test_timestamps_are_written_as_go_marshals_them() -> None:
    assert rfc3339(1796158800.25) == "2026-12-01T21:00:00.250000Z"
