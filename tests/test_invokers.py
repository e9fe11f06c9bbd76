"""The built-in invokers beyond the contract: OpenFaaS URLs and errors, local callables and
the in-process iteration pool."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

import pytest

from faasflow import Response
from faasflow.default_plugins.invokers import LocalInvoker, LocalRequest, OpenFaasInvoker
from faasflow.errors import BackendError, ConfigurationError, FunctionError
from faasflow.testing import LoopbackServer, free_port


@pytest.fixture
def gateway():
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
def openfaas(gateway):
    invoker = OpenFaasInvoker.from_options({"gateway_url": gateway.url})
    yield invoker
    invoker.close()


@pytest.fixture
def local():
    invoker = LocalInvoker.from_options({})
    yield invoker
    invoker.close()


# -- openfaas ----------------------------------------------------------------------------------


def test_forward_posts_json_to_the_async_flow_url(openfaas, gateway):
    openfaas.forward("my-flow", "req 1", b'{"id": 1}', {"X-Callback-Url": "http://x"})
    received = gateway.forwarded.get(timeout=5)
    assert received.method == "POST"
    assert received.path == "/async-function/my-flow/flow/req%201/forward"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-callback-url"] == "http://x"
    assert received.body == b'{"id": 1}'


def test_forward_accepts_200(openfaas, gateway):
    gateway.forward_status = 200
    openfaas.forward("f", "r", b"{}", {})
    assert gateway.forwarded.get(timeout=5).path.endswith("/flow/r/forward")


def test_forward_refused_by_the_gateway_is_a_backend_error(openfaas, gateway):
    gateway.forward_status = 503
    with pytest.raises(BackendError) as info:
        openfaas.forward("f", "r", b"{}", {})
    assert info.value.backend == "openfaas invoker"
    assert info.value.operation == "forward"
    assert info.value.endpoint == f"{gateway.url}/async-function/f/flow/r/forward"
    assert str(info.value.cause).startswith("503: ")


def test_forward_to_an_unreachable_gateway_is_a_backend_error():
    invoker = OpenFaasInvoker.from_options({"gateway_url": f"127.0.0.1:{free_port()}"})
    try:
        with pytest.raises(BackendError, match="forward failed at http://127.0.0.1:"):
            invoker.forward("f", "r", b"{}", {})
    finally:
        invoker.close()


def test_bare_host_and_port_gateway_gets_http():
    assert OpenFaasInvoker.from_options({"gateway_url": "gw:8080/"}).gateway_url == (
        "http://gw:8080"
    )


def test_default_gateway_is_the_openfaas_service():
    assert OpenFaasInvoker.from_options({}).gateway_url == "http://gateway.openfaas:8080"


def test_a_non_http_gateway_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="FAASFLOW_GATEWAY_URL=http://"):
        OpenFaasInvoker.from_options({"gateway_url": "ftp://gw"})


@pytest.mark.parametrize("raw", ["soon", "0", "-1"])
def test_a_bad_timeout_is_a_configuration_error(raw):
    with pytest.raises(ConfigurationError, match="FAASFLOW_OPENFAAS_TIMEOUT"):
        OpenFaasInvoker.from_options({"timeout": raw})


def test_the_timeout_option_bounds_every_call(gateway):
    invoker = OpenFaasInvoker.from_options({"gateway_url": gateway.url, "timeout": "0.2"})
    try:
        with pytest.raises(FunctionError) as info:
            invoker.call("slow", b"")
        assert info.value.timeout is True
    finally:
        invoker.close()


def test_openfaas_is_not_in_process(openfaas):
    assert openfaas.in_process is False


# -- local functions ---------------------------------------------------------------------------


def test_a_registered_function_gets_the_body(local):
    local.add_functions({"upper": lambda data: data.upper()})
    response = local.call("upper", b"abc")
    assert (response.status, response.body) == (200, b"ABC")


def test_a_str_result_is_utf8_encoded(local):
    local.add_functions({"greet": lambda data: f"héllo {data.decode()}"})
    assert local.call("greet", b"bob").body == "héllo bob".encode()


def test_a_none_result_is_an_empty_answer(local):
    local.add_functions({"sink": lambda data: None})
    assert (local.call("sink", b"x").status, local.call("sink", b"x").body) == (200, b"")


def test_a_response_result_chooses_the_status(local):
    local.add_functions({"created": lambda data: Response(201, b"made", {"X-Id": "7"})})
    response = local.call("created", b"")
    assert (response.status, response.body, response.headers["X-Id"]) == (201, b"made", "7")


def test_a_two_argument_function_gets_method_headers_and_query(local):
    seen = []

    def inspect(data, request):
        seen.append(request)
        return data

    local.add_functions({"inspect": inspect})
    local.call("inspect", b"d", method="PUT", headers={"X-A": "1"}, query={"q": ["1", "2"]})
    assert seen == [LocalRequest("inspect", "PUT", {"X-A": "1"}, {"q": ["1", "2"]})]


def test_a_variadic_function_gets_the_request_too(local):
    local.add_functions({"v": lambda *args: json.dumps([len(args), args[1].method])})
    assert local.call("v", b"", method="GET").body == b'[2, "GET"]'


def test_an_exception_in_a_function_is_a_500_answer(local):
    def fail(data):
        raise ValueError("bad input")

    local.add_functions({"fail": fail})
    response = local.call("fail", b"")
    assert (response.status, response.body) == (500, b"ValueError: bad input")


def test_a_wrong_result_type_is_a_500_answer_that_says_what_to_return(local):
    local.add_functions({"number": lambda data: 42})
    response = local.call("number", b"")
    assert response.status == 500
    assert b"returned int; return bytes, str, None or a faasflow.Response" in response.body


def test_an_unknown_function_without_gateway_says_how_to_fix_it(local):
    local.add_functions({"known": lambda data: data})
    with pytest.raises(FunctionError) as info:
        local.call("missing", b"")
    message = str(info.value)
    assert "function 'missing' is not registered with the local invoker" in message
    assert "(registered: known)" in message
    assert "functions=" in message
    assert "FAASFLOW_GATEWAY_URL" in message


def test_an_unknown_function_goes_to_the_gateway_when_one_is_set(gateway):
    invoker = LocalInvoker.from_options({"gateway_url": gateway.url})
    invoker.add_functions({"local-only": lambda data: b"local"})
    try:
        assert invoker.call("echo", b"remote").body == b"remote"
        assert invoker.call("local-only", b"").body == b"local"
    finally:
        invoker.close()


def test_a_registered_function_wins_over_the_gateway(gateway):
    invoker = LocalInvoker.from_options({"gateway_url": gateway.url})
    invoker.add_functions({"echo": lambda data: b"mine"})
    try:
        assert invoker.call("echo", b"x").body == b"mine"
    finally:
        invoker.close()


def test_a_non_callable_function_is_rejected(local):
    with pytest.raises(ConfigurationError, match="local function 'x' is str, not a callable"):
        local.add_functions({"x": "not callable"})


def test_registered_function_names_are_listed(local):
    local.add_functions({"b": bytes.upper, "a": bytes.lower})
    assert local.functions == ["a", "b"]


@pytest.mark.parametrize("raw", ["0", "many"])
def test_bad_workers_is_a_configuration_error(raw):
    with pytest.raises(ConfigurationError, match="FAASFLOW_LOCAL_WORKERS"):
        LocalInvoker.from_options({"workers": raw})


# -- local iterations --------------------------------------------------------------------------


def test_local_is_in_process(local):
    assert local.in_process is True


def test_forward_runs_deliver_on_a_worker_thread(local):
    seen = queue.Queue()
    local.bind(
        lambda flow, rid, message, headers: seen.put(
            (flow, rid, message, dict(headers), threading.current_thread().name)
        )
    )
    local.forward("flow", "r1", b"m", {"H": "v"})
    flow, rid, message, headers, thread = seen.get(timeout=5)
    assert (flow, rid, message, headers) == ("flow", "r1", b"m", {"H": "v"})
    assert thread.startswith("faasflow")
    assert thread != threading.current_thread().name


def test_a_failing_iteration_is_logged_not_raised(local, caplog):
    done = queue.Queue()

    def deliver(flow, rid, message, headers):
        if rid == "bad":
            raise RuntimeError("iteration exploded")
        done.put(rid)

    local.bind(deliver)
    with caplog.at_level(logging.ERROR, logger="faasflow.invoker"):
        local.forward("flow", "bad", b"", {})
        local.forward("flow", "good", b"", {})
        assert done.get(timeout=5) == "good"
        local.close()
    record = next(r for r in caplog.records if r.name == "faasflow.invoker")
    assert "request bad of flow flow failed" in record.getMessage()
    assert "iteration exploded" in record.exc_text


def test_iterations_may_forward_further_iterations_with_one_worker():
    invoker = LocalInvoker.from_options({"workers": "1"})
    done = threading.Event()

    def deliver(flow, rid, message, headers):
        count = int(message)
        if count == 10:
            done.set()
        else:
            invoker.forward(flow, rid, str(count + 1).encode(), headers)

    invoker.bind(deliver)
    try:
        invoker.forward("flow", "r", b"0", {})
        assert done.wait(10)
    finally:
        invoker.close()


def test_workers_bound_concurrent_iterations():
    invoker = LocalInvoker.from_options({"workers": "2"})
    lock = threading.Lock()
    running = [0]
    peak = [0]
    finished = []

    def deliver(flow, rid, message, headers):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
            finished.append(rid)

    invoker.bind(deliver)
    for index in range(6):
        invoker.forward("flow", str(index), b"", {})
    invoker.close()
    assert sorted(finished) == [str(i) for i in range(6)]
    assert peak[0] <= 2


def test_close_waits_for_queued_iterations():
    invoker = LocalInvoker.from_options({"workers": "1"})
    finished = []
    invoker.bind(lambda flow, rid, message, headers: (time.sleep(0.01), finished.append(rid)))
    for index in range(5):
        invoker.forward("flow", str(index), b"", {})
    invoker.close()
    assert len(finished) == 5


def test_forward_without_a_bound_engine_is_a_backend_error(local):
    with pytest.raises(BackendError, match=r"call bind\(deliver\) first"):
        local.forward("flow", "r", b"", {})


def test_forward_after_close_is_a_backend_error(local):
    local.bind(lambda *args: None)
    local.close()
    with pytest.raises(BackendError, match="the invoker is closed; iteration of request r"):
        local.forward("flow", "r", b"", {})


def test_forward_on_a_connection_the_gateway_drops_is_sent_again_on_a_fresh_one():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    bodies: list[bytes] = []

    def serve() -> None:
        first, _ = listener.accept()
        first.recv(65536)
        first.close()  # read the request, answer nothing: the connection was gone
        second, _ = listener.accept()
        bodies.append(second.recv(65536))
        second.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        second.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    invoker = OpenFaasInvoker.from_options(
        {"gateway_url": f"http://127.0.0.1:{listener.getsockname()[1]}"}
    )
    try:
        invoker.forward("f", "r", b"{}", {})
    finally:
        invoker.close()
        listener.close()
    thread.join(5)
    assert bodies and bodies[0].startswith(b"POST /async-function/f/flow/r/forward")


def test_forward_to_a_gateway_that_keeps_dropping_is_a_backend_error():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    invoker = OpenFaasInvoker.from_options(
        {"gateway_url": f"http://127.0.0.1:{listener.getsockname()[1]}"}
    )
    try:
        with pytest.raises(BackendError, match="forward"):
            invoker.forward("f", "r", b"{}", {})
    finally:
        invoker.close()
        listener.close()
    thread.join(5)
