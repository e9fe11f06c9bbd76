"""faasflow-behaviour.md §5 scenarios, run on the engine with a drainable iteration queue.

Where faas-flow had a bug the test asserts the fixed behaviour and says so.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from engine_harness import Harness

import faasflow
from faasflow.errors import FunctionError, RequestNotActive

# --------------------------------------------------------------------------- sync flows


def test_sync_modifier_returns_result_and_leaves_no_state() -> None:
    finals: list[str] = []

    def define(flow, context):
        flow.sync_node().modify(lambda d: b"Hello " + d)
        flow.finally_(finals.append)

    h = Harness(define)
    result = h.start(b"Adam")
    assert (result.status, result.output, result.sync) == ("success", b"Hello Adam", True)
    assert re.fullmatch(r"[0-9a-v]{23}", result.request_id)
    assert h.invoker.forwards == []
    h.assert_clean(result.request_id)
    assert finals == ["success"]


def test_sync_chain_calls_functions_in_order() -> None:
    def define(flow, context):
        flow.sync_node().apply("func1").apply("func2").modify(lambda d: d + b"modifier")

    h = Harness(define)
    assert h.start(b"x").output == b"xfunc1func2modifier"
    assert [(c.function, c.data) for c in h.invoker.calls] == [
        ("func1", b"x"),
        ("func2", b"xfunc1"),
    ]


def test_function_calls_carry_request_id_and_idempotency_key() -> None:
    def define(flow, context):
        flow.sync_node().apply("echo", headers={"X-Token": "abc"}, query={"a": ["1", "2"]})

    h = Harness(define)
    rid = h.start(b"x").request_id
    (called,) = h.invoker.calls
    headers = {k.lower(): v for k, v in called.headers.items()}
    assert headers["x-token"] == "abc"
    assert headers["x-faas-flow-reqid"] == rid
    assert headers["idempotency-key"] == f"{rid}/0_1_sync"
    assert called.query == {"a": ["1", "2"]}


def test_operation_failure_handler_that_returns_swallows_the_failure() -> None:
    seen: list[BaseException] = []

    def define(flow, context):
        flow.sync_node().apply("fail500", on_failure=seen.append).modify(lambda d: d)

    h = Harness(define)
    result = h.start(b"x")
    assert (result.status, result.output) == ("success", b"boom")
    assert len(seen) == 1
    assert "500" in str(seen[0])
    assert "/function/fail500" in str(seen[0])


def test_operation_failure_rethrown_runs_flow_hooks_once_in_order() -> None:
    events: list[tuple[str, str]] = []

    def rethrow(error: BaseException) -> None:
        raise error

    def define(flow, context):
        flow.sync_node().apply("fail500", on_failure=rethrow)
        flow.on_failure(lambda e: events.append(("on_failure", str(e))))
        flow.finally_(lambda s: events.append(("finally", s)))

    h = Harness(define)
    result = h.start(b"x")
    assert result.status == "failure"
    assert "Node(0_1_sync)" in result.error and "Operation (fail500)" in result.error
    assert [e[0] for e in events] == ["on_failure", "finally"]
    assert "Node(0_1_sync)" in events[0][1]
    assert events[1] == ("finally", "failure")
    h.assert_clean(result.request_id)


# --------------------------------------------------------------------------- DAG flows


class _Callbacks(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    received: list[tuple[bytes, dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((body, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def callback_server():
    _Callbacks.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", _Callbacks.received
    server.shutdown()
    server.server_close()


def test_async_chain_posts_result_to_callback_and_cleans_up(callback_server) -> None:
    url, received = callback_server
    sink: list[bytes] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").apply("func1")
        dag.node("n2").apply("func2").modify(lambda d: d + b"modifier")
        dag.node("n3").apply("sink")
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")

    h = Harness(define, functions={"sink": lambda d: (sink.append(d), b"")[1]})
    result = h.start(b"x", callback_url=url)
    assert (result.status, result.output) == ("running", b"")
    rid = result.request_id
    assert len(h.invoker.forwards) == 1
    h.drain()
    assert len(h.invoker.forwards) == 2
    for fwd in h.invoker.forwards:
        assert fwd.headers["X-Faas-Flow-Reqid"] == rid
        assert fwd.headers["X-Faas-Flow-Callback-Url"] == url
    assert sink == [b"xfunc1func2modifier"]
    assert len(received) == 1
    assert received[0][0] == b""
    assert {k.lower(): v for k, v in received[0][1].items()}["x-faas-flow-reqid"] == rid
    h.assert_clean(rid)
    record = h.engine.record(rid)
    assert record.status == "success"
    assert set(record.nodes) == {"0_1_n1", "0_2_n2", "0_3_n3"}


def fan_in(define_n4=None, *, aggregator=True):
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: d + b"m1")
        dag.node("n2").apply("func1")
        dag.node("n3").apply("func2").modify(lambda d: d + b"m2")
        agg = (lambda d: d["n2"] + d["n3"]) if aggregator else None
        n4 = dag.node("n4", aggregator=agg)
        if define_n4:
            define_n4(n4, context)
        else:
            n4.apply("sink")
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")
        dag.edge("n2", "n4")
        dag.edge("n3", "n4")

    return define


def test_fan_in_aggregates_predecessor_outputs_once() -> None:
    sink: list[bytes] = []
    h = Harness(fan_in(), functions={"sink": lambda d: (sink.append(d), b"")[1]})
    rid = h.start(b"x").request_id
    h.drain()
    assert sink == [b"xm1func1xm1func2m2"]
    assert h.engine.record(rid).status == "success"
    h.assert_clean(rid)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fan_in_without_aggregator_gets_empty_input_and_node_input() -> None:
    seen: list[tuple[bytes, dict[str, bytes]]] = []

    def n4(node, context):
        node.modify(lambda d: (seen.append((d, context.node_input)), d)[1])

    h = Harness(fan_in(n4, aggregator=False))
    h.start(b"x")
    h.drain()
    assert seen == [(b"", {"n2": b"xm1func1", "n3": b"xm1func2m2"})]


def test_aggregator_receives_inputs_in_edge_declaration_order() -> None:
    orders: list[list[str]] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.node("n3").modify(lambda d: b"three")
        dag.node("n2").modify(lambda d: b"two")
        dag.node("n4", aggregator=lambda d: (orders.append(list(d)), b"|".join(d.values()))[1])
        dag.edge("n1", "n3")
        dag.edge("n1", "n2")
        dag.edge("n3", "n4")
        dag.edge("n2", "n4")

    for reverse in (False, True):
        h = Harness(define)
        h.start(b"x")
        if reverse:
            h.invoker.queue.reverse()
        h.drain()
    assert orders == [["n3", "n2"], ["n3", "n2"]]


def test_forwarder_transforms_one_edge_only() -> None:
    inputs: dict[str, bytes] = {}

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: b"ab")
        dag.node("n2").modify(lambda d: (inputs.__setitem__("n2", d), d)[1])
        dag.node("n3").modify(lambda d: (inputs.__setitem__("n3", d), d)[1])
        dag.edge("n1", "n2", forwarder=lambda d: d.upper())
        dag.edge("n1", "n3")

    h = Harness(define)
    h.start(b"")
    h.drain()
    assert inputs == {"n2": b"AB", "n3": b"ab"}


def test_execution_only_edge_carries_no_data_but_context_does() -> None:
    got: list[tuple[bytes, str]] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: (context.set("k", "v"), b"out")[1])
        dag.node("n2").modify(lambda d: (got.append((d, context.get("k"))), d)[1])
        dag.edge("n1", "n2", execution_only=True)

    h = Harness(define)
    rid = h.start(b"in").request_id
    h.drain()
    assert got == [(b"", "v")]
    assert h.engine.record(rid).status == "success"


def split_foreach(flow, context, *, sink):
    dag = flow.dag()
    dag.node("n1")
    sub = dag.foreach_branch(
        "F",
        lambda d: {str(i): v for i, v in enumerate(d.split(b","))},
        aggregator=lambda r: b",".join(r[k] for k in sorted(r, key=int)),
    )
    sub.node("sq").modify(lambda d: d + b"!")
    dag.node("n2").modify(lambda d: (sink.append(d), d)[1])
    dag.edge("n1", "F")
    dag.edge("F", "n2")


def test_foreach_runs_one_branch_per_key_and_aggregates() -> None:
    sink: list[bytes] = []
    h = Harness(lambda flow, ctx: split_foreach(flow, ctx, sink=sink))
    rid = h.start(b"a,b,c").request_id
    h.drain()
    assert sink == [b"a!,b!,c!"]
    record = h.engine.record(rid)
    assert set(record.nodes) == {"0_1_n1", "0_2_F", "0--2_1_sq", "1--2_1_sq", "2--2_1_sq", "0_3_n2"}
    h.assert_clean(rid)


def test_condition_runs_only_selected_branches() -> None:
    ran: list[str] = []
    sink: list[bytes] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        branches = dag.conditional_branch(
            "C",
            ["c1", "c2", "c3"],
            lambda d: ["c2"],
            aggregator=lambda r: b"".join(r.values()),
        )
        for key, sub in branches.items():
            sub.node("m").modify(lambda d, key=key: (ran.append(key), d + key.encode())[1])
        dag.node("n2").modify(lambda d: (sink.append(d), d)[1])
        dag.edge("n1", "C")
        dag.edge("C", "n2")

    h = Harness(define)
    h.start(b"in")
    h.drain()
    assert ran == ["c2"]
    assert sink == [b"inc2"]


@pytest.mark.parametrize(
    ("kind", "result", "message"),
    [
        ("condition", [], "returned no option"),
        ("condition", ["nope"], "undeclared branch 'nope'"),
        ("condition", None, "returned no option"),
        ("foreach", {}, "returned no option"),
        ("foreach", {"": b"x"}, "empty branch key"),
    ],
)
def test_bad_branch_selection_is_a_flow_failure_with_hooks(kind, result, message) -> None:
    events: list[str] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        if kind == "condition":
            subs = dag.conditional_branch("C", ["c1"], lambda d: result, aggregator=lambda r: b"")
            subs["c1"].node("a")
        else:
            dag.foreach_branch("C", lambda d: result, aggregator=lambda r: b"").node("a")
        dag.edge("n1", "C")
        flow.on_failure(lambda e: events.append(f"failure:{e}"))
        flow.finally_(lambda s: events.append(s))

    h = Harness(define)
    rid = h.start(b"x").request_id
    h.drain()
    record = h.engine.record(rid)
    assert record.status == "failure"
    assert message in record.error
    assert len(events) == 2
    assert message in events[0]
    assert events[1] == "failure"
    h.assert_clean(rid)


def test_nested_foreach_inside_condition_readme_example() -> None:
    sink: list[bytes] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: d + b"modifier1")
        branches = dag.conditional_branch(
            "C",
            ["c1", "c2"],
            lambda d: ["c1", "c2"],
            aggregator=lambda r: r["c1"] + r["c2"],
        )
        foreach = branches["c1"].foreach_branch(
            "F", lambda d: {"f1": d, "f2": d}, aggregator=lambda r: r["f1"] + r["f2"]
        )
        foreach.node("n1").modify(lambda d: d + b"modifier3")
        branches["c2"].node("n1").apply("func1").modify(lambda d: d + b"modifier2")
        dag.node("n2").modify(lambda d: (sink.append(d), d)[1])
        dag.edge("n1", "C")
        dag.edge("C", "n2")

    h = Harness(define)
    rid = h.start(b"x").request_id
    h.drain()
    assert sink == [b"xmodifier1modifier3xmodifier1modifier3xmodifier1func1modifier2"]
    nodes = set(h.engine.record(rid).nodes)
    assert {"f1--c1--2_c1_1_1_n1", "f2--c1--2_c1_1_1_n1", "c2--2_c2_1_n1"} <= nodes
    h.assert_clean(rid)


def test_static_sub_dag_output_flows_on() -> None:
    sink: list[bytes] = []

    def define(flow, context):
        sub = faasflow.Dag()
        sub.node("a").modify(lambda d: d + b"a")
        sub.node("b").modify(lambda d: d + b"b")
        sub.edge("a", "b")
        dag = flow.dag()
        dag.node("n1").modify(lambda d: d + b"1")
        dag.sub_dag("S", sub)
        dag.node("n2").modify(lambda d: (sink.append(d), d)[1])
        dag.edge("n1", "S")
        dag.edge("S", "n2")

    h = Harness(define)
    rid = h.start(b"x").request_id
    h.drain()
    assert sink == [b"x1ab"]
    assert {"2_1_a", "2_2_b"} <= set(h.engine.record(rid).nodes)


def test_failure_in_parallel_branch_runs_hooks_once_and_refuses_the_other_branch(
    callback_server,
) -> None:
    url, received = callback_server
    events: list[str] = []
    ran_n4: list[bytes] = []

    def bad(_: bytes) -> bytes:
        raise ValueError("bad")

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.node("n2").modify(lambda d: d)
        dag.node("n3").modify(bad)
        dag.node("n4", aggregator=lambda d: b"").modify(lambda d: (ran_n4.append(d), d)[1])
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")
        dag.edge("n2", "n4")
        dag.edge("n3", "n4")
        flow.on_failure(lambda e: events.append(f"F:{e}"))
        flow.finally_(lambda s: events.append(f"G:{s}"))

    h = Harness(define)
    rid = h.start(b"x", callback_url=url).request_id
    to_n2, to_n3 = h.invoker.queue
    h.invoker.queue.clear()
    h.deliver(to_n3)
    assert h.engine.state(rid) == "FINISHED"
    with pytest.raises(RequestNotActive, match="flow is not running"):
        h.deliver(to_n2)
    assert len(events) == 2
    assert "Node(0_3_n3)" in events[0] and "bad" in events[0]
    assert events[1] == "G:failure"
    assert ran_n4 == []
    # the callback hears of the failure once (faas-flow sent nothing), told by its status
    assert [(body, headers["X-Faas-Flow-Status"]) for body, headers in received] == [
        (b"Node(0_3_n3), Operation (modifier) failed: ValueError: bad", "failure")]
    h.assert_clean(rid)


def test_finally_runs_after_last_node_and_can_use_context() -> None:
    order: list[str] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").modify(lambda d: (context.set("sha", "abc"), d)[1])
        dag.node("n2").modify(lambda d: (order.append(f"n2:{context.get('sha')}"), d)[1])
        dag.edge("n1", "n2")
        flow.finally_(lambda s: (order.append(f"finally:{s}"), context.delete("sha")))

    h = Harness(define)
    rid = h.start(b"").request_id
    h.drain()
    assert order == ["n2:abc", "finally:success"]
    h.assert_clean(rid)


def test_custom_request_id_is_used_everywhere() -> None:
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.node("n2")
        dag.edge("n1", "n2")

    h = Harness(define)
    result = h.start(b"", request_id="my-req-1")
    assert result.request_id == "my-req-1"
    assert h.invoker.forwards[0].request_id == "my-req-1"
    assert h.engine.state("my-req-1") == "RUNNING"
    assert "request-state" in h.state_keys("my-req-1")
    h.drain()
    assert h.engine.state("my-req-1") == "FINISHED"


def test_invalid_custom_request_id_is_refused() -> None:
    h = Harness(lambda flow, ctx: flow.sync_node())
    with pytest.raises(faasflow.ConfigurationError, match="invalid request id"):
        h.start(b"", request_id="../etc")


def test_query_reaches_every_iteration_and_definition() -> None:
    sink: list[bytes] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").apply("echo", query={"auth": context.query.get("token", "")})
        dag.node("n2")
        dag.node("n3").modify(lambda d: (sink.append(context.query.get("token").encode()), d)[1])
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")

    h = Harness(define)
    h.start(b"", query="token=xyz")
    h.drain()
    assert sink == [b"xyz"]
    assert h.invoker.calls[0].query == {"auth": ["xyz"]}
    assert all(f.message.query == "token=xyz" for f in h.invoker.forwards)


def test_multiple_end_nodes_finish_once_with_empty_output(callback_server) -> None:
    url, received = callback_server

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.node("n2").modify(lambda d: b"two")
        dag.node("n3").modify(lambda d: b"three")
        dag.edge("n1", "n2")
        dag.edge("n1", "n3")

    h = Harness(define)
    rid = h.start(b"", callback_url=url).request_id
    h.drain()
    assert len(received) == 1
    assert received[0][0] == b""
    assert "0_4_end_0" in h.engine.record(rid).nodes


def test_state_query_follows_the_request_lifecycle() -> None:
    def define(flow, context):
        dag = flow.dag()
        for n in ("n1", "n2", "n3"):
            dag.node(n)
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")

    h = Harness(define)
    assert h.engine.state("R") == "FINISHED"
    h.start(b"", request_id="R")
    assert h.engine.state("R") == "RUNNING"
    h.drain()
    assert h.engine.state("R") == "FINISHED"


def test_context_values_round_trip_across_iterations() -> None:
    got: dict[str, object] = {}
    stored: list[bytes] = []

    def define(flow, context):
        dag = flow.dag()

        def put(d: bytes) -> bytes:
            context.set("n", 5)
            context.set("b", True)
            context.set("s", "v")
            context.set("bytes", b"\x00\x01")
            return d

        def read(d: bytes) -> bytes:
            for k in ("n", "b", "s", "bytes"):
                got[k] = context.get(k)
            got["missing"] = context.get("missing", "default")
            stored.append(context_store_raw("s"))
            return d

        dag.node("n1").modify(put)
        dag.node("n2").modify(read)
        dag.edge("n1", "n2")

    h = Harness(define)

    def context_store_raw(key: str) -> bytes:
        return h.data.scoped("testflow", rid).get(f"context--{key}")

    rid = h.start(b"").request_id
    h.drain()
    assert got == {"n": 5, "b": True, "s": "v", "bytes": b"\x00\x01", "missing": "default"}
    assert json.loads(stored[0]) == {"key": "s", "value": "v"}


def test_concurrent_requests_are_isolated() -> None:
    sink: list[bytes] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").apply("func1")
        dag.node("n2").modify(lambda d: (sink.append(d), d)[1])
        dag.edge("n1", "n2")

    h = Harness(define)
    a = h.start(b"A").request_id
    b = h.start(b"B").request_id
    h.invoker.queue.reverse()
    h.drain()
    assert sorted(sink) == [b"Afunc1", b"Bfunc1"]
    assert a != b


def test_forward_failure_fails_the_request_naming_the_next_node() -> None:
    events: list[str] = []

    def define(flow, context):
        dag = flow.dag()
        dag.node("n1")
        dag.node("n2")
        dag.edge("n1", "n2")
        flow.on_failure(lambda e: events.append("F"))
        flow.finally_(lambda s: events.append(s))

    h = Harness(define)
    h.invoker.fail_forward = lambda item: True
    result = h.start(b"")
    assert result.status == "failure"
    assert "Node(0_2_n2)" in result.error
    assert events == ["F", "failure"]
    h.assert_clean(result.request_id)


def test_function_error_after_retries_names_status_and_url() -> None:
    def define(flow, context):
        dag = flow.dag()
        dag.node("n1").apply("fail500")
        dag.node("n2")
        dag.edge("n1", "n2")

    h = Harness(define)
    result = h.start(b"")
    assert result.status == "failure"
    assert "invalid return status 500" in result.error
    assert isinstance(FunctionError("x"), faasflow.FaasflowError)
