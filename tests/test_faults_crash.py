"""Kill the process at the k-th store call of a request, restart, and check the request ends once.

The engine runs in a forked child on sqlite stores with a queue kept in a file (a forwarded
iteration is appended before ``forward`` returns and acknowledged once its delivery answered,
as the local gateway's queue does), so what a SIGKILL leaves behind is what the next process
finds. A ``FailingStore`` in ``kill`` mode (SIGKILL just before call k) or ``kill-applied``
(just after it) kills the first child; a second child without faults then carries on: it
repeats an unfinished start with the same call id and redelivers every unacknowledged
iteration until the queue is empty; the parent then asserts what the systematic suite asserts:
one record with the right output, hooks once, every function of a done node called once (the
node in progress at the kill may repeat its call), no second request, nothing left in either
store.

Each shape and mode runs ``FAASFLOW_FAULTS_POINTS_CRASH`` failure points spread over the
request (default 10; ``all`` for every k, a minute or two: every child is a fork, cheap but not
free), plus always the CAS that ends the request and the call after it, where a crash decides
between "ended once" and "ended never" or "twice".
"""

from __future__ import annotations

import base64
import json
import os
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from faults_shapes import SHAPES, Shape, data_keys, fault_points

from faasflow.default_plugins.sqlite import SqliteDataStore, SqliteStateStore
from faasflow.interfaces import Response
from faasflow.testing import CountingFunctions, Faults, RedeliveringQueue
from faasflow.testing.faults import FaultMode, status_of

pytestmark = pytest.mark.slow

_raw = os.environ.get("FAASFLOW_FAULTS_POINTS_CRASH", "10")
POINTS = None if _raw == "all" else int(_raw)
PLAIN = [name for name, shape in SHAPES.items() if shape.script == "plain"]
MODES: tuple[FaultMode, ...] = ("kill", "kill-applied")
MAX_ROUNDS = 50


