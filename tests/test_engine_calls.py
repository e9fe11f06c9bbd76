"""What an iteration costs in store calls, and the shortcuts that keep it low staying safe:
the claim that checks the request state this process last saw, and the hand-over a node leaves
to the iteration it handed on to in this process (docs/engine.md, "One iteration")."""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
from typing import Any

import pytest
from engine_harness import Harness, QueueInvoker

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.engine import Backends, Engine
from faasflow.engine.ids import unique
from faasflow.engine.message import _mac
from faasflow.interfaces import StateStore
from faasflow.plugins import Registry
from faasflow.settings import Settings


class Counted(StateStore):
    """A StateStore that counts every call its handles make (one counter for all)."""

    atomic_transactions = True

    def __init__(self, inner: StateStore, counts: collections.Counter[str]) -> None:
        self.inner = inner
        self.counts = counts
        self.configure(inner.flow_name, inner.request_id)

    def scoped(self, flow_name: str, request_id: str) -> Counted:
        return Counted(self.inner.scoped(flow_name, request_id), self.counts)

    def _count(self, name: str) -> None:
        if not self.request_id.startswith("~"):  # the records' calls are per request, not node
            self.counts[name] += 1

    def set(self, key: str, value: str) -> None:
        self._count("set")
        self.inner.set(key, value)

    def get(self, key: str) -> str:
        self._count("get")
        return self.inner.get(key)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        self._count("update")
        self.inner.update(key, old_value, new_value)

    def create(self, key: str, value: str) -> bool:
        self._count("create")
        return self.inner.create(key, value)

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)

    def scan(self, prefix: str = "") -> dict[str, str]:
        self._count("scan")
        return self.inner.scan(prefix)

    def cleanup(self) -> None:
        self._count("cleanup")
        self.inner.cleanup()

    def transaction(self, compare: Any, put: Any = {}, delete: Any = ()) -> bool:  # noqa: B006
        self._count("transaction")
        return self.inner.transaction(compare, put, delete)


def chain(n: int) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for i in range(n):
            dag.node(f"n{i}").modify(lambda d: d + b".")
            if i:
                dag.edge(f"n{i - 1}", f"n{i}")

    return define


def _local_engine(define: Any, states: StateStore) -> Engine:
    settings = Settings(environ={"FAASFLOW_LOCAL_WORKERS": "2"})
    registry = Registry.from_settings(settings)
    return Engine(Flow(define, name="calls"), settings, Backends(
        states, MemoryDataStore(), registry.create(Kind.TRACER, settings, "none"),
        registry.create(Kind.INVOKER, settings, "local"),
    ))


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_chain_step_makes_one_state_store_call(backend: str, tmp_path: Any) -> None:
    # its claim, which also moves its predecessor from its claim to handed (the done marker
    # of a step handed on in this process goes with that move: ``handing.chains``)
    def calls_for(n: int) -> int:
        counts: collections.Counter[str] = collections.Counter()
        inner: StateStore = (
            MemoryStateStore() if backend == "memory"
            else SqliteStateStore.from_options({"path": str(tmp_path / f"state-{n}.db")})
        )
        engine = _local_engine(chain(n), Counted(inner, counts))
        try:
            started = engine.start(b"")
            record = engine.wait(started.request_id, timeout=30)
        finally:
            engine.close()
            inner.close()
        assert record is not None and record.output == b"." * n
        return sum(counts.values())

    # the calls a request makes besides its nodes cancel out: what 20 more nodes cost
    more = calls_for(30) - calls_for(10)
    print(f"{backend}: {more / 20:g} state store calls a chain step")
    assert more == 1 * 20


def test_a_step_writes_claimed_done_and_handed_markers() -> None:
    h = Harness(chain(3))
    rid = h.start(b"").request_id
    h.drain()
    record = h.engine.record(rid)
    assert record is not None and record.status == "success" and record.output == b"..."
    assert sorted(record.nodes) == ["0_1_n0", "0_2_n1", "0_3_n2"]
    assert {s["state"] for s in record.states.values()} == {"succeeded"}
    h.assert_clean(rid)


def test_a_node_is_handed_once_its_successor_claims() -> None:
    h = Harness(chain(3))
    rid = h.start(b"").request_id  # n0 runs in the start and hands n1 on
    states = h.states.scoped(h.engine.name, rid)
    assert '"p":"done"' in states.get("node--0_1_n0")
    h.deliver(h.invoker.queue.popleft())  # n1 claims: n0 is handed in the same transaction
    assert '"p":"handed"' in states.get("node--0_1_n0")
    assert '"p":"done"' in states.get("node--0_2_n1")


