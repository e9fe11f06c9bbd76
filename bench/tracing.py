"""What tracing costs a flow: `python bench/tracing.py [--nodes 300] [--rounds 5]`.

Runs the same asynchronous chain (every node calls a no-op local function, so each node is one
iteration with a node span, an operation span and two context injections) on in-memory
backends with the ``none`` tracer and with the ``opentelemetry`` tracer exporting over
OTLP/HTTP to a real receiver in a child process (so decoding spans does not share this
process's interpreter). Modes take turns in every round, and the best round of each is kept.

Prints the cost per node of each mode, the overhead against ``none`` per node and as a ratio,
and what reached the receiver. Modes:

- ``none``: tracing off (the baseline);
- ``otel``: the defaults (the batch processor exports every 1 s or per 512 spans);
- ``otel-background``: ``FAASFLOW_OPENTELEMETRY_FLUSH=background`` (every iteration end also
  wakes an export, which waits 50 ms for more spans);
- ``otel-down``: the default mode with the collector unreachable (spans dropped and counted).

The export counters are totals over every round of a mode (its runs share one provider).

It also times the tracer alone: the events of one iteration (continue the trace, a node span,
an operation span, two injections), without the engine (``--events``, default 5,000 nodes),
and, as the floor on this machine, the same extraction, spans (same attributes, kinds and
parents) and injections (same propagators) made directly with the OpenTelemetry SDK and
exported with the SDK's own OTLP/HTTP exporter. Both count the CPU of the export: encoding
spans to OTLP is work any OpenTelemetry tracer must do, and it costs about as much as making
them. The difference is the plugin's own cost.
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
    if mode == "otel-background":
        environ["FAASFLOW_OPENTELEMETRY_FLUSH"] = "background"
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


# What the plugin puts on the spans of one node (see faasflow_opentelemetry.tracer): the floor
# carries the same, so that it costs the SDK the same attribute work.
NODE_ATTRIBUTES = {"faasflow.request_id": "r", "faasflow.node": "n",
                   "faasflow.node.unique_id": "0_1_n", "faasflow.branch": "",
                   "faasflow.attempt": 1}
CALL_RESULT = {"http.request.method": "POST", "url.full": "http://127.0.0.1:8080/function/f",
               "http.response.status_code": 200, "faasflow.retries": 0}
NODE_SPAN = {"faasflow.request_id": "r", "faasflow.exec_id": "0_1_n", **NODE_ATTRIBUTES}
CALL_SPAN = {"faasflow.request_id": "r", **CALL_RESULT, "server.address": "127.0.0.1",
             "server.port": 8080}


def one_batch(nodes: int) -> dict[str, int]:
    """Batch processor settings that keep every span of a run for one export at the end: an
    export running while the loop runs would make both fight for the GIL, and how much they
    overlap varies from run to run far more than what is measured."""
    return {"SCHEDULE_DELAY": 600_000, "MAX_QUEUE_SIZE": 4 * nodes,
            "MAX_EXPORT_BATCH_SIZE": 2 * nodes + 2}


def time_events(endpoint: str, nodes: int) -> tuple[float, float]:
    """CPU and wall seconds per node for the tracer's events alone (no engine), the CPU of
    exporting them included (every thread of this process, up to the end of ``close``)."""
    settings = settings_for("otel", endpoint)
    settings = Settings(environ={**settings.environ, **{
        f"OTEL_BSP_{name}": str(value) for name, value in one_batch(nodes).items()
    }, "OTEL_EXPORTER_OTLP_TIMEOUT": "60000"})
    registry = Registry.from_settings(settings)
    backend = registry.create(Kind.TRACER, settings, "opentelemetry")
    first = backend.scoped("events", "r")
    first.request_start({})
    carrier: dict[str, str] = {}
    first.inject(carrier)
    first.request_end({})
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(nodes):  # what the engine does in each later iteration
        handle = backend.scoped("events", "r")
        handle.request_continue(carrier)
        node = f"0_{i}_n"
        handle.node_start(node, NODE_ATTRIBUTES)
        handle.operation_start("f", node, {})
        handle.inject({})
        handle.operation_end("f", node, CALL_RESULT)
        handle.node_end(node, NODE_ATTRIBUTES)
        carrier = {}
        handle.inject(carrier)
        handle.request_end({"faasflow.status": "running"})
        handle.flush()
    elapsed = time.perf_counter() - t0
    first.flush()
    backend.close()  # exports the rest
    cpu = time.process_time() - c0
    return cpu / nodes, elapsed / nodes


def sdk_floor(nodes: int, endpoint: str | None) -> float:
    """CPU seconds per node for the same context extraction, two spans (same attributes, kinds
    and parents) and two injections (same propagators) made directly with the OpenTelemetry
    SDK: what any OTel tracer pays for an iteration here. With ``endpoint``, the spans are
    exported the way the plugin exports them (the SDK's OTLP/HTTP exporter behind a
    BatchSpanProcessor) and the export's CPU is counted (every thread, up to the end of the
    provider's shutdown); without, a do-nothing exporter."""
    from opentelemetry import trace
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    exporter: SpanExporter = (
        Discard() if endpoint is None
        else OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=60)
    )
    batch = one_batch(nodes)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=batch["MAX_QUEUE_SIZE"],
        schedule_delay_millis=batch["SCHEDULE_DELAY"],
        max_export_batch_size=batch["MAX_EXPORT_BATCH_SIZE"],
    ))
    tracer = provider.get_tracer("floor")
    # the plugin's default propagators: OTEL_PROPAGATORS=tracecontext,baggage
    propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    root = tracer.start_span("root", kind=SpanKind.SERVER)
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=trace.set_span_in_context(root))
    c0 = time.process_time()
    for _ in range(nodes):
        incoming = propagator.extract(carrier)
        node = tracer.start_span("0_1_n", incoming, SpanKind.CONSUMER, attributes=NODE_SPAN)
        in_node = trace.set_span_in_context(node)
        call = tracer.start_span("f", in_node, kind=SpanKind.CLIENT, attributes=CALL_SPAN)
        propagator.inject({}, context=trace.set_span_in_context(call))
        call.end()
        node.end()
        carrier = {}
        propagator.inject(carrier, context=in_node)
    root.end()
    provider.shutdown()
    return (time.process_time() - c0) / nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300, help="nodes in the chain")
    parser.add_argument("--rounds", type=int, default=5, help="runs of every mode")
    parser.add_argument("--events", type=int, default=5_000,
                        help="nodes in the events-only and floor runs")
    args = parser.parse_args(argv)

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Value("q", 0)
    receiver = context.Process(target=receive, args=(ready, counts, stop), daemon=True)
    receiver.start()
    endpoint = ready.get(timeout=60)

    modes = ["none", "otel", "otel-background", "otel-down"]
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
    events = [time_events(endpoint, args.events) for _ in range(3)]
    event_cpu, event_wall = min(e[0] for e in events), min(e[1] for e in events)
    bare = min(sdk_floor(args.events, None) for _ in range(3))
    floor = min(sdk_floor(args.events, endpoint) for _ in range(3))
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
    print(f"tracer events alone: {event_cpu * 1e6:.1f} us cpu per node, export included "
          f"({event_wall * 1e6:.1f} us wall for the events; the events of an iteration: "
          f"continue, node + operation span, 2 injections, end, flush; best of 3 runs of "
          f"{args.events} nodes)")
    print(f"floor, the same spans and injections straight through the SDK: "
          f"{floor * 1e6:.1f} us cpu per node with OTLP export, {bare * 1e6:.1f} without")
    print(f"the plugin's own cost: {(event_cpu - floor) * 1e6:.1f} us per node "
          f"(events / floor {event_cpu / floor:.2f}); tracing's cpu overhead on the chain / "
          f"floor: " + ", ".join(
              f"{mode} {(min(cpus[mode]) / args.nodes - base_cpu) / floor:.2f}"
              for mode in modes[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
