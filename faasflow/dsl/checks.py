"""Checks shared by the definition API: ids, callables, where a warning points."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from faasflow.errors import DefinitionError

if TYPE_CHECKING:
    from .dags import Dag

__all__ = ["SYNC_NODE", "FanInWarning", "caller_level", "check_callable", "check_id", "where"]

#: Id of the node :meth:`FlowBuilder.sync_node` returns (faas-flow's).
SYNC_NODE = "sync"

# Ids become parts of state keys ("<execId>--<uid>", "faasflow/<flow>/<request>/...") and URLs.
_BAD_ID = re.compile(r"--|[/\s]")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FanInWarning(UserWarning):
    """A node has several data-carrying predecessors but no aggregator: its input is empty."""


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{what} must be a non-empty string, got {value!r}")
    if _BAD_ID.search(value):
        raise DefinitionError(
            f"{what} {value!r} contains '--', '/' or whitespace, which would make state keys "
            "ambiguous: use letters, digits, '_', '-' or '.'"
        )
    return value


def check_callable(value: object, what: str) -> None:
    if not callable(value):
        raise DefinitionError(f"{what} must be callable, got {type(value).__name__} {value!r}")


def caller_level() -> int:
    """The ``stacklevel`` of the first caller outside faasflow, so a warning points at the
    user's ``Flow(...)`` (or ``faasflow.run(...)``) line, however deep the compiler is."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level


def where(dag: Dag) -> str:
    return dag._label or "the dag"
