"""The tower shows the engine's own node states when the record carries them."""

from __future__ import annotations

from typing import Any

import pytest

from faasflow.export import export_definition

plan_module = pytest.importorskip("faasflow_tower.plan")
states_module = pytest.importorskip("faasflow_tower.states")


def define(flow: Any, context: Any) -> None:
    dag = flow.dag()
    dag.node("a").modify(lambda d: d)
    dag.node("b").modify(lambda d: d)
    dag.node("c").modify(lambda d: d)
    dag.edge("a", "b")
    dag.edge("b", "c")


def test_the_records_states_win_over_the_derived_ones() -> None:
    plan = plan_module.Plan.from_export(export_definition(define, "t"))
    record = {"status": "running", "nodes": {},
              "states": {"0_1_a": {"state": "held"}, "0_2_b": {"state": "skipped"},
                         "0_3_c": {"state": "pending"}}}
    got = {k: s.state for k, s in states_module.derive(plan, record).items()}
    assert got == {"0_1_a": "held", "0_2_b": "skipped", "0_3_c": "pending"}


def test_a_pending_node_of_an_ended_request_shows_as_not_reached() -> None:
    plan = plan_module.Plan.from_export(export_definition(define, "t"))
    record = {"status": "failure", "nodes": {},
              "states": {"0_1_a": {"state": "failed"}, "0_2_b": {"state": "pending"},
                         "0_3_c": {"state": "stopped"}}}
    got = {k: s.state for k, s in states_module.derive(plan, record).items()}
    assert got == {"0_1_a": "failed", "0_2_b": "not-reached", "0_3_c": "not-reached"}


def test_the_request_page_shows_the_captured_payloads() -> None:
    detail = pytest.importorskip("faasflow_tower.detail")
    record = {"payloads": {"capture": "all",
                           "request": {"data": "in", "size": 2, "truncated": False},
                           "nodes": {"0_1_a": {"input": {"data": "in<b>", "size": 5},
                                               "output": {"data": "x" * 10, "size": 99,
                                                          "truncated": True}}}}}
    plan = plan_module.Plan.from_export(export_definition(define, "t"))
    html = detail._payloads(plan, record)
    assert 'id="payloads"' in html
    assert "in&lt;b&gt;" in html  # escaped
    assert "99 (cut)" in html


def test_the_request_page_shows_no_payloads_section_without_captures() -> None:
    detail = pytest.importorskip("faasflow_tower.detail")
    plan = plan_module.Plan.from_export(export_definition(define, "t"))
    assert detail._payloads(plan, {"payloads": {"capture": "none", "request": None,
                                                "nodes": {}}}) == ""
    assert detail._payloads(plan, {}) == ""
