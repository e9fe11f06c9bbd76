"""What tracing costs a flow: `python bench/tracing.py [--nodes 300] [--rounds 5]`.

Runs the same asynchronous chain (every node calls a no-op local function, so each node is one
iteration with a node span, an operation span and two context injections) on in-memory
backends with the ``none`` tracer and with the ``opentelemetry`` tracer exporting over
OTLP/HTTP to a real receiver in a child process (so decoding spans does not share this
process's interpreter). Modes take turns in every round, and the best round of each is kept.

Prints the cost per node of each mode, the overhead against ``none`` per node and as a ratio,
and what reached the receiver. Modes:

- ``none``: tracing off (the baseline);
- ``otel``: the defaults (every iteration end wakes a background export);
- ``otel-interval``: ``FAASFLOW_OPENTELEMETRY_FLUSH=interval`` (export every 1 s or per 512);
- ``otel-down``: the default mode with the collector unreachable (spans dropped and counted).

The export counters are totals over every round of a mode (its runs share one provider).

It also times the tracer alone: the events of one node and two injections, without the engine
(``--events``, default 20,000 nodes), and, as the floor on this machine, the same two spans and
two injections made directly with the OpenTelemetry SDK.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine
from faasflow.plugins import Registry
from faasflow.settings import Settings


def receive(ready: Any, counts: Any, stop: Any) -> None:
    from faasflow.testing.otlp import OtlpReceiver

    with OtlpReceiver() as receiver:
        ready.put(receiver.endpoint)
        while not stop.wait(0.1):
            counts.value = len(receiver.spans)
        counts.value = len(receiver.spans)


def chain(nodes: int) -> Callable[[Any, Any], None]:
    def define(flow: Any, context: Any) -> None:
        dag = flow.dag()
        for i in range(nodes):
            dag.node(f"n{i}").apply("noop")
            if i:
                dag.edge(f"n{i - 1}", f"n{i}")

    return define


def free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def settings_for(mode: str, endpoint: str) -> Settings:
    environ = {"FAASFLOW_LOCAL_WORKERS": "4"}
    if mode != "none":
        environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    if mode == "otel-interval":
        environ["FAASFLOW_OPENTELEMETRY_FLUSH"] = "interval"
    if mode == "otel-down":
        environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = free_endpoint()
    return Settings(environ=environ)


def run_chain(mode: str, endpoint: str, nodes: int) -> tuple[float, float, Any]:
    settings = settings_for(mode, endpoint)
    registry = Registry.from_settings(settings)
    invoker = registry.create(Kind.INVOKER, settings, "local")
    invoker.add_functions({"noop": lambda data: data})
    tracer = registry.create(Kind.TRACER, settings, "none" if mode == "none" else "opentelemetry")
    backends = Backends(
        registry.create(Kind.STATE_STORE, settings, "memory"),
        registry.create(Kind.DATA_STORE, settings, "memory"),
        tracer,
        invoker,
    )
    engine = Engine(Flow(chain(nodes), name="bench"), settings, backends)
    t0, c0 = time.perf_counter(), time.process_time()
    started = engine.start(b"x")
    record = engine.wait(started.request_id, timeout=600)
    elapsed = time.perf_counter() - t0
    if record is None or record.status != "success":
        raise SystemExit(f"{mode}: the benchmark request did not succeed: {record}")
    engine.close()  # the tracer exports what is queued
    cpu = time.process_time() - c0  # every thread of this process, export included
    return elapsed, cpu, tracer.stats() if mode != "none" else None


def time_events(endpoint: str, nodes: int) -> float:
    """Seconds per node for the tracer's events alone (no engine)."""
    settings = settings_for("otel", endpoint)
    registry = Registry.from_settings(settings)
    backend = registry.create(Kind.TRACER, settings, "opentelemetry")
    attrs = {"faasflow.request_id": "r", "faasflow.node": "n", "faasflow.node.unique_id": "0_1_n",
             "faasflow.branch": "", "faasflow.attempt": 1}
    result = {"http.request.method": "POST", "url.full": "http://127.0.0.1:8080/function/f",
              "http.response.status_code": 200, "faasflow.retries": 0}
    handle = backend.scoped("events", "r")
    handle.request_start({})
    carrier: dict[str, str] = {}
    t0 = time.perf_counter()
    for i in range(nodes):
        node = f"0_{i}_n"
        handle.node_start(node, attrs)
        handle.operation_start("f", node, {})
        handle.inject({})
        handle.operation_end("f", node, result)
        handle.node_end(node, attrs)
        handle.inject(carrier)
        handle.flush()  # as the engine does at the end of each iteration
    elapsed = time.perf_counter() - t0
    handle.request_end({})
    backend.close()
    return elapsed / nodes


