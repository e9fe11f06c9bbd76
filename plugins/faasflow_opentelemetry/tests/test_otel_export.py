"""Export: batched, and a collector outage never reaches the flow."""

from __future__ import annotations

import time

from otel_driver import forward, run_node

from faasflow.testing import free_port
from faasflow.testing.otlp import OtlpReceiver


def run_request(backend, rid: str) -> None:
    handle = backend.scoped("greet", rid)
    handle.request_start({})
    run_node(handle, "0_1_a")
    forward(handle)
    handle.request_end({})
    handle.flush()


def test_unreachable_collector_is_swallowed_and_counted(make_tracer) -> None:
    backend = make_tracer(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    for index in range(5):
        run_request(backend, f"down-{index}")  # raises nothing
    backend.close()  # exports the rest: fails as well

    stats = backend.stats()
    assert stats.dropped == 5 * 3
    assert stats.exported == 0
    assert stats.failed_exports >= 1
    assert stats.errors == 0
    assert backend.dropped == stats.dropped


def test_refusing_collector_is_counted_and_export_resumes_when_it_answers(
    make_tracer, receiver: OtlpReceiver
) -> None:
    receiver.status = 503
    backend = make_tracer(OTEL_EXPORTER_OTLP_TIMEOUT="300")
    run_request(backend, "refused")
    deadline = time.monotonic() + 10
    while backend.stats().dropped < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.stats().dropped == 3
    assert receiver.refused >= 1

    receiver.status = 200
    pause_over = time.monotonic() + 10
    while not receiver.spans and time.monotonic() < pause_over:
        run_request(backend, "again")
        time.sleep(0.2)
    spans = receiver.wait_for(3)
    assert {s.attributes["faasflow.request_id"] for s in spans} == {"again"}
    assert backend.stats().exported >= 3


def test_spans_are_exported_in_batches_on_the_processor_schedule(
    make_tracer, receiver: OtlpReceiver
) -> None:
    backend = make_tracer(OTEL_BSP_SCHEDULE_DELAY="60000")  # the default flush mode
    for index in range(20):
        run_request(backend, f"batch-{index}")
    assert receiver.spans == []  # nothing left before the interval or a full batch
    backend.close()

    assert len(receiver.wait_for(60)) == 60
    assert receiver.exports == 1


def test_background_flush_exports_soon_after_the_iteration(
    make_tracer, receiver: OtlpReceiver
) -> None:
    backend = make_tracer(
        FAASFLOW_OPENTELEMETRY_FLUSH="background", OTEL_BSP_SCHEDULE_DELAY="60000"
    )
    run_request(backend, "soon")

    spans = receiver.wait_for(3)  # long before the schedule, without close()
    assert {s.attributes["faasflow.request_id"] for s in spans} == {"soon"}


def test_closed_backend_exports_again_when_used_again(
    make_tracer, receiver: OtlpReceiver
) -> None:
    backend = make_tracer()
    run_request(backend, "before")
    backend.close()
    run_request(backend, "after")
    backend.close()

    spans = receiver.wait_for(6)
    assert {s.attributes["faasflow.request_id"] for s in spans} == {"before", "after"}


def test_gzip_compressed_export_arrives(make_tracer, receiver: OtlpReceiver) -> None:
    backend = make_tracer(OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    run_request(backend, "gz")

    assert len(receiver.wait_for(3)) == 3


def test_export_headers_are_sent(make_tracer, receiver: OtlpReceiver) -> None:
    backend = make_tracer(OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20t0ken")
    run_request(backend, "auth")
    receiver.wait_for(3)

    assert receiver.last_headers["authorization"] == "Bearer t0ken"


def test_equal_configurations_share_one_provider(make_tracer) -> None:
    one, two = make_tracer(), make_tracer()
    handles = [one.scoped("greet", "a"), one.scoped("greet", "b"), two.scoped("greet", "c")]

    assert len({id(h.pipeline.provider) for h in handles}) == 1
    assert one.scoped("other", "d").pipeline is not handles[0].pipeline  # service name differs


def test_errors_inside_the_tracer_are_swallowed_and_counted(make_tracer) -> None:
    class BrokenCarrier(dict):
        def items(self):
            raise RuntimeError("unreadable headers")

    backend = make_tracer()
    handle = backend.scoped("greet", "broken")
    handle.request_continue(BrokenCarrier())
    handle.request_start(BrokenCarrier())

    assert backend.stats().errors == 2
