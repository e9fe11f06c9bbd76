"""Ways a ``faasflow up`` worker process reaches its own gateway without a socket.

A worker serves flows and, often, the functions they call; its flows use the ``openfaas``
invoker pointed at the local gateway. The worker installs here, for that gateway's URL, a
:class:`CallShortcut` (a function this process serves is called in the process, with the same
HTTP semantics) and a :class:`ForwardShortcut` (the next iteration goes into the gateway's
durable queue directly and may run on this worker). The invoker asks for them by its gateway
URL; anything a shortcut declines goes over HTTP as before. Nothing is installed outside a
``faasflow up`` worker, so on OpenFaaS every call and hand-off is an HTTP request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from faasflow.interfaces import Response

__all__ = ["CallShortcut", "ForwardShortcut", "call_shortcut", "forward_shortcut", "install",
           "uninstall"]


class CallShortcut(Protocol):
    """Calls a function served by this process, or declines (``None``)."""

    def call(self, function: str, data: bytes, *, method: str, headers: Mapping[str, str],
             query: Mapping[str, list[str]] | None, timeout: float | None) -> Response | None:
        ...


class ForwardShortcut(Protocol):
    """Queues an iteration durably without HTTP and returns True, or declines (False)."""

    def forward(self, flow_name: str, request_id: str, message: bytes,
                headers: Mapping[str, str]) -> bool:
        ...


_lock = threading.Lock()
_calls: dict[str, CallShortcut] = {}
_forwards: dict[str, ForwardShortcut] = {}


def _key(gateway_url: str) -> str:
    return gateway_url.strip().rstrip("/")


def install(gateway_url: str, *, call: CallShortcut | None = None,
            forward: ForwardShortcut | None = None) -> None:
    """Install shortcuts for the gateway at ``gateway_url`` (replacing earlier ones)."""
    with _lock:
        if call is not None:
            _calls[_key(gateway_url)] = call
        if forward is not None:
            _forwards[_key(gateway_url)] = forward


def uninstall(gateway_url: str) -> None:
    """Remove every shortcut of ``gateway_url``."""
    with _lock:
        _calls.pop(_key(gateway_url), None)
        _forwards.pop(_key(gateway_url), None)


def call_shortcut(gateway_url: str) -> CallShortcut | None:
    """The call shortcut installed for ``gateway_url``, if any."""
    return _calls.get(_key(gateway_url)) if _calls else None


def forward_shortcut(gateway_url: str) -> ForwardShortcut | None:
    """The forward shortcut installed for ``gateway_url``, if any."""
    return _forwards.get(_key(gateway_url)) if _forwards else None
