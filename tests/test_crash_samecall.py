"""The crash batch of ``test_crash_gateway`` with the function in the flows' own worker pool, so
every call is served in the flow's process (:mod:`faasflow.runtime.samecall`): workers and
once the gateway are killed with SIGKILL mid-batch, and still every submission becomes exactly
one request with the right output, none stuck, no node function or aggregator run twice but
where a kill interrupted it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import test_crash_gateway as crash

from faasflow.testing import calllog

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    log = tmp_path / "calls.log"
    fan = calllog.append_source() + textwrap.dedent(crash.FAN) + f"\nCOUNT_LOG = {str(log)!r}\n"
    # no environment: for count (it reads COUNT_LOG from the gateway's), so it shares the flow's
    # worker processes and the flow calls it in-process
    return calllog.write_stack(tmp_path, crash.FLOW, fan, None)


def test_kill_9_with_calls_served_in_the_flows_worker_loses_nothing(stack: Path) -> None:
    log = stack.parent / "calls.log"
    figures = crash.run_batch(stack, stack.parent / "data", crash._env(COUNT_LOG=str(log)),
                              kill_gateway=True)
    assert figures["requests"] == crash.REQUESTS
    calls = calllog.read(log)
    # j's function call and the aggregator run in one iteration: served in-process, both ran in
    # the same process (over HTTP about half would, with two workers); kills excuse a few
    aggregated = {call.key.split("/", 1)[0]: call.pid for call in calls if call.tag == "agg"}
    joins = [call for call in calls if call.tag == "j"]
    alongside = [call for call in joins if aggregated.get(call.key.split("/", 1)[0]) == call.pid]
    assert len(alongside) >= 0.95 * len(joins), f"{len(alongside)} of {len(joins)}"
