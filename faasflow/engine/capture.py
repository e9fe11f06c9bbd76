"""Captured payloads: a request's input and its nodes' inputs and outputs, opt-in.

``FAASFLOW_CAPTURE`` says what is kept: ``none`` (the default outside ``faasflow up``),
``errors`` (the request's input and the failed node's input) or ``all`` (every node's input
and output too). Each payload is cut to ``FAASFLOW_CAPTURE_LIMIT`` bytes after the redaction
hook ``FAASFLOW_CAPTURE_REDACT=module:function`` — ``function(kind, node, data) -> bytes``
with kind ``request``, ``input`` or ``output`` — has run. Payloads live in the DataStore
namespace ``faasflow/<flow>/~capture-<request id>/`` and are deleted with the record.
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from faasflow.errors import ConfigurationError, KeyNotFound
from faasflow.interfaces import DataStore

from .iteration import Core

__all__ = ["capture_node", "capture_request", "forget", "payloads", "redactor"]

log = logging.getLogger("faasflow.engine")

_SCOPE = "~capture-"
_REQUEST = "request"


def _store(core: Core, rid: str) -> DataStore:
    return core.data_store.scoped(core.name, _SCOPE + rid)


@functools.lru_cache(maxsize=8)
def redactor(spec: str) -> Callable[[str, str | None, bytes], object]:
    """The callable ``module:function`` names (configured once, cached)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigurationError(f"FAASFLOW_CAPTURE_REDACT={spec!r}: name a callable as "
                                 "module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"FAASFLOW_CAPTURE_REDACT={spec!r}: {exc}") from None
    if not callable(fn):
        raise ConfigurationError(f"FAASFLOW_CAPTURE_REDACT={spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _payload(core: Core, kind: str, node: str | None, data: bytes) -> dict[str, Any]:
    size = len(data)
    if core.settings.capture_redact:
        redacted = redactor(core.settings.capture_redact)(kind, node, data)
        if isinstance(redacted, str):
            redacted = redacted.encode()
        if not isinstance(redacted, (bytes, bytearray)):
            raise ConfigurationError(f"FAASFLOW_CAPTURE_REDACT={core.settings.capture_redact}"
                                     f" returned {type(redacted).__name__}; return bytes or str")
        data = bytes(redacted)
    limit = core.settings.capture_limit
    kept = data[:limit]
    doc: dict[str, Any] = {"size": size, "truncated": len(data) > limit}
    try:
        doc["data"] = kept.decode()
        doc["encoding"] = "utf-8"
    except UnicodeDecodeError:
        doc["data"] = base64.b64encode(kept).decode()
        doc["encoding"] = "base64"
    return doc


def _write(core: Core, rid: str, key: str, doc: dict[str, Any]) -> None:
    try:
        _store(core, rid).set(key, json.dumps(doc).encode())
    except Exception as exc:  # capture is for looking at: it never fails the request
        log.warning("[Request `%s`] capture of %s failed: %s", rid, key, exc)


def capture_request(core: Core, rid: str, data: bytes) -> None:
    if core.settings.capture == "none":
        return
    try:
        doc = _payload(core, "request", None, data)
    except Exception as exc:  # a broken redaction hook loses the capture, not the request
        log.warning("[Request `%s`] capture of its input failed: %s", rid, exc)
        return
    _write(core, rid, _REQUEST, doc)


def capture_node(core: Core, rid: str, eid: str, data: bytes, output: bytes | None) -> None:
    """A node's input, and its output when it succeeded (``all``), or the failed node's
    input (``errors`` and ``all``)."""
    mode = core.settings.capture
    if mode == "none" or (mode == "errors" and output is not None):
        return
    try:
        doc = {"input": _payload(core, "input", eid, data)}
        if output is not None:
            doc["output"] = _payload(core, "output", eid, output)
    except Exception as exc:  # a broken redaction hook loses the capture, not the request
        log.warning("[Request `%s`] capture of %s failed: %s", rid, eid, exc)
        return
    _write(core, rid, "node-" + eid, doc)


def payloads(core: Core, rid: str, eids: Iterable[str]) -> dict[str, Any]:
    """What was captured of the request: ``{"request": ..., "nodes": {eid: ...}}``."""
    store = _store(core, rid)

    def read(key: str) -> Any:
        try:
            return json.loads(store.get(key))
        except KeyNotFound:
            return None

    nodes = {}
    for eid in eids:
        found = read("node-" + eid)
        if found is not None:
            nodes[eid] = found
    return {"capture": core.settings.capture, "request": read(_REQUEST), "nodes": nodes}


def forget(core: Core, rid: str) -> None:
    _store(core, rid).cleanup()
