"""Node states of one request, derived from its record and the flow's plan.

A record of a current faasflow carries every node's state (``states``, derived by the engine
from its node markers): it is used as it is. An older record lists only the node runs that
finished (start, end, attempts, status, error), so the state is inferred from them:

- a node with runs: ``failed`` if one of them failed, else ``succeeded`` (a foreach node
  still waiting for branches while the request runs is ``running``);
- while the request runs, a node without runs whose predecessors all succeeded is
  ``running`` (the record cannot tell running from queued: the page says "running or
  queued"), or ``held`` when the request is paused; any other is ``pending``;
- once the request ended, a node without runs was ``skipped`` (a branch not taken) when the
  request succeeded, and ``not-reached`` when it failed or was stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from faasflow_tower.plan import Plan

__all__ = ["STATES", "NodeRun", "NodeState", "derive", "runs_of"]

#: The engine's node states (``GET /flow/<id>``'s ``states``) as this page names them: a
#: node interrupted by the request's end ("stopped") was not reached to its end.
_REPORTED = {"pending": "pending", "running": "running", "held": "held",
             "succeeded": "succeeded", "failed": "failed", "skipped": "skipped",
             "stopped": "not-reached"}

#: Every state a node can be shown in, in legend order.
STATES = ("pending", "running", "held", "succeeded", "failed", "skipped", "not-reached")
ACTIVE = ("running", "paused")


@attrs.frozen
class NodeRun:
    """One finished run of a node (one per foreach branch)."""

    key: str
    """The record's key: ``<branch>--<unique id>`` inside a foreach, else the unique id."""
    node: str
    branch: str | None
    start: float
    end: float
    attempts: int
    status: str
    error: str | None
    deliveries: int = 1


@attrs.frozen
class NodeState:
    state: str
    runs: tuple[NodeRun, ...] = ()

    @property
    def ok(self) -> int:
        return sum(1 for r in self.runs if r.status == "success")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.runs if r.status != "success")


def runs_of(record: Mapping[str, Any]) -> list[NodeRun]:
    """The record's node runs, oldest first."""
    runs: list[NodeRun] = []
    for key, doc in (record.get("nodes") or {}).items():
        branch, _, node = str(key).rpartition("--")
        try:
            runs.append(NodeRun(
                key=str(key), node=node, branch=branch or None,
                start=float(doc.get("start") or 0.0), end=float(doc.get("end") or 0.0),
                attempts=int(doc.get("attempts") or 1), status=str(doc.get("status") or "success"),
                error=doc.get("error"), deliveries=int(doc.get("deliveries") or 1),
            ))
        except (TypeError, ValueError, AttributeError):
            continue  # a malformed run is left out of the picture, not a broken page
    runs.sort(key=lambda r: (r.start, r.key))
    return runs


def derive(plan: Plan, record: Mapping[str, Any]) -> dict[str, NodeState]:
    """The state of every vertex of ``plan`` in the request ``record``."""
    status = str(record.get("status") or "running")
    by_node: dict[str, list[NodeRun]] = {}
    for run in runs_of(record):
        by_node.setdefault(run.node, []).append(run)
    preds = plan.predecessors()
    succ = plan.successors()
    reported = record.get("states")
    reported = reported if isinstance(reported, Mapping) else {}
    states: dict[str, NodeState] = {}
    for key in plan.keys:
        runs = tuple(by_node.get(key, ()))
        given = reported.get(key)
        if isinstance(given, Mapping) and given.get("state") in _REPORTED:
            # the engine's own state (faasflow >= the live node states): no guessing
            state = _REPORTED[str(given["state"])]
            if state == "pending" and status not in ACTIVE:
                state = "not-reached"
            states[key] = NodeState(state, runs)
            continue
        if runs:
            if any(r.status != "success" for r in runs):
                state = "failed"
            elif status in ACTIVE and plan.in_foreach(key) and \
                    not any(by_node.get(s) for s in succ.get(key, ())):
                state = "running"  # other branches may still be on their way here
            else:
                state = "succeeded"
        elif status in ACTIVE:
            ready = all(by_node.get(p) and all(r.status == "success" for r in by_node[p])
                        for p in preds.get(key, ()))
            state = ("held" if status == "paused" else "running") if ready else "pending"
        else:
            state = "skipped" if status == "success" else "not-reached"
        states[key] = NodeState(state, runs)
    return states
