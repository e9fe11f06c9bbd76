"""Node states derived from a record and the plan, and the pictures drawn from them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from faasflow_tower.gantt import gantt_svg
from faasflow_tower.graph import SvgCache, colour, layered_svg, to_dot
from faasflow_tower.plan import Plan
from faasflow_tower.states import derive, runs_of
from faasflow_tower.stats import percentile, summarise

from faasflow.export import export_definition

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def plan_of(name: str) -> Plan:
    spec = importlib.util.spec_from_file_location(f"tower_{name}", EXAMPLES / name / "handler.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Plan.from_export(export_definition(module.define, name))


def run(start: float, status: str = "success", **extra: Any) -> dict[str, Any]:
    return {"start": start, "end": start + 0.1, "attempts": 1, "status": status, **extra}


def states(plan: Plan, status: str, nodes: dict[str, Any]) -> dict[str, str]:
    return {k: s.state for k, s in derive(plan, {"status": status, "nodes": nodes}).items()}


def test_nodes_whose_predecessors_all_succeeded_are_running_the_others_pending() -> None:
    got = states(plan_of("report"), "running", {"0_1_clean": run(1), "0_2_words": run(2)})
    assert got == {"0_1_clean": "succeeded", "0_2_words": "succeeded",
                   "0_3_letters": "running", "0_4_summary": "pending"}


def test_a_paused_request_holds_the_nodes_that_would_run() -> None:
    got = states(plan_of("report"), "paused", {"0_1_clean": run(1)})
    assert got["0_2_words"] == got["0_3_letters"] == "held"
    assert got["0_4_summary"] == "pending"


def test_after_a_failure_the_failing_node_is_failed_and_the_rest_not_reached() -> None:
    got = states(plan_of("report"), "failure",
                 {"0_1_clean": run(1), "0_2_words": run(2, "failure", error="boom")})
    assert got["0_2_words"] == "failed"
    assert got["0_3_letters"] == got["0_4_summary"] == "not-reached"


def test_nodes_without_runs_in_a_successful_request_were_skipped() -> None:
    got = states(plan_of("report"), "success", {"0_1_clean": run(1)})
    assert got["0_2_words"] == "skipped"


def test_foreach_runs_are_counted_per_branch_and_stay_running_while_the_request_runs() -> None:
    plan = plan_of("squares")
    nodes = {"0_1_parse": run(1), "0_2_each": run(2), "0--2_1_square": run(3),
             "1--2_1_square": run(3, "failure", error="x")}
    derived = derive(plan, {"status": "success", "nodes": nodes})
    square = derived["2_1_square"]
    assert (square.state, square.ok, square.failed) == ("failed", 1, 1)
    running = derive(plan, {"status": "running", "nodes": {k: v for k, v in nodes.items()
                                                           if "1--" not in k}})
    assert running["2_1_square"].state == "running"


def test_runs_keep_their_branch_and_sort_by_start() -> None:
    runs = runs_of({"nodes": {"b--2_1_square": run(5), "0_1_parse": run(1), "bad": "x"}})
    assert [(r.node, r.branch) for r in runs] == [("0_1_parse", None), ("2_1_square", "b")]


def test_the_svg_marks_each_node_with_its_state_class() -> None:
    plan = plan_of("report")
    derived = derive(plan, {"status": "running", "nodes": {"0_1_clean": run(1)}})
    for svg in (SvgCache().svg(plan), layered_svg(plan)):
        coloured = colour(svg, plan, derived)
        assert coloured.count("st-running") == 2
        assert coloured.count("st-succeeded") == 1
        assert "<title>0_4_summary</title>" in coloured


def test_node_labels_are_quoted_in_dot_and_escaped_in_the_fallback_svg() -> None:
    plan = Plan.from_export({"name": "x", "definition-hash": "h", "nodes": {
        'a"<b>': {"unique-id": '0_1_a"<b>', "kind": "operations", "operations": []}}})
    assert '"0_1_a\\"<b>"' in to_dot(plan)
    svg = layered_svg(plan)
    assert "<b>" not in svg
    assert "a&quot;&lt;b&gt;" in svg


def test_the_picture_is_rendered_once_per_definition_hash() -> None:
    cache = SvgCache()
    plan = plan_of("squares")
    assert cache.svg(plan) is cache.svg(plan)
    assert cache.renders == 1


def test_the_timeline_draws_one_bar_per_run_and_the_hand_off_gaps() -> None:
    plan = plan_of("report")
    record = {"nodes": {"0_1_clean": run(1.0), "0_2_words": run(1.5)}}
    svg = gantt_svg(plan, runs_of(record), 1.0, 2.0, 2.0)
    assert svg.count('class="bar ') == 2
    assert svg.count('class="handoff"') == 1


@pytest.mark.parametrize(("q", "expected"), [(50, 2.0), (99, 4.0), (0, 1.0)])
def test_percentiles_are_nearest_rank(q: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 2.0, 3.0], q) == expected


def test_flow_figures_count_recent_requests_and_the_failure_rate() -> None:
    docs = [{"status": "success", "created": 100.0, "ended": 101.0},
            {"status": "failure", "created": 100.0, "ended": 103.0},
            {"status": "running", "created": 100.0, "ended": None},
            {"status": "success", "created": 1.0, "ended": 2.0}]
    figures = summarise(docs, since=50.0)
    assert dict(figures.counts) == {"success": 1, "failure": 1, "running": 1}
    assert figures.failure_rate == 0.5
    assert figures.p99 == 3.0
