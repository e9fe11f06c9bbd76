"""Built-in operations (apply, request, modify) against a real loopback HTTP server and the real
``openfaas`` invoker: headers, query, method, failure and response handling, retries, timeouts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest

import faasflow
from faasflow.default_plugins.invokers import OpenFaasInvoker
from faasflow.errors import FaasflowError, FunctionError
from faasflow.operations import Apply, Call, HttpRequest, Modify, Request, Retry


@attrs.frozen
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


Route = Callable[[Seen], "tuple[int, bytes] | tuple[int, bytes, dict[str, str]]"]


class Server:
    """A loopback HTTP server whose answers each test chooses per path."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.routes: dict[str, Route] = {}
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def handle_one(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                server.seen.append(seen)
                route = server.routes.get(parts.path, lambda s: (200, s.body))
                status, body, *extra = route(seen)
                self.send_response(status)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = handle_one

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


class CountingInvoker(OpenFaasInvoker):
    """The real invoker, counting the calls that reach it (refused connections included)."""

    attempts = 0

    def call(self, *args, **kwargs):
        self.attempts += 1
        return super().call(*args, **kwargs)

    def request(self, *args, **kwargs):
        self.attempts += 1
        return super().request(*args, **kwargs)


@pytest.fixture
def invoker(server: Server) -> Iterator[CountingInvoker]:
    inv = CountingInvoker(gateway_url=server.url, timeout=5.0)
    yield inv
    inv.close()


def make_call(invoker, **overrides) -> Call:
    options = {
        "invoker": invoker,
        "flow_name": "testflow",
        "request_id": "req-1",
        "node": "0_1_sync",
        "idempotency_key": "req-1/0_1_sync",
        "headers": {"traceparent": "00-abc-def-01"},
    }
    options.update(overrides)
    return Call(**options)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAST = {"initial_backoff": 0.001, "max_backoff": 0.002, "jitter": 0.0}


# --- apply: what is sent ------------------------------------------------------------------


def test_apply_posts_the_data_to_the_function_and_returns_its_body(server, invoker):
    server.routes["/function/func1"] = lambda s: (200, s.body + b"func1")
    call = make_call(invoker)
    assert Apply("func1").execute(b"x", call) == b"xfunc1"
    (seen,) = server.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/function/func1", b"x")
    assert call.attributes["faasflow.function"] == "func1"
    assert call.attributes["http.request.method"] == "POST"
    assert call.attributes["http.response.status_code"] == 200
    assert call.attributes["url.full"] == f"{server.url}/function/func1"
    assert call.attributes["faasflow.retries"] == 0


def test_apply_sends_request_id_idempotency_key_and_propagation_headers(server, invoker):
    Apply("echo").execute(b"", make_call(invoker))
    headers = server.seen[0].headers
    assert headers["x-faas-flow-reqid"] == "req-1"
    assert headers["idempotency-key"] == "req-1/0_1_sync"
    assert headers["traceparent"] == "00-abc-def-01"


def test_operation_headers_override_call_headers_case_insensitively(server, invoker):
    call = make_call(invoker, headers={"X-Token": "from-call"})
    Apply("echo", headers={"x-token": "from-op", "X-Other": "o"}).execute(b"", call)
    headers = server.seen[0].headers
    assert headers["x-token"] == "from-op"
    assert headers["x-other"] == "o"


def test_default_method_comes_from_the_call(server, invoker):
    Apply("echo").execute(b"", make_call(invoker, default_method="PUT"))
    assert server.seen[0].method == "PUT"


def test_header_named_method_overrides_the_http_method(server, invoker):
    Apply("echo", headers={"method": "GET"}).execute(b"", make_call(invoker))
    assert server.seen[0].method == "GET"


def test_method_option_wins_over_the_method_header(server, invoker):
    Apply("echo", method="DELETE", headers={"Method": "GET"}).execute(b"", make_call(invoker))
    assert server.seen[0].method == "DELETE"


def test_apply_sends_multi_valued_query(server, invoker):
    Apply("echo", query={"a": ["1", "2"], "b": ["x y"]}).execute(b"", make_call(invoker))
    assert server.seen[0].query == {"a": ["1", "2"], "b": ["x y"]}


def test_request_handler_changes_what_is_sent(server, invoker):
    def handler(request: HttpRequest) -> None:
        assert request.url == "echo"
        request.headers["X-A"] = "1"
        request.query["extra"] = ["yes"]
        request.body = request.body + b"!"

    Apply("echo", request_handler=handler).execute(b"data", make_call(invoker))
    seen = server.seen[0]
    assert (seen.headers["x-a"], seen.query, seen.body) == ("1", {"extra": ["yes"]}, b"data!")


def test_request_handler_changing_the_url_of_apply_calls_another_function(server, invoker):
    def handler(request: HttpRequest) -> None:
        request.url = "other"

    Apply("echo", request_handler=handler).execute(b"", make_call(invoker))
    assert server.seen[0].path == "/function/other"


# --- apply: failures ------------------------------------------------------------------------


def test_non_2xx_fails_with_status_url_and_body(server, invoker):
    server.routes["/function/fail500"] = lambda s: (500, b"boom")
    call = make_call(invoker)
    with pytest.raises(FunctionError) as info:
        Apply("fail500").execute(b"x", call)
    error = info.value
    assert str(error) == (
        f"invalid return status 500 while connecting {server.url}/function/fail500"
    )
    assert (error.status, error.body) == (500, b"boom")
    assert call.attributes["http.response.status_code"] == 500


def test_on_failure_returning_none_swallows_and_continues_with_the_body(server, invoker):
    server.routes["/function/fail500"] = lambda s: (500, b"boom")
    errors: list[FunctionError] = []
    out = Apply("fail500", on_failure=errors.append).execute(b"x", make_call(invoker))
    assert out == b"boom"
    assert len(errors) == 1
    assert "500" in str(errors[0])
    assert "/function/fail500" in str(errors[0])


def test_on_failure_returning_str_replaces_the_output(server, invoker):
    server.routes["/function/fail500"] = lambda s: (500, b"boom")
    out = Apply("fail500", on_failure=lambda e: f"fallback {e.status}").execute(
        b"x", make_call(invoker)
    )
    assert out == b"fallback 500"


def test_on_failure_raising_fails_the_operation(server, invoker):
    server.routes["/function/fail500"] = lambda s: (500, b"boom")

    def rethrow(error: FunctionError) -> None:
        raise RuntimeError(f"handled: {error.status}")

    with pytest.raises(RuntimeError, match="handled: 500"):
        Apply("fail500", on_failure=rethrow).execute(b"x", make_call(invoker))


def test_connection_error_raises_function_error(invoker):
    invoker.gateway_url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(FunctionError) as info:
        Apply("func1").execute(b"x", make_call(invoker))
    assert info.value.status is None


def test_connection_error_swallowed_by_on_failure_continues_with_empty_data(invoker):
    invoker.gateway_url = f"http://127.0.0.1:{closed_port()}"
    errors: list[FunctionError] = []
    assert Apply("func1", on_failure=errors.append).execute(b"x", make_call(invoker)) == b""
    assert len(errors) == 1


def test_response_handler_output_replaces_the_body_and_status_is_not_checked(server, invoker):
    server.routes["/function/fail500"] = lambda s: (500, b"boom")
    op = Apply("fail500", response_handler=lambda r: f"status={r.status}")
    assert op.execute(b"x", make_call(invoker)) == b"status=500"


def test_response_handler_returning_nothing_fails_naming_the_operation(server, invoker):
    with pytest.raises(FaasflowError, match="response_handler of 'echo'.*bytes or str"):
        Apply("echo", response_handler=lambda r: None).execute(b"x", make_call(invoker))


# --- request ------------------------------------------------------------------------------


def test_request_calls_the_url_with_data_and_returns_the_body(server, invoker):
    server.routes["/api/hook"] = lambda s: (201, b"created:" + s.body)
    call = make_call(invoker)
    assert Request(f"{server.url}/api/hook").execute(b"x", call) == b"created:x"
    seen = server.seen[0]
    assert (seen.method, seen.path) == ("POST", "/api/hook")
    assert seen.headers["x-faas-flow-reqid"] == "req-1"
    assert call.attributes["url.full"] == f"{server.url}/api/hook"
    assert "faasflow.function" not in call.attributes


def test_request_appends_query_to_a_url_that_already_has_one(server, invoker):
    Request(f"{server.url}/api?a=1", query={"b": ["2", "3"]}).execute(b"", make_call(invoker))
    assert server.seen[0].query == {"a": ["1"], "b": ["2", "3"]}


def test_request_response_handler_output_is_kept(server, invoker):
    op = Request(f"{server.url}/api", response_handler=lambda r: r.body.upper())
    assert op.execute(b"abc", make_call(invoker)) == b"ABC"


def test_request_non_2xx_names_the_url(server, invoker):
    server.routes["/api"] = lambda s: (404, b"nope")
    expected = f"invalid return status 404 while connecting {server.url}/api"
    with pytest.raises(FunctionError, match=expected):
        Request(f"{server.url}/api").execute(b"", make_call(invoker))


# --- retries and timeouts -----------------------------------------------------------------


def flaky(failures: int, status: int = 503) -> Route:
    count = {"n": 0}

    def route(seen: Seen):
        count["n"] += 1
        if count["n"] <= failures:
            return status, b"busy"
        return 200, b"ok"

    return route


def test_retry_repeats_on_5xx_until_success_with_the_same_idempotency_key(server, invoker):
    server.routes["/function/flaky"] = flaky(2)
    call = make_call(invoker)
    assert Apply("flaky", retry=Retry(attempts=3, **FAST)).execute(b"x", call) == b"ok"
    assert len(server.seen) == 3
    assert {s.headers["idempotency-key"] for s in server.seen} == {"req-1/0_1_sync"}
    assert call.attributes["faasflow.retries"] == 2


def test_retry_repeats_on_429(server, invoker):
    server.routes["/function/limited"] = flaky(1, status=429)
    assert Apply("limited", retry=Retry(**FAST)).execute(b"", make_call(invoker)) == b"ok"
    assert len(server.seen) == 2


def test_retry_gives_up_after_the_attempts_with_the_last_status(server, invoker):
    server.routes["/function/down"] = lambda s: (502, b"bad gateway")
    call = make_call(invoker)
    with pytest.raises(FunctionError, match="invalid return status 502"):
        Apply("down", retry=Retry(attempts=4, **FAST)).execute(b"", call)
    assert len(server.seen) == 4
    assert call.attributes["faasflow.retries"] == 3


def test_retry_does_not_repeat_a_client_error(server, invoker):
    server.routes["/function/bad"] = lambda s: (400, b"bad input")
    with pytest.raises(FunctionError, match="400"):
        Apply("bad", retry=Retry(**FAST)).execute(b"", make_call(invoker))
    assert len(server.seen) == 1


def test_retry_on_statuses_can_be_chosen(server, invoker):
    server.routes["/function/conflict"] = flaky(1, status=409)
    op = Apply("conflict", retry=Retry(retry_on=[409], **FAST))
    assert op.execute(b"", make_call(invoker)) == b"ok"
    assert len(server.seen) == 2


def test_retry_repeats_connection_errors(invoker):
    invoker.gateway_url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(FunctionError):
        Apply("f", retry=Retry(attempts=3, **FAST)).execute(b"", make_call(invoker))
    assert invoker.attempts == 3


def test_retry_of_connection_errors_can_be_switched_off(invoker):
    invoker.gateway_url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(FunctionError):
        Apply("f", retry=Retry(connection_errors=False, **FAST)).execute(b"", make_call(invoker))
    assert invoker.attempts == 1


def blocked(server: Server) -> Route:
    def route(seen: Seen):
        server.release.wait(10)
        return 200, b"late"

    return route


def test_timeout_fails_with_a_timeout_error(server, invoker):
    server.routes["/function/slow"] = blocked(server)
    with pytest.raises(FunctionError) as info:
        Apply("slow", timeout=0.2).execute(b"", make_call(invoker))
    assert getattr(info.value, "timeout", False)


def test_timeouts_are_retried_unless_switched_off(server, invoker):
    server.routes["/function/slow"] = blocked(server)
    op = Apply("slow", timeout=0.1, retry=Retry(attempts=2, timeouts=False, **FAST))
    with pytest.raises(FunctionError):
        op.execute(b"", make_call(invoker))
    assert invoker.attempts == 1
    op = Apply("slow", timeout=0.1, retry=Retry(attempts=2, **FAST))
    with pytest.raises(FunctionError):
        op.execute(b"", make_call(invoker))
    assert invoker.attempts == 3


def test_request_deadline_caps_the_timeout(server, invoker):
    server.routes["/function/slow"] = blocked(server)
    call = make_call(invoker, deadline=time.time() + 0.3)
    with pytest.raises(FunctionError) as info:
        Apply("slow", timeout=60).execute(b"", call)
    assert getattr(info.value, "timeout", False)


def test_passed_deadline_fails_without_calling(server, invoker):
    call = make_call(invoker, deadline=time.time() - 1)
    with pytest.raises(FunctionError, match="req-1 reached its deadline") as info:
        Apply("func1").execute(b"", call)
    assert getattr(info.value, "timeout", False)
    assert server.seen == []


def test_retry_backoff_never_sleeps_past_the_deadline(server, invoker):
    server.routes["/function/down"] = lambda s: (503, b"")
    call = make_call(invoker, deadline=time.time() + 30)
    op = Apply("down", retry=Retry(attempts=5, initial_backoff=60, max_backoff=60, jitter=0))
    with pytest.raises(FunctionError, match="503"):
        op.execute(b"", call)
    assert len(server.seen) == 1


def test_backoff_grows_exponentially_up_to_the_cap():
    retry = Retry(initial_backoff=0.5, multiplier=3, max_backoff=4, jitter=0)
    assert [retry.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4, 4]


def test_backoff_jitter_only_shortens_the_wait():
    retry = Retry(initial_backoff=1, max_backoff=1, jitter=0.5)
    delays = [retry.backoff(1) for _ in range(200)]
    assert all(0.5 <= d <= 1 for d in delays)
    assert len(set(delays)) > 1


def test_backoff_honours_retry_after_up_to_the_cap():
    retry = Retry(initial_backoff=0.1, max_backoff=2, jitter=0)
    assert retry.backoff(1, retry_after=1.5) == 1.5
    assert retry.backoff(1, retry_after=100) == 2


def test_default_retry_statuses_are_429_and_5xx():
    retry = Retry()
    assert retry.retries_status(429)
    assert retry.retries_status(500)
    assert retry.retries_status(599)
    assert not retry.retries_status(404)
    assert not retry.retries_status(200)


# --- modify, ids, properties --------------------------------------------------------------


def test_modify_output_may_be_str(invoker):
    assert Modify(lambda d: d.decode() + "é").execute(b"x", make_call(invoker)) == "xé".encode()


def test_modify_returning_none_fails_naming_the_modifier(invoker):
    def forgot_return(data):
        data.upper()

    with pytest.raises(FaasflowError, match="forgot_return returned NoneType"):
        Modify(forgot_return).execute(b"x", make_call(invoker))


def test_operation_ids_follow_faas_flow():
    assert Apply("func1").id == "func1"
    assert Modify(bytes.upper).id == "modifier"
    assert Request("http://a").id == "http-req-http://a"
    assert Request("http://example.test/api/v1/callback").id == "http-req-/api/v1/callback"


def test_operation_properties_follow_faas_flow():
    assert Apply("f", on_failure=print).properties() == {
        "isMod": ["false"],
        "isFunction": ["true"],
        "isHttpRequest": ["false"],
        "hasFailureHandler": ["true"],
        "hasResponseHandler": ["false"],
    }
    assert Request("http://a", response_handler=bytes).properties()["isHttpRequest"] == ["true"]
    assert Request("http://a", response_handler=bytes).properties()["hasResponseHandler"] == [
        "true"
    ]
    assert Modify(bytes.upper).properties()["isMod"] == ["true"]


def test_node_apply_builds_the_same_operation(server, invoker):
    def define(flow, context):
        flow.sync_node().apply("echo", headers={"X-A": "1"}, query={"q": "v"}, timeout=3)

    (op,) = faasflow.Flow(define).graph().root.node("sync").operations
    op.execute(b"", make_call(invoker))
    seen = server.seen[0]
    assert (seen.headers["x-a"], seen.query) == ("1", {"q": ["v"]})


def test_a_request_deadline_never_lengthens_the_invokers_own_timeout() -> None:
    class Recording:
        timeout = 30.0

        def __init__(self) -> None:
            self.timeouts: list[float | None] = []

        def call(self, function, data, *, method="POST", headers=None, query=None, timeout=None):
            self.timeouts.append(timeout)
            return faasflow.Response(200, b"ok")

    invoker = Recording()
    call = Call(invoker, "f", "r", "n", idempotency_key="r/n",  # type: ignore[arg-type]
                deadline=time.time() + 3600)
    Apply("fn").execute(b"", call)
    call.deadline = time.time() + 5
    Apply("fn").execute(b"", call)
    assert invoker.timeouts[0] == 30.0
    assert invoker.timeouts[1] is not None and invoker.timeouts[1] <= 5


def _answers(*steps: object):
    """A fake invoker giving each step in turn: a status, or an exception to raise."""

    class Scripted:
        def __init__(self) -> None:
            self.steps = list(steps)
            self.calls = 0

        def call(self, function, data, *, method="POST", headers=None, query=None, timeout=None):
            self.calls += 1
            step = self.steps.pop(0)
            if isinstance(step, BaseException):
                raise step
            return faasflow.Response(int(step), b"body")  # type: ignore[call-overload]

    return Scripted()


def _reset() -> FunctionError:
    try:
        raise FunctionError("POST /function/fn failed: reset", url="/function/fn") from (
            ConnectionResetError("peer reset")
        )
    except FunctionError as exc:
        return exc


@pytest.mark.parametrize(
    ("steps", "calls", "ok"),
    [
        ((502, 200), 2, True),
        ((503, 504, 200), 3, True),
        ((500,), 1, False),  # the function itself failed: not transient
        ((_reset(), 200), 2, True),
        ((FunctionError("no such function", url="local:fn"),), 1, False),
    ],
)
def test_the_default_retry_tries_only_transient_failures_again(steps, calls, ok) -> None:
    invoker = _answers(*steps)
    call = Call(invoker, "f", "r", "n", idempotency_key="r/n",  # type: ignore[arg-type]
                default_retry=Retry.transient(3))
    try:
        Apply("fn").execute(b"", call)
        succeeded = True
    except FunctionError:
        succeeded = False
    assert (invoker.calls, succeeded) == (calls, ok)


def test_retry_never_switches_the_default_off() -> None:
    invoker = _answers(502, 200)
    call = Call(invoker, "f", "r", "n", idempotency_key="r/n",  # type: ignore[arg-type]
                default_retry=Retry.transient(3))
    with pytest.raises(FunctionError, match="502"):
        Apply("fn", retry=Retry.never()).execute(b"", call)
    assert invoker.calls == 1
