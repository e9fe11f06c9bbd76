"""The execution engine: requests, iterations, coordination and control."""

from faasflow.engine.executor import Backends, Engine, StartResult
from faasflow.engine.message import Message, MessageError
from faasflow.engine.records import NodeRun, RequestRecord

__all__ = [
    "Backends",
    "Engine",
    "Message",
    "MessageError",
    "NodeRun",
    "RequestRecord",
    "StartResult",
]
