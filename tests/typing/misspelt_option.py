"""Must FAIL mypy: ``retires`` is not a call option (tests/test_dsl_typing.py checks that)."""

from __future__ import annotations

import faasflow
from faasflow.dsl import FlowBuilder


def define(flow: FlowBuilder, context: faasflow.Context) -> None:
    flow.sync_node().apply("resize", retires=3)