def test_a_copy_of_a_node_whose_successor_has_not_run_is_a_duplicate() -> None:
    h = Harness(chain(3))
    rid = h.start(b"").request_id
    to_n1 = h.invoker.queue.popleft()
    h.deliver(to_n1)  # n1 runs and hands n2 on; n2 waits in the queue
    assert h.engine.forward(to_n1.body, to_n1.headers) == "duplicate"
    h.drain()
    assert [f.message.node for f in h.invoker.forwards] == ["0_2_n1", "0_3_n2"]
    assert h.engine.record(rid).output == b"..."


def test_an_iteration_sees_a_pause_made_by_another_engine_on_the_same_stores() -> None:
    h = Harness(chain(3))
    rid = h.start(b"").request_id  # this engine remembers the request running
    other = Engine(h.flow, h.settings, Backends(
        h.states, h.data, h.engine.backends.tracer, h.invoker,
    ), name=h.engine.name)
    other.pause(rid)
    h.drain()
    assert h.outcomes == ["parked"]  # the claim's transaction found the state changed
    assert h.engine.state(rid) == "PAUSED"
    other.resume(rid)
    h.drain()
    assert h.engine.record(rid).output == b"..."
    h.assert_clean(rid)


def test_an_iteration_sees_a_stop_made_by_another_engine_on_the_same_stores() -> None:
    h = Harness(chain(3))
    rid = h.start(b"").request_id
    other = Engine(h.flow, h.settings, Backends(
        h.states, h.data, h.engine.backends.tracer, h.invoker,
    ), name=h.engine.name)
    other.stop(rid)
    h.drain(redeliver=True)
    assert h.outcomes == ["refused"]
    assert h.engine.record(rid).status == "stopped"
    h.assert_clean(rid)


@pytest.mark.parametrize("size", [0, 1, 32, 64, 65, 200])
def test_message_signatures_are_hmac_sha256_of_keys_of_any_length(size: int) -> None:
    key, body = os.urandom(size), os.urandom(3 * size + 1)
    assert _mac(key, body) == "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def test_ids_are_unique_across_a_fork() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, unique().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    mine = {unique() for _ in range(1000)}
    assert len(mine) == 1000 and child not in mine
    assert all(len(i) == 24 for i in (*mine, child))


def fan(n: int) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        dag.node("start")
        dag.node("join", aggregator=lambda inputs: b"".join(inputs.values()))
        for i in range(n):
            dag.node(f"b{i}").modify(lambda d: d + b".")
            dag.edge("start", f"b{i}")
            dag.edge(f"b{i}", "join")

    return define


def foreach(n: int) -> Any:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        sub = dag.foreach_branch("F", lambda d: {str(i): b"" for i in range(n)},
                                 aggregator=lambda found: b"".join(found.values()))
        sub.node("x").modify(lambda d: d + b".")

    return define


def _queued_calls(define: Any, expected: bytes) -> int:
    """State store calls of one request, its iterations delivered one at a time (no two
    arrivals race for a set's counter)."""
    counts: collections.Counter[str] = collections.Counter()
    settings = Settings(hmac_secret=b"k")
    queue = QueueInvoker()
    engine = Engine(Flow(define, name="calls"), settings, Backends(
        Counted(MemoryStateStore(), counts), MemoryDataStore(),
        Registry.from_settings(settings).create(Kind.TRACER, settings, "none"), queue,
    ))
    rid = engine.start(b"").request_id
    while queue.queue:
        item = queue.queue.popleft()
        engine.forward(item.body, item.headers)
    record = engine.record(rid)
    assert record is not None and record.output == expected
    return sum(counts.values())


def test_a_fan_out_branch_makes_three_state_store_calls_on_memory() -> None:
    # claim, the set's counter, and the arrival that also moves the branch's marker
    more = _queued_calls(fan(30), b"." * 30) - _queued_calls(fan(10), b"." * 10)
    assert more == 3 * 20


def test_a_foreach_branch_makes_three_state_store_calls_on_memory() -> None:
    more = _queued_calls(foreach(30), b"." * 30) - _queued_calls(foreach(10), b"." * 10)
    assert more == 3 * 20
