"""The parts of the same-process call shortcut, in one process: the shortcut itself on a real
WSGI function app, its thread hand-off and the batched call reports over a real pipe."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from faasflow.errors import ConfigurationError, FunctionTimeout
from faasflow.runtime.callreports import CallReports, read_reports
from faasflow.runtime.callthreads import Runner
from faasflow.runtime.python3http import wsgi_app
from faasflow.runtime.samecall import SameProcessCalls, enabled
from faasflow.runtime.worker import FunctionsApp

GATEWAY = "http://127.0.0.1:31112"


def sleepy(event: Any, context: Any) -> Any:
    time.sleep(float(event.body or 0))
    return {"statusCode": 201, "body": {"slept": event.body.decode()}}


class Pipe:
    """A real pipe: the reports' writer end as a text stream, the reader's lines as JSON."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self.reader = os.fdopen(read, "rb")
        self.writer = os.fdopen(write, "w", encoding="utf-8")

    def lines(self, count: int) -> list[Any]:
        return [json.loads(self.reader.readline()) for _ in range(count)]

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    opened = Pipe()
    yield opened
    opened.close()


def shortcut(reports: CallReports | None = None, timeout: float = 5.0) -> SameProcessCalls:
    app = FunctionsApp({"sleepy": wsgi_app(sleepy, "sleepy"), "a-flow": wsgi_app(sleepy)})
    return SameProcessCalls(app, ["sleepy"], gateway_url=GATEWAY, worker="shared-0",
                            port=40000, timeout=timeout, reports=reports)


def call(calls: SameProcessCalls, function: str = "sleepy", data: bytes = b"0", *,
         method: str = "POST", headers: dict[str, str] | None = None,
         timeout: float | None = None) -> Any:
    return calls.call(function, data, method=method, headers=headers or {}, query=None,
                      timeout=timeout)


@pytest.mark.parametrize(("function", "method", "headers"), [
    ("elsewhere", "POST", {}),
    ("a-flow", "POST", {}),
    ("sleepy.openfaas-fn", "POST", {}),
    ("sleepy", "BREW", {}),
    ("sleepy", "post", {}),
    ("sleepy", "POST", {"Connection": "close"}),
    ("sleepy", "POST", {"Transfer-Encoding": "chunked"}),
    ("sleepy", "POST", {"X-Bad": "a\r\nX-Injected: b"}),
    ("sleepy", "POST", {"X Bad Name": "a"}),
    ("sleepy", "POST", {"X-Wide": "\u20ac"}),
])
def test_a_call_the_http_path_must_answer_is_declined(
    function: str, method: str, headers: dict[str, str]
) -> None:
    assert call(shortcut(), function, method=method, headers=headers) is None


def test_a_served_function_answers_with_the_gateways_headers() -> None:
    answer = call(shortcut(), headers={"X-Call-Id": "c-1"})
    assert answer.status == 201
    assert json.loads(answer.body) == {"slept": "0"}
    assert answer.headers["X-Call-Id"] == "c-1"
    assert answer.headers["X-Served-By"] == "faasflow-up/shared-0"
    assert answer.headers["Content-Length"] == str(len(answer.body))
    assert answer.url == f"{GATEWAY}/function/sleepy"


def test_past_the_gateways_limit_the_answer_is_its_504_in_the_callers_format() -> None:
    started = time.monotonic()
    answer = call(shortcut(timeout=0.2), data=b"1", headers={"Accept": "application/json"})
    assert time.monotonic() - started < 0.9
    assert answer.status == 504
    assert json.loads(answer.body) == {
        "error": "function 'sleepy' did not answer within 0.2s (faasflow up --timeout)",
        "status": 504}
    assert "X-Served-By" not in answer.headers


def test_a_flow_wait_gives_the_call_the_flows_longer_limit() -> None:
    answer = call(shortcut(timeout=0.1), data=b"0.3", headers={"X-Faas-Flow-Wait": "1"})
    assert answer.status == 201


