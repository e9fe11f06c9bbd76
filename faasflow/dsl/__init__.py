"""The definition API: what ``define(flow, context)`` uses to describe a flow.

``flow`` is a :class:`FlowBuilder`; its DAGs (:class:`Dag`) hold nodes (:class:`Node`) that chain
operations. Mistakes that can be seen where they are made (a duplicate edge, a cycle, a
non-callable argument, an option that does nothing where it is given) raise
:class:`~faasflow.errors.DefinitionError` at once; whole-DAG rules (one start node, no empty DAG)
are checked by :func:`compile_workflow`, which turns the definition into an immutable
:class:`faasflow.graph.Graph`.

Beside faas-flow's vocabulary (``node().apply().modify()``, ``edge``, ``foreach_branch``,
``conditional_branch``) a DAG has decorators and shortcuts (``@dag.modifier``,
``dag.chain``, ``with dag.foreach(...) as branch:``) that build the same graph; codecs
(:mod:`faasflow.codecs`) let user functions see values instead of bytes.
"""

from __future__ import annotations

from faasflow.operations import HttpRequest, Retry

from .checks import SYNC_NODE, FanInWarning
from .compiler import compile_workflow, start_codec
from .dags import Dag
from .nodes import Node
from .options import CALL_OPTIONS, CallOptions
from .shortcuts import Aggregator, Condition, ForEach, Forwarder
from .workflow import FlowBuilder, Workflow

__all__ = [
    "CALL_OPTIONS",
    "SYNC_NODE",
    "Aggregator",
    "CallOptions",
    "Condition",
    "Dag",
    "FanInWarning",
    "FlowBuilder",
    "ForEach",
    "Forwarder",
    "HttpRequest",
    "Node",
    "Retry",
    "Workflow",
    "compile_workflow",
    "start_codec",
]
