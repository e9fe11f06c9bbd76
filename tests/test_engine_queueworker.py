"""A flow behind a queue-worker stand-in, over real sockets, with a store that blips.

OpenFaaS CE's queue-worker acks every delivery whatever the flow answers; OpenFaaS Pro's
redelivers a 5xx with the same ``X-Call-Id``. The engine retries store calls inside the
iteration so that a blip never reaches CE's queue, and a 503 that does reach Pro's queue is
redelivered into the node's own claim."""

from __future__ import annotations

import collections
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.default_plugins.invokers import OpenFaasInvoker
from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.engine import Backends, Engine
from faasflow.errors import BackendError
from faasflow.interfaces import StateStore
from faasflow.plugins import Registry
from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import serve
from faasflow.settings import Settings
from faasflow.testing.queueworker import QueueWorker


class Blips(StateStore):
    """Raises BackendError on the first ``times`` creates of a key starting with ``prefix``."""

    def __init__(self, inner: StateStore, prefix: str, budget: list[int]) -> None:
        self.inner, self.prefix, self.budget = inner, prefix, budget
        self.configure(inner.flow_name, inner.request_id)

    def scoped(self, flow_name: str, request_id: str) -> Blips:
        return Blips(self.inner.scoped(flow_name, request_id), self.prefix, self.budget)

    def create(self, key: str, value: str) -> bool:
        if key.startswith(self.prefix) and self.budget[0] > 0:
            self.budget[0] -= 1
            raise BackendError("test store", "create", key, "blip")
        return self.inner.create(key, value)

    def set(self, key: str, value: str) -> None:
        self.inner.set(key, value)

    def get(self, key: str) -> str:
        return self.inner.get(key)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        self.inner.update(key, old_value, new_value)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def scan(self, prefix: str = "") -> dict[str, str]:
        return self.inner.scan(prefix)

    def cleanup(self) -> None:
        self.inner.cleanup()


def chain(calls: collections.Counter[str]) -> Callable[[Any, Any], None]:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for name in ("n1", "n2", "n3"):
            dag.node(name).modify(lambda d, name=name: (calls.update([name]), d + name.encode())[1])
        dag.edge("n1", "n2")
        dag.edge("n2", "n3")

    return define


class Stack:
    """The flow app served on a socket, behind a queue-worker stand-in."""

    def __init__(self, mode: Literal["ce", "pro"], backend_retry: float, blips: int) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.settings = Settings(hmac_secret=b"qw", flow_name="flow", backend_retry=backend_retry,
                                 sweep_interval=0)
        # the worker first: the app builds its engine (and invoker) when it is created
        self.worker = QueueWorker({}, mode=mode, backoff=0.01).start()
        budget = [blips]

        def factory(flow: Flow, settings: Settings) -> Engine:
            registry = Registry.from_settings(settings)
            return Engine(flow, settings, Backends(
                Blips(MemoryStateStore(), "node--0_2_n2", budget), MemoryDataStore(),
                registry.create(Kind.TRACER, settings, "none"),
                OpenFaasInvoker(self.worker.url),
            ))

        self.app = FlowApp(Flow(chain(self.calls), name="flow"), self.settings,
                           engine_factory=factory)
        self.server = serve(self.app).start()
        self.worker.functions["flow"] = self.server.url

    def start(self) -> str:
        request = urllib.request.Request(self.server.url + "/", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
            return str(reply.headers["X-Faas-Flow-Reqid"])

    def record(self, request_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(  # noqa: S310 - loopback
            f"{self.server.url}/flow/{request_id}", timeout=10
        ) as reply:
            doc: dict[str, Any] = json.loads(reply.read())
            return doc

    def close(self) -> None:
        self.worker.close()
        self.server.close()
        self.app.close()


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(mode: Literal["ce", "pro"], backend_retry: float, blips: int) -> Stack:
        made.append(Stack(mode, backend_retry, blips))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.mark.parametrize("mode", ["ce", "pro"])
def test_a_store_blip_is_retried_inside_the_iteration_behind_either_queue(stack, mode) -> None:
    s = stack(mode, 5.0, 2)
    rid = s.start()
    assert s.worker.wait_idle()
    assert s.record(rid)["status"] == "success"
    assert s.calls == {"n1": 1, "n2": 1, "n3": 1}
    assert all(d.status == 200 and d.attempts == 1 for d in s.worker.deliveries)


def test_without_the_retry_ce_drops_the_503_and_the_request_waits_for_its_deadline(
    stack,
) -> None:
    s = stack("ce", 0.0, 1)
    rid = s.start()
    assert s.worker.wait_idle()
    assert [d.status for d in s.worker.deliveries] == [503]  # acked and gone
    assert s.record(rid)["status"] == "running"


def test_without_the_retry_pro_redelivers_the_503_into_its_own_claim(stack) -> None:
    s = stack("pro", 0.0, 1)
    rid = s.start()
    assert s.worker.wait_idle()
    record = s.record(rid)
    assert record["status"] == "success"
    assert record["output"] == "n1n2n3"
    assert s.calls == {"n1": 1, "n2": 1, "n3": 1}
    assert sorted(d.attempts for d in s.worker.deliveries) == [1, 2]  # n2 took two



def test_a_copy_of_a_done_iteration_is_answered_200_duplicate() -> None:
    from engine_harness import Harness

    calls: collections.Counter[str] = collections.Counter()
    h = Harness(chain(calls))
    app = FlowApp(h.flow, h.settings, engine_factory=lambda flow, settings: h.engine)
    server = serve(app).start()
    try:
        rid = h.start(b"").request_id
        to_n2 = h.invoker.queue.popleft()
        h.deliver(to_n2)  # n2 runs and hands on
        request = urllib.request.Request(
            f"{server.url}/flow/{rid}/forward", data=to_n2.body, method="POST",
            headers=dict(to_n2.headers),
        )
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
            assert (reply.status, reply.read()) == (200, b"duplicate\n")
    finally:
        server.close()
    assert calls["n2"] == 1