def test_a_call_timeout_shorter_than_the_gateways_raises_and_counts_the_call_later(
    pipe: Pipe,
) -> None:
    calls = shortcut(CallReports(pipe.writer, delay=0.01), timeout=5.0)
    with pytest.raises(FunctionTimeout, match=r"POST http://127.0.0.1:31112/function/sleepy "
                                              r"did not answer within 0.2 s"):
        call(calls, data=b"0.5", timeout=0.2)
    [line] = pipe.lines(1)  # written once the handler ended
    [(function, status, seconds)] = line["served"]
    assert (function, status) == ("sleepy", 201)
    assert seconds >= 0.5


def test_calls_close_together_are_reported_in_one_line(pipe: Pipe) -> None:
    reports = CallReports(pipe.writer, delay=0.2)
    for i in range(50):
        reports.add("f", 200 + i % 2, 0.001)
    [line] = pipe.lines(1)
    assert len(line["served"]) == 50
    assert line["served"][1] == ["f", 201, 0.001]


def test_flush_writes_what_is_pending_at_once(pipe: Pipe) -> None:
    reports = CallReports(pipe.writer, delay=60.0)
    reports.add("f", 200, 0.5)
    reports.flush()
    assert pipe.lines(1) == [{"served": [["f", 200, 0.5]]}]


def test_reports_count_only_the_workers_functions_and_skip_what_is_not_a_report(
    pipe: Pipe,
) -> None:
    pipe.writer.write("not json\n" + json.dumps({"other": 1}) + "\n" + json.dumps(
        {"served": [["f", 200, 0.1], ["stranger", 200, 0.1], ["f", "200", 0.1],
                    ["f", 99, 0.1], ["f", 500, -1], ["f", 500], ["f", 503, 2]]}) + "\n")
    pipe.writer.close()
    counted: list[tuple[str, int, float]] = []
    read_reports(pipe.reader, {"f"}, lambda *entry: counted.append(entry))
    assert counted == [("f", 200, 0.1), ("f", 503, 2.0)]


def test_a_failing_count_does_not_stop_the_reading(pipe: Pipe) -> None:
    pipe.writer.write(json.dumps({"served": [["f", 200, 0.1], ["f", 201, 0.1]]}) + "\n")
    pipe.writer.close()
    counted: list[int] = []

    def count(function: str, status: int, seconds: float) -> None:
        if status == 200:
            raise RuntimeError("metrics are down")
        counted.append(status)

    read_reports(pipe.reader, {"f"}, count)
    assert counted == [201]


def test_a_stuck_call_does_not_hold_up_the_next_one() -> None:
    runner = Runner()
    release = threading.Event()
    stuck = runner.submit(release.wait)
    assert not stuck.wait(0.05)
    assert runner.submit(lambda: "next").wait(2)
    ended: list[object] = []
    stuck.then(lambda job: ended.append(job.result))
    release.set()
    assert stuck.wait(2)
    deadline = time.monotonic() + 2
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended == [True]


def test_an_idle_thread_takes_the_next_call() -> None:
    runner = Runner()
    first = runner.submit(threading.get_ident)
    assert first.wait(2)
    deadline = time.monotonic() + 2
    while not runner.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = runner.submit(threading.get_ident)
    assert second.wait(2)
    assert second.result == first.result


def test_an_error_in_the_call_is_handed_to_the_waiter() -> None:
    job = Runner().submit(lambda: 1 // 0)
    assert job.wait(2)
    assert isinstance(job.error, ZeroDivisionError)


def test_an_idle_thread_ends_after_its_idle_time() -> None:
    runner = Runner(name="faasflow-call-ending", idle=0.05)
    assert runner.submit(lambda: None).wait(2)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not _ended(runner):
        time.sleep(0.01)
    assert _ended(runner)
    assert runner.idle() == 0


def _ended(runner: Runner) -> bool:
    return not any(t.name == runner.name and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize(("raw", "on"), [("", True), ("1", True), ("true", True),
                                         ("0", False), ("off", False), ("No", False)])
def test_the_opt_out_reads_booleans(raw: str, on: bool) -> None:
    assert enabled({"FAASFLOW_SAME_PROCESS_CALLS": raw}) is on


def test_a_malformed_opt_out_names_the_variable_and_its_values() -> None:
    with pytest.raises(ConfigurationError, match=r"FAASFLOW_SAME_PROCESS_CALLS='maybe' is not "
                                                 r"a boolean; use 1 .* or 0"):
        enabled({"FAASFLOW_SAME_PROCESS_CALLS": "maybe"})