class FileQueue(RedeliveringQueue):
    """A RedeliveringQueue whose pending iterations live in a file, so they outlive a kill."""

    def __init__(self, path: Path, calls: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.calls_log = calls

    def _append(self, entry: Mapping[str, Any]) -> None:
        # written before forward returns; no fsync: a killed process's writes are in the page
        # cache, and these tests kill processes, not the machine
        with self.path.open("a") as file:
            file.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        token = uuid.uuid4().hex
        self._append(
            {
                "kind": "forward",
                "token": token,
                "body": base64.b64encode(message).decode(),
                "headers": {**headers, "X-Call-Id": token},
            }
        )

    def call(self, function: str, data: bytes, **kwargs: Any) -> Response:
        headers = kwargs.get("headers") or {}
        key = {k.lower(): v for k, v in headers.items()}.get("idempotency-key", "")
        with self.calls_log.open("a") as file:
            file.write(f"{key}\t{function}\n")
        return super().call(function, data, **kwargs)

    def start_token(self) -> tuple[str, str | None]:
        """The call id of the start and the request it made (None: not answered yet)."""
        token, started = "", None
        for entry in self.entries():
            if entry["kind"] == "start":
                token = entry["token"]
            elif entry["kind"] == "started":
                started = entry["request_id"]
        if not token:
            token = uuid.uuid4().hex
            self._append({"kind": "start", "token": token})
        return token, started

    def run(self, start: Callable[[Mapping[str, str]], Any], target: Any) -> str:
        """Start (again, with the same call id, when the last start never answered) and
        deliver until nothing is unacknowledged; return the request id."""
        token, request_id = self.start_token()
        if request_id is None:
            request_id = start({"X-Call-Id": token}).request_id
            self._append({"kind": "started", "request_id": request_id})
        for _ in range(MAX_ROUNDS):
            entries = self.entries()
            acked = {e["token"] for e in entries if e["kind"] == "ack"}
            pending = [e for e in entries if e["kind"] == "forward" and e["token"] not in acked]
            if not pending:
                return request_id
            for entry in pending:
                try:
                    target(base64.b64decode(entry["body"]), entry["headers"])
                except Exception as exc:
                    if status_of(exc) >= 500:
                        continue  # not acknowledged: delivered again next round
                self._append({"kind": "ack", "token": entry["token"]})
        raise AssertionError(f"the queue still had iterations after {MAX_ROUNDS} rounds")


def _child(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child; return its exit status (negative: killed by a signal)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class Run:
    """One request of one shape on sqlite files in ``workdir``, over any number of processes."""

    def __init__(self, shape: Shape, workdir: Path) -> None:
        self.shape = shape
        self.workdir = workdir
        self.flow = f"crash-{shape.name}-{uuid.uuid4().hex[:6]}"

    def process(self, fail_at: int | None, mode: FaultMode) -> None:
        """The body of one child process."""
        states = SqliteStateStore.from_options({"path": str(self.workdir / "state.db")})
        data = SqliteDataStore.from_options({"path": str(self.workdir / "data.db")})
        faults = Faults(fail_at=fail_at, mode=mode)
        queue = FileQueue(
            self.workdir / "queue.jsonl",
            self.workdir / "calls.log",
            functions=CountingFunctions(self.shape.functions),
        )
        engine = _engine(self.shape, (states, data), faults, queue, self.flow, self.workdir)
        request_id = queue.run(lambda h: engine.start(self.shape.data, headers=h), engine.forward)
        (self.workdir / "request").write_text(request_id)
        (self.workdir / "store-calls").write_text(str(faults.calls))

    def calls(self) -> list[tuple[str, str]]:
        path = self.workdir / "calls.log"
        if not path.exists():
            return []
        return [tuple(line.split("\t")) for line in path.read_text().splitlines()]  # type: ignore[misc]


def _engine(
    shape: Shape, stores: Any, faults: Faults, queue: FileQueue, flow: str, workdir: Path
) -> Any:
    from faults_shapes import NO_RETRY

    from faasflow import Flow
    from faasflow.backends import Kind
    from faasflow.engine import Backends, Engine
    from faasflow.plugins import Registry
    from faasflow.testing import FailingStore

    hooks = workdir / "hooks.log"

    def finally_(status: str) -> None:
        with hooks.open("a") as file:
            file.write(f"finally:{status}\n")

    def define(f: Any, context: Any) -> None:
        shape.define(f, context)
        f.finally_(finally_)

    registry = Registry.from_settings(NO_RETRY)
    return Engine(
        Flow(define, name=flow),
        NO_RETRY,
        Backends(
            FailingStore.wrap(stores[0], faults),
            FailingStore.wrap(stores[1], faults),
            registry.create(Kind.TRACER, NO_RETRY, "none"),
            queue,
        ),
        name=flow,
    )


#: Points where the flow's finally hook may run twice: the kill fell after the hook ran and
#: before its ``hooks-done`` marker was written, so the redelivered ender runs it again (hooks
#: are at least once across a crash of their ender; exactly once at every other point).
HOOKS_MAY_REPEAT: set[tuple[str, str, int]] = set()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "crash_k" not in metafunc.fixturenames:
        return
    # the request of a plain shape makes the same store calls as in the systematic suite
    from faults_shapes import run_case

    from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore

    params = []
    for name in PLAIN:
        clean = run_case(SHAPES[name], (MemoryStateStore(), MemoryDataStore()))
        ending = {
            number for number, method, key in clean.faults.log
            if method == "update" and key.endswith("/request-state")
        }
        marker = {
            number for number, method, key in clean.faults.log
            if method == "create" and key.endswith("/hooks-done")
        }
        assert marker, f"{name}: the ender wrote no hooks-done marker"
        for phase, mode in enumerate(MODES):
            points = set(fault_points(clean.store_calls, POINTS, phase / len(MODES)))
            points |= {
                k for end in ending | marker for k in (end, end + 1) if k <= clean.store_calls
            }
            for k in sorted(points):
                if mode == "kill" and k in marker:
                    HOOKS_MAY_REPEAT.add((name, mode, k))
                params.append(pytest.param(name, mode, k, id=f"{name}-{mode}-k{k:02d}"))
    metafunc.parametrize(("shape_name", "mode", "crash_k"), params)


def test_request_ends_once_after_a_kill_at_call_k(
    shape_name: str, mode: FaultMode, crash_k: int, tmp_path: Path
) -> None:
    shape = SHAPES[shape_name]
    run = Run(shape, tmp_path)
    first = _child(lambda: run.process(crash_k, mode))
    # its first k - 1 calls are those of a clean run, so call k always comes
    assert first == -9, f"the first process was not killed (it ended with {first})"
    before = run.calls()
    assert _child(lambda: run.process(None, mode)) == 0, "the process after the kill failed"

    request_id = (tmp_path / "request").read_text()
    states = SqliteStateStore.from_options({"path": str(tmp_path / "state.db")})
    data = SqliteDataStore.from_options({"path": str(tmp_path / "data.db")})
    try:
        engine = _engine(shape, (states, data), Faults(), FileQueue(
            tmp_path / "unused.jsonl", tmp_path / "unused.log"
        ), run.flow, tmp_path)
        record = engine.record(request_id)
        assert record is not None, "the request has no record"
        assert record.status == shape.status, f"ended {record.status}: {record.error}"
        assert record.output == shape.output
        assert [r.request_id for r in engine.requests()] == [request_id], (
            "more than one request was recorded"
        )
        log = tmp_path / "hooks.log"
        hooks = log.read_text().splitlines() if log.exists() else []
        once = [f"finally:{shape.status}"]
        if (shape_name, mode, crash_k) in HOOKS_MAY_REPEAT:
            assert hooks in (once, once * 2), "hooks ran neither once nor twice"
        else:
            assert hooks == once, "hooks ran a different number of times"
        counts: dict[tuple[str, str], int] = {}
        for key, function in run.calls():
            counts[(key, function)] = counts.get((key, function), 0) + 1
        in_progress = before[-1] if before else None
        again = {c: n for c, n in counts.items() if n > 1 and not (c == in_progress and n == 2)}
        assert again == {}, f"functions of done nodes ran again (in progress: {in_progress})"
        assert {key.split("/", 1)[0] for key, _ in counts} == {request_id}
        assert states.scoped(run.flow, request_id).scan("") == {}, "state left behind"
        assert data_keys(data, f"faasflow/{run.flow}/{request_id}/") == [], "data left behind"
    finally:
        states.close()
        data.close()
