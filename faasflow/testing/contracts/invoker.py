"""The contract every Invoker passes against an OpenFaaS-like gateway."""

from __future__ import annotations

import base64
import json
import queue
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs

import pytest

from faasflow.errors import FunctionError
from faasflow.interfaces import Invoker, Response
from faasflow.testing.contracts._common import run_threads
from faasflow.testing.contracts.loopback import LoopbackServer, free_port


class InvokerContract:
    """Behaviour every :class:`~faasflow.Invoker` must show against an OpenFaaS-like gateway
    (the :class:`LoopbackServer` the contract starts)."""

    #: ``call(..., timeout=...)`` interrupts a slow function.
    supports_timeout: ClassVar[bool] = True
    #: Threads in the concurrent call test.
    workers: ClassVar[int] = 4

    server: LoopbackServer
    invoker: Invoker
    delivered: queue.Queue[tuple[str, str, bytes, Mapping[str, str]]]

    def make_invoker(self, base_url: str) -> Invoker:
        """Return an invoker whose gateway is ``base_url``; the subclass implements this."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement make_invoker(self, base_url)"
        )

    @pytest.fixture(scope="class")
    @classmethod
    def faasflow_loopback_server(cls) -> Iterator[LoopbackServer]:
        """One loopback gateway per test class."""
        server = LoopbackServer()
        yield server
        server.close()

    @pytest.fixture(autouse=True)
    def _faasflow_invoker(self, faasflow_loopback_server: LoopbackServer) -> Iterator[None]:
        self.server = faasflow_loopback_server
        self.server.forward_status = 202
        while not self.server.forwarded.empty():
            self.server.forwarded.get_nowait()
        self.delivered = queue.Queue()
        self.invoker = self.make_invoker(self.server.url)

        def deliver(flow: str, request_id: str, message: bytes, headers: Mapping[str, str]) -> None:
            self.delivered.put((flow, request_id, message, dict(headers)))

        self.invoker.bind(deliver)
        try:
            yield
        finally:
            self.invoker.close()

    def inspect(self, response: Response) -> dict[str, Any]:
        """Decode what the ``inspect`` route saw."""
        assert response.status == 200, response
        seen: dict[str, Any] = json.loads(response.body)
        seen["body"] = base64.b64decode(seen["body"])
        return seen

    def wait_forwarded(self) -> tuple[str, str, bytes, Mapping[str, str]]:
        """The next forwarded iteration, whether it went over HTTP or in-process."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return self.delivered.get(timeout=0.02)
            except queue.Empty:
                pass
            try:
                received = self.server.forwarded.get_nowait()
            except queue.Empty:
                continue
            parts = received.path.strip("/").split("/")
            # /async-function/<flow>/flow/<id>/forward
            return parts[1], parts[3], received.body, received.headers
        pytest.fail("the forwarded iteration was not delivered within 10 s")

    def test_call_returns_status_and_body(self) -> None:
        response = self.invoker.call("echo", b"hello")
        assert response.status == 200
        assert response.ok
        assert response.body == b"hello"

    def test_call_passes_headers_and_query(self) -> None:
        response = self.invoker.call(
            "inspect",
            b"data",
            headers={"X-Faasflow-Test": "1"},
            query={"a": ["1", "2"], "b": ["x y"]},
        )
        seen = self.inspect(response)
        assert seen["path"] == "/function/inspect"
        assert seen["headers"]["x-faasflow-test"] == "1"
        assert parse_qs(seen["query"]) == {"a": ["1", "2"], "b": ["x y"]}
        assert seen["body"] == b"data"

    def test_call_uses_the_given_method(self) -> None:
        seen = self.inspect(self.invoker.call("inspect", b"", method="GET"))
        assert seen["method"] == "GET"

    def test_call_defaults_to_post(self) -> None:
        seen = self.inspect(self.invoker.call("inspect", b"x"))
        assert seen["method"] == "POST"

    def test_call_returns_response_headers(self) -> None:
        response = self.invoker.call("headers", b"")
        lowered = {k.lower(): v for k, v in response.headers.items()}
        assert lowered["x-contract"] == "yes"

    def test_call_returns_non_2xx_status_without_raising(self) -> None:
        response = self.invoker.call("status-418", b"")
        assert response.status == 418
        assert not response.ok
        assert response.body == b"status 418"

    def test_call_returns_5xx_without_raising(self) -> None:
        response = self.invoker.call("fail", b"")
        assert response.status == 500
        assert response.body == b"boom"

    def test_call_binary_body_round_trips(self) -> None:
        body = bytes(range(256)) * 4096
        assert self.invoker.call("echo", body).body == body

    def test_call_empty_body_round_trips(self) -> None:
        response = self.invoker.call("echo", b"")
        assert response.status == 200
        assert response.body == b""

    def test_call_timeout_raises_function_error_marked_timeout(self) -> None:
        if not self.supports_timeout:
            pytest.skip(f"{type(self).__name__} cannot interrupt a slow function")
        with pytest.raises(FunctionError) as info:
            self.invoker.call("slow", b"", timeout=0.3)
        assert getattr(info.value, "timeout", False) is True
        assert "slow" in str(info.value) or "slow" in info.value.url

    def test_request_reaches_any_url(self) -> None:
        response = self.invoker.request(
            "PUT", f"{self.server.url}/callback/path?x=1", b"payload", headers={"X-A": "b"}
        )
        seen = self.inspect(response)
        assert seen["method"] == "PUT"
        assert seen["path"] == "/callback/path"
        assert seen["query"] == "x=1"
        assert seen["headers"]["x-a"] == "b"
        assert seen["body"] == b"payload"

    def test_request_to_closed_port_raises_function_error(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/nothing"
        with pytest.raises(FunctionError) as info:
            self.invoker.request("POST", url, b"", timeout=5)
        assert info.value.url == url
        assert info.value.status is None
        assert getattr(info.value, "timeout", False) is False

    def test_concurrent_calls_get_their_own_answers(self) -> None:
        def work(index: int) -> list[bytes]:
            return [self.invoker.call("echo", f"{index}-{n}".encode()).body for n in range(10)]

        results = run_threads(work, self.workers)
        for index, bodies in enumerate(results):
            assert bodies == [f"{index}-{n}".encode() for n in range(10)]

    def test_forward_delivers_the_message(self) -> None:
        self.invoker.forward("my-flow", "req-1", b'{"v": 1}', {"X-Trace": "abc"})
        flow, request_id, message, headers = self.wait_forwarded()
        assert (flow, request_id, message) == ("my-flow", "req-1", b'{"v": 1}')
        assert {k.lower(): v for k, v in headers.items()}["x-trace"] == "abc"

    def test_forward_delivers_every_message(self) -> None:
        for index in range(20):
            self.invoker.forward("my-flow", f"req-{index}", str(index).encode(), {})
        seen = {self.wait_forwarded()[1] for _ in range(20)}
        assert seen == {f"req-{index}" for index in range(20)}
