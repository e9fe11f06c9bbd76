"""``async def`` callables in flows, under the local invoker and under ``faasflow up``."""

from __future__ import annotations

import asyncio
import functools
import gc
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import faasflow
from faasflow.runtime.process import GatewayProcess


async def shout(data: bytes) -> bytes:
    await asyncio.sleep(0)
    return data.upper()


def test_async_modifier_runs_to_completion() -> None:
    result = faasflow.run(lambda flow, context: flow.sync_node().modify(shout), b"hi")
    assert (result.status, result.output) == ("success", b"HI")


def test_async_aggregator_forwarder_and_modifiers_on_a_dag() -> None:
    async def join(inputs: dict[str, bytes]) -> bytes:
        await asyncio.sleep(0)
        return b"+".join(inputs.values())

    async def exclaim(data: bytes) -> bytes:
        return data + b"!"

    def define(flow, context):
        dag = flow.dag()
        dag.node("a").modify(shout)
        dag.edge("a", "b", forwarder=exclaim)
        dag.edge("a", "c")
        dag.node("d", aggregator=join)
        dag.edge("b", "d")
        dag.edge("c", "d")

    assert faasflow.run(define, b"x").output == b"X!+X"


def test_async_foreach_and_condition_with_a_json_codec() -> None:
    async def split(items: list[int]) -> dict[str, int]:
        return {str(i): n for i, n in enumerate(items)}

    async def choose(total: int) -> list[str]:
        return ["big"] if total > 10 else ["small"]

    async def total(results: dict[str, int]) -> int:
        return sum(results.values())

    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        with dag.foreach("F", split, aggregator=total) as branch:
            branch.node("double").modify(lambda n: n * 2)
        branches = dag.condition("C", ["big", "small"], choose, after="F",
                                 aggregator=lambda r: r)
        branches["big"].node("b").modify(lambda n: f"big {n}")
        branches["small"].node("s").modify(lambda n: f"small {n}")

    assert faasflow.run(define, [1, 2]).json() == {"small": "small 6"}
    assert faasflow.run(define, [1, 2, 3]).json() == {"big": "big 12"}


def test_async_workflow_hooks_run() -> None:
    events: list[str] = []

    def define(flow, context):
        flow.sync_node().modify(lambda data: data if data else 1 / 0)

        @flow.on_failure
        async def failed(error: BaseException) -> None:
            await asyncio.sleep(0)
            events.append(f"failed: {type(error).__name__}")

        @flow.finally_
        async def ended(state: str) -> None:
            events.append(state)

    assert faasflow.run(define, b"ok").ok
    assert faasflow.run(define, b"").status == "failure"
    assert events[0] == "success" and events[-1] == "failure"
    assert events[1].startswith("failed")


def test_async_call_handlers_run() -> None:
    seen: list[str] = []

    def fail(data: bytes) -> bytes:
        raise RuntimeError("no")

    async def before(request: faasflow.HttpRequest) -> None:
        request.headers["X-Seen"] = "yes"

    async def fallback(error: faasflow.FunctionError) -> bytes:
        return f"fallback {error.status}".encode()

    def inspect(data: bytes, request: Any) -> bytes:
        seen.append(request.headers["X-Seen"])
        return data

    def define(flow, context):
        node = flow.sync_node()
        node.apply("inspect", request_handler=before)
        node.apply("fail", on_failure=fallback)

    result = faasflow.run(define, b"x", functions={"inspect": inspect, "fail": fail})
    assert (result.output, seen) == (b"fallback 500", ["yes"])


def test_async_callable_objects_and_partials_are_recognised() -> None:
    class Suffix:
        async def __call__(self, data: bytes) -> bytes:
            return data + b"-obj"

    async def add(suffix: bytes, data: bytes) -> bytes:
        return data + suffix

    def define(flow, context):
        flow.sync_node().modify(Suffix()).modify(functools.partial(add, b"-partial"))

    assert faasflow.run(define, b"x").output == b"x-obj-partial"


def test_an_async_modifier_sees_the_request_context() -> None:
    def define(flow, context):
        async def remember(data: bytes) -> bytes:
            context.set("seen", data.decode())
            return data

        dag = flow.dag()
        dag.node("a").modify(remember)
        dag.node("b").modify(lambda data: f"{context.get('seen')} in {context.name}")
        dag.edge("a", "b")

    assert faasflow.run(faasflow.Flow(define, name="ctx"), b"v").output == b"v in ctx"


