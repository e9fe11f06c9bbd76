"""Flow shapes and the driver of the systematic fault-injection suite (test_faults_systematic).

Every function of a shape is an invoker function (``apply``), so the invoker counts its calls
per request and per node; hooks count themselves. ``run_case`` runs one request of one shape
on one pair of stores with one fault planned, as a gateway queue would: a failed delivery
(5xx) is delivered again with the same call id, a start too, and a control call (pause,
resume, stop) is repeated by its client until it answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

import faasflow
from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine, RequestRecord
from faasflow.interfaces import DataStore, StateStore
from faasflow.plugins import Registry
from faasflow.settings import Settings
from faasflow.testing.faults import (
    CountingFunctions,
    FailingStore,
    FaultMode,
    Faults,
    RedeliveringQueue,
    status_of,
)

#: Store faults reach the queue: the iteration does not retry them itself, so every failure
#: point is converged by redelivery alone (the strictest setting).
NO_RETRY = Settings(hmac_secret=b"systematic-faults", backend_retry=0.0)
#: The defaults: the iteration retries a failing store call for a few seconds before it gives
#: up, which is what must save a request on OpenFaaS CE (no redelivery).
DEFAULTS = Settings(hmac_secret=b"systematic-faults")


def _suffix(tag: str) -> Callable[[bytes], bytes]:
    return lambda data: data + tag.encode()


@attrs.frozen
class Shape:
    """One flow shape: how to define it, its input, and what a correct run ends with."""

    name: str
    define: Callable[[Any, Any], None]
    functions: Mapping[str, Callable[[bytes], bytes]]
    data: bytes
    status: str
    output: bytes | None
    script: str = "plain"  # plain, pause-resume or stop-during-fan-out
    never_called: frozenset[str] = frozenset()
    """Functions a correct run must not call at all (the successors of a stop)."""


def chain(flow: Any, context: Any) -> None:
    dag = flow.dag()
    for node in ("a", "b", "c"):
        dag.node(node).apply(f"fn-{node}")
    dag.edge("a", "b")
    dag.edge("b", "c")


def fan_in(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("s").apply("fn-s")
    dag.node("l").apply("fn-l")
    dag.node("r").apply("fn-r")
    dag.node("j", aggregator=lambda inputs: inputs["l"] + b"|" + inputs["r"]).apply("fn-j")
    for a, b in (("s", "l"), ("s", "r"), ("l", "j"), ("r", "j")):
        dag.edge(a, b)


def conditional(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("s").apply("fn-s")
    branches = dag.conditional_branch(
        "C",
        ["c1", "c2", "c3"],
        lambda data: ["c1", "c3"],
        aggregator=lambda results: b"|".join(results[k] for k in sorted(results)),
    )
    for key, sub in branches.items():
        sub.node("m").apply(f"fn-{key}")
    dag.node("e").apply("fn-e")
    dag.edge("s", "C")
    dag.edge("C", "e")


def nested_foreach(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("s").apply("fn-s")
    outer = dag.foreach_branch(
        "F",
        lambda data: {"o1": data, "o2": data},
        aggregator=lambda results: b"|".join(results[k] for k in sorted(results)),
    )
    inner = outer.foreach_branch(
        "G",
        lambda data: {"i1": data, "i2": data},
        aggregator=lambda results: b"+".join(results[k] for k in sorted(results)),
    )
    inner.node("leaf").apply("fn-leaf")
    dag.node("e").apply("fn-e")
    dag.edge("s", "F")
    dag.edge("F", "e")


def sub_dag(flow: Any, context: Any) -> None:
    sub = faasflow.Dag()
    sub.node("a").apply("fn-a")
    sub.node("b").apply("fn-b")
    sub.edge("a", "b")
    dag = flow.dag()
    dag.node("s").apply("fn-s")
    dag.sub_dag("S", sub)
    dag.node("e").apply("fn-e")
    dag.edge("s", "S")
    dag.edge("S", "e")


def wide_fan_out(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("s").apply("fn-s")
    for node in ("p", "q", "r"):
        dag.node(node).apply(f"fn-{node}")
        dag.edge("s", node)
    dag.node("j", aggregator=lambda inputs: b"".join(inputs.values())).apply("fn-j")
    for node in ("p", "q", "r"):
        dag.edge(node, "j")


def _functions(*names: str) -> dict[str, Callable[[bytes], bytes]]:
    return {f"fn-{name}": _suffix(name) for name in names}


SHAPES: dict[str, Shape] = {
    shape.name: shape
    for shape in (
        Shape("chain", chain, _functions("a", "b", "c"), b"x", "success", b"xabc"),
        Shape(
            "fan-in", fan_in, _functions("s", "l", "r", "j"), b"x", "success", b"xsl|xsrj"
        ),
        Shape(
            "conditional",
            conditional,
            _functions("s", "c1", "c2", "c3", "e"),
            b"x",
            "success",
            b"xsc1|xsc3e",
        ),
        Shape(
            "nested-foreach",
            nested_foreach,
            _functions("s", "leaf", "e"),
            b"x",
            "success",
            b"xsleaf+xsleaf|xsleaf+xsleafe",
        ),
        Shape("sub-dag", sub_dag, _functions("s", "a", "b", "e"), b"x", "success", b"xsabe"),
        Shape(
            "pause-resume",
            chain,
            _functions("a", "b", "c"),
            b"x",
            "success",
            b"xabc",
            script="pause-resume",
        ),
        Shape(
            "stop-during-fan-out",
            wide_fan_out,
            _functions("s", "p", "q", "r", "j"),
            b"x",
            "stopped",
            None,
            script="stop-during-fan-out",
            never_called=frozenset({"fn-j"}),
        ),
    )
}


@attrs.define
class Case:
    """One run of one shape, with everything the assertions look at."""

    shape: Shape
    engine: Engine
    queue: RedeliveringQueue
    functions: CountingFunctions
    faults: Faults
    states: StateStore
    data: DataStore
    hooks: list[str]
    request_id: str = ""
    store_calls: int = 0

    @property
    def flow(self) -> str:
        return self.engine.name

    def record(self) -> RequestRecord | None:
        return self.engine.record(self.request_id)

    def namespaces(self) -> set[str]:
        """Request namespaces of this flow that any store call touched (records excluded)."""
        prefix = f"faasflow/{self.flow}/"
        found = set()
        for _, _, key in self.faults.log:
            if key.startswith(prefix):
                request = key[len(prefix):].split("/", 1)[0]
                if not request.startswith("~"):
                    found.add(request)
        return found


def make_case(
    shape: Shape,
    stores: tuple[StateStore, DataStore],
    faults: Faults,
    *,
    redeliver: bool = True,
    settings: Settings = NO_RETRY,
    duplicate: float = 0.0,
    reorder: bool = False,
    seed: int = 0,
) -> Case:
    functions = CountingFunctions(shape.functions, clock=faults)
    queue = RedeliveringQueue(
        functions, redeliver=redeliver, duplicate=duplicate, reorder=reorder, seed=seed
    )
    hooks: list[str] = []
    name = f"sys-{shape.name}-{uuid.uuid4().hex[:8]}"

    def define(flow: Any, context: Any) -> None:
        shape.define(flow, context)
        flow.on_failure(lambda error: hooks.append("on_failure"))
        flow.finally_(lambda status: hooks.append(f"finally:{status}"))

    registry = Registry.from_settings(settings)
    engine = Engine(
        Flow(define, name=name),
        settings,
        Backends(
            FailingStore.wrap(stores[0], faults),
            FailingStore.wrap(stores[1], faults),
            registry.create(Kind.TRACER, settings, "none"),
            queue,
        ),
        name=name,
    )
    return Case(shape, engine, queue, functions, faults, stores[0], stores[1], hooks)


def _control(action: Callable[[], object], attempts: int = 50) -> None:
    """Call a control action as a client does: again after a 5xx; a 4xx after a failed attempt
    means the failed attempt had been applied."""
    failed = False
    for _ in range(attempts):
        try:
            action()
            return
        except Exception as exc:
            if status_of(exc) < 500:
                if failed:
                    return
                raise
            failed = True
    raise AssertionError(f"control action still failing after {attempts} attempts")


def drive(case: Case, threads: int = 1) -> None:
    """Run the case's request to its end as its script says (the last drain from ``threads``
    threads at once)."""
    engine, queue = case.engine, case.queue
    shape = case.shape
    started = queue.start(lambda headers: engine.start(shape.data, headers=headers))
    case.request_id = started.request_id
    rid = case.request_id
    if shape.script == "pause-resume":
        _control(lambda: engine.pause(rid))
        queue.drain(engine.forward)  # b's iteration arrives while paused and is held
        _control(lambda: engine.resume(rid))
    elif shape.script == "stop-during-fan-out":
        queue.deliver_one(engine.forward)
        _control(lambda: engine.stop(rid))
    if threads > 1:
        queue.drain_concurrently(engine.forward, threads=threads)
    else:
        queue.drain(engine.forward)
    case.store_calls = case.faults.calls


def run_case(
    shape: Shape,
    stores: tuple[StateStore, DataStore],
    fail_at: int | None = None,
    mode: FaultMode = "raise",
    *,
    threads: int = 1,
    **queue: Any,
) -> Case:
    """One request of ``shape`` with call ``fail_at`` failing; ``queue`` takes
    :func:`make_case`'s keywords (redeliver, settings, duplicate, reorder, seed)."""
    faults = Faults(fail_at=fail_at, mode=mode)
    case = make_case(shape, stores, faults, **queue)
    drive(case, threads)
    return case


def data_keys(store: DataStore, namespace: str) -> list[str]:
    """Keys left in a built-in DataStore under ``namespace`` (read past the API: a DataStore
    cannot list its keys)."""
    from faasflow.default_plugins.memory import MemoryDataStore
    from faasflow.default_plugins.sqlite import SqliteDataStore

    if isinstance(store, MemoryDataStore):
        return [k for k in store._shelf.values if k.startswith(namespace)]
    if isinstance(store, SqliteDataStore):
        rows, _ = store.db.execute(
            "leftovers", "test", "SELECT key FROM faasflow_data WHERE substr(key, 1, ?) = ?",
            (len(namespace), namespace),
        )
        return [str(row[0]) for row in rows]
    raise TypeError(f"cannot list the keys of {type(store).__name__}")


def fault_points(total: int, points: int | None, phase: float = 0.0) -> list[int]:
    """Every k in 1..total when ``points`` is None, else about ``points`` of them spread evenly
    (``phase`` in [0, 1) shifts the grid, so two modes sample different calls)."""
    if points is None or points >= total:
        return list(range(1, total + 1))
    step = total / points
    return sorted({min(total, 1 + int((i + phase) * step)) for i in range(points)})