def sdk_floor(nodes: int) -> float:
    """CPU seconds per node for the same two spans and two injections made directly with the
    OpenTelemetry SDK and a do-nothing exporter: what any OTel tracer pays here."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=nodes * 2 + 1))
    tracer = provider.get_tracer("floor")
    propagator = TraceContextTextMapPropagator()
    attrs = {"faasflow.request_id": "r", "faasflow.node": "n", "faasflow.attempt": 1}
    root = tracer.start_span("root")
    c0 = time.process_time()
    for _ in range(nodes):
        node = tracer.start_span("node", trace.set_span_in_context(root), attributes=attrs)
        in_node = trace.set_span_in_context(node)
        call = tracer.start_span("call", in_node, attributes={"http.request.method": "POST"})
        propagator.inject({}, context=trace.set_span_in_context(call))
        call.end()
        node.end()
        propagator.inject({}, context=in_node)
    elapsed = time.process_time() - c0
    provider.shutdown()
    return elapsed / nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300, help="nodes in the chain")
    parser.add_argument("--rounds", type=int, default=5, help="runs of every mode")
    parser.add_argument("--events", type=int, default=20_000, help="nodes in the events-only run")
    args = parser.parse_args(argv)

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Value("q", 0)
    receiver = context.Process(target=receive, args=(ready, counts, stop), daemon=True)
    receiver.start()
    endpoint = ready.get(timeout=60)

    modes = ["none", "otel", "otel-interval", "otel-down"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    last_stats: dict[str, Any] = {}
    run_chain("otel", endpoint, 20)  # warm-up: imports, first provider
    for _ in range(args.rounds):
        for mode in modes:
            elapsed, cpu, stats = run_chain(mode, endpoint, args.nodes)
            times[mode].append(elapsed)
            cpus[mode].append(cpu)
            last_stats[mode] = stats
    per_event = time_events(endpoint, args.events)
    floor = min(sdk_floor(args.events // 4) for _ in range(3))
    time.sleep(1.5)  # let the last interval export land
    stop.set()
    receiver.join(10)

    base = min(times["none"]) / args.nodes
    base_cpu = min(cpus["none"]) / args.nodes
    print(f"chain of {args.nodes} nodes, each an iteration calling one no-op function; "
          f"best of {args.rounds} rounds (wall clock; cpu = this process, all threads)")
    print(f"{'mode':<15}{'us/node':>9}{'median':>9}{'+us/node':>10}{'ratio':>7}"
          f"{'cpu us':>9}{'cpu ratio':>10}   export")
    for mode in modes:
        best = min(times[mode]) / args.nodes
        median = statistics.median(times[mode]) / args.nodes
        cpu = min(cpus[mode]) / args.nodes
        stats = last_stats[mode]
        export = "" if stats is None else (
            f"exported {stats.exported}, dropped {stats.dropped}, failed requests "
            f"{stats.failed_exports}, swallowed errors {stats.errors}"
        )
        print(f"{mode:<15}{best * 1e6:>9.1f}{median * 1e6:>9.1f}"
              f"{(best - base) * 1e6:>10.1f}{best / base:>7.2f}"
              f"{cpu * 1e6:>9.1f}{cpu / base_cpu:>10.2f}   {export}")
    print(f"spans received by the collector: {counts.value}")
    print(f"tracer events alone: {per_event * 1e6:.1f} us per node "
          f"(node + operation span, 2 injections, flush; {args.events} nodes)")
    print(f"floor, the same spans straight through the SDK (no export): "
          f"{floor * 1e6:.1f} us cpu per node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
