"""What ``faasflow up`` checks about each flow before it says it is listening.

A worker that serves flows reports, for each: whether its definition runs and its graph is
valid, which functions it applies that the stack does not declare, the backends it uses, and
whether its stores answer. Problems are reported, not fatal: an invalid flow still serves its
export and answers 500, as on OpenFaaS, and a store that is down may come up later.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from faasflow.backends import Kind
from faasflow.errors import FaasflowError, KeyNotFound

__all__ = ["applied_functions", "check_flow", "describe"]

#: Seconds a store gets to answer the start-up probe.
PROBE_TIMEOUT = 3.0
_PROBE_KEY = "faasflow-preflight-probe"


def applied_functions(export: Any) -> set[str]:
    """Names of the functions every ``apply()`` of an exported graph calls."""
    found: set[str] = set()
    if isinstance(export, dict):
        if export.get("kind") == "function" and isinstance(export.get("function"), str):
            found.add(export["function"])
        for value in export.values():
            found |= applied_functions(value)
    elif isinstance(export, list):
        for item in export:
            found |= applied_functions(item)
    return found


def check_flow(app: Any, name: str, known: Iterable[str], stack_name: str) -> dict[str, Any]:
    """The report of one flow served by ``app`` (a :class:`~faasflow.runtime.app.FlowApp`)."""
    report: dict[str, Any] = {
        "flow": name,
        "problems": [],
        "backends": {kind.value: app.settings.backend_name(kind) for kind in Kind},
    }
    try:
        engine = app.engine(name)
        export = engine.flow.export()
    except FaasflowError as exc:
        report["problems"].append(str(exc))
        return report
    unknown = sorted(applied_functions(export) - set(known))
    if unknown:
        report["problems"].append(
            f"applies {', '.join(repr(n) for n in unknown)}, which {stack_name} does not "
            "declare: add them to it, or make sure the gateway the flow calls serves them"
        )
    backends = getattr(engine, "backends", None)
    for kind, store in ((Kind.STATE_STORE, getattr(backends, "state_store", None)),
                        (Kind.DATA_STORE, getattr(backends, "data_store", None))):
        if store is not None:
            problem = _probe(store)
            if problem:
                report["problems"].append(
                    f"{kind.value.replace('_', ' ')} {app.settings.backend_name(kind)!r} "
                    f"{problem}")
    return report


def _probe(store: Any) -> str:
    """Why ``store`` cannot be used, or ``""``."""
    outcome: list[str] = []

    def ask() -> None:
        try:
            store.get(_PROBE_KEY)
        except KeyNotFound:
            outcome.append("")
        except Exception as exc:  # any failure of a plugin's store is what we report
            outcome.append(f"cannot be reached: {exc}")
        else:
            outcome.append("")

    probe = threading.Thread(target=ask, daemon=True, name="faasflow-preflight")
    probe.start()
    probe.join(PROBE_TIMEOUT)
    if not outcome:
        return f"did not answer within {PROBE_TIMEOUT:g}s"
    return outcome[0]


def describe(report: dict[str, Any]) -> str:
    """One line for the start-up banner."""
    backends = report.get("backends") or {}
    used = ", ".join(f"{kind.replace('_', ' ')} {name}" for kind, name in backends.items())
    problems = report.get("problems") or []
    state = "PROBLEM: " + "; ".join(problems) if problems else "ok"
    return f"flow {report.get('flow')}: {state} ({used})"
