"""Operations: the steps a node runs in order, each turning its input bytes into output bytes.

The engine calls :meth:`Operation.execute` with a :class:`Call` that carries everything an
operation may need from the running request (the invoker, ids, deadline, propagation headers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import attrs

from faasflow.interfaces import Invoker

__all__ = ["Call", "Operation"]


@attrs.define
class Call:
    """What an operation gets from the running request."""

    invoker: Invoker
    flow_name: str
    request_id: str
    node: str
    """Execution id of the running node (unique per branch instance)."""
    idempotency_key: str
    """Stable for (request, node, branch key): sent as ``Idempotency-Key`` with function calls."""
    headers: dict[str, str] = attrs.field(factory=dict)
    """Headers every outgoing call must carry (trace propagation, request id)."""
    deadline: float | None = None
    """Wall-clock time (``time.time()``) by which the request must finish, if any."""
    default_method: str = "POST"
    attributes: dict[str, Any] = attrs.field(factory=dict)
    """Filled by the operation (HTTP status, retries, url); reported on its span."""

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline)."""
        import time

        return None if self.deadline is None else max(0.0, self.deadline - time.time())


class Operation(ABC):
    """One step of a node. Subclass it and pass an instance to ``node.add_operation(op)``."""

    @property
    @abstractmethod
    def id(self) -> str:
        """Name shown in exports and spans (function name, ``modifier``, ``http-req-...``)."""

    def properties(self) -> Mapping[str, list[str]]:
        """Flags exported with the DAG (faas-flow: ``isMod``, ``isFunction``, ...)."""
        return {}

    @abstractmethod
    def execute(self, data: bytes, call: Call) -> bytes:
        """Run the step on ``data`` and return its output; raise to fail the node."""