def test_one_thread_reuses_its_private_event_loop() -> None:
    loops: list[int] = []

    async def record(data: bytes) -> bytes:
        loops.append(id(asyncio.get_running_loop()))
        return data

    def define(flow, context):
        flow.sync_node().modify(record).modify(record)

    faasflow.run(define, b"")
    assert len(loops) == 2 and loops[0] == loops[1]


def test_a_threads_private_loop_is_closed_when_the_thread_ends() -> None:
    from faasflow.dsl.adapt import resolve

    loops: list[asyncio.AbstractEventLoop] = []

    async def grab() -> None:
        loops.append(asyncio.get_running_loop())

    thread = threading.Thread(target=lambda: resolve(grab()))
    thread.start()
    thread.join()
    del thread
    gc.collect()
    assert len(loops) == 1 and loops[0].is_closed()


def test_run_inside_a_running_event_loop_still_runs_async_callables() -> None:
    async def main() -> bytes:
        # a blocking faasflow.run() in a coroutine: the callable's loop cannot be this one
        return faasflow.run(lambda flow, context: flow.sync_node().modify(shout), b"in").output

    assert asyncio.run(main()) == b"IN"


def test_arun_keeps_the_event_loop_free_while_the_flow_runs() -> None:
    release = threading.Event()

    def wait(data: bytes) -> bytes:
        assert release.wait(10), "the event loop was blocked"
        return data + b"-done"

    async def main() -> tuple[bytes, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while ticks < 3:
                await asyncio.sleep(0.01)
                ticks += 1
            release.set()

        result, _ = await asyncio.gather(
            faasflow.arun(lambda flow, context: flow.sync_node().apply("wait"), b"x",
                          functions={"wait": wait}),
            ticker(),
        )
        return result.output, ticks

    assert asyncio.run(main()) == (b"x-done", 3)


def test_arun_accepts_objects_for_a_codec_flow() -> None:
    def define(flow, context):
        flow.dag(codec=faasflow.JSON).node("a").modify(lambda doc: doc["id"] + 1)

    assert asyncio.run(faasflow.arun(define, {"id": 41})).json() == 42


# -- under faasflow up ---------------------------------------------------------------------------

FLOW = """
    import asyncio

    import faasflow


    def define(flow, context):
        dag = flow.dag(codec=faasflow.JSON)
        dag.node("fetch").apply("echo")

        @dag.modifier("greet", after="fetch")
        async def greet(doc):
            await asyncio.sleep(0.01)
            return {"greeting": "Hello " + doc["body"]["name"], "sent_as": doc["type"]}
"""

SYNC_FLOW = """
    import asyncio


    def define(flow, context):
        @flow.dag().modifier("sync")
        async def shout(data):
            await asyncio.sleep(0.01)
            return data.upper()
"""

ECHO = """
    import json


    def handle(event, context):
        return {"statusCode": 200,
                "body": {"body": json.loads(event.body), "type": event.headers.get("content-type")}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root: Path = tmp_path_factory.mktemp("async-stack")
    for name, source in (("asyncflow", FLOW), ("asynchello", SYNC_FLOW), ("echo", ECHO)):
        (root / name).mkdir()
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
    (root / "stack.yml").write_text(textwrap.dedent("""\
        version: 1.0
        provider:
          name: openfaas
        functions:
          asyncflow:
            lang: faasflow
            handler: ./asyncflow
          asynchello:
            lang: faasflow
            handler: ./asynchello
          echo:
            lang: python3-http
            handler: ./echo
    """))
    with GatewayProcess(root / "stack.yml", data_dir=root / "data", processes=1) as process:
        yield process


def test_an_async_modifier_in_a_json_dag_runs_under_faasflow_up(gateway: GatewayProcess) -> None:
    reply = gateway.post(
        "/function/asyncflow", json={"name": "Ada"}, headers={"X-Faas-Flow-Wait": "30"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"greeting": "Hello Ada", "sent_as": "application/json"}


def test_an_async_modifier_in_a_sync_flow_runs_under_faasflow_up(gateway: GatewayProcess) -> None:
    reply = gateway.post("/function/asynchello", data=b"hi")
    assert (reply.status_code, reply.content) == (200, b"HI")
