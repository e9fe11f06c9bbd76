"""How the flow app answers: errors of the engine mapped to statuses, and the small fixed
answers (202 still running, 405, a bad request id)."""

from __future__ import annotations

import json
import logging

from faasflow.errors import (
    BackendError,
    ConfigurationError,
    DefinitionError,
    FaasflowError,
    RequestIdInUse,
    RequestNotActive,
    RequestNotFound,
    SignatureError,
)
from faasflow.runtime.web import WebRequest, WebResponse, error, json_response, text

__all__ = ["accepted", "bad_id", "failure", "not_allowed"]

log = logging.getLogger("faasflow.runtime")


def failure(
    request: WebRequest, exc: FaasflowError, request_id: str | None, action: str = ""
) -> WebResponse:
    """The answer to an engine error: 4xx for what the client can fix, 503 for a backend that
    could not be reached, 500 for a failed flow or a configuration fault."""
    from faasflow.engine import MessageError

    status = 500
    message = str(exc)
    if isinstance(exc, SignatureError):
        status = 403 if _has_signature(request) else 401
    elif isinstance(exc, MessageError):
        status = 400
    elif isinstance(exc, RequestNotFound):
        status = 404
    elif isinstance(exc, RequestNotActive):
        status = 410 if action == "forward" else 409
    elif isinstance(exc, BackendError):
        status = 503
        log.error("backend failure on %s %s: %s", request.method, request.path, exc)
    elif isinstance(exc, DefinitionError):
        message = f"request failed to be processed. error: {exc}"
    elif isinstance(exc, RequestIdInUse):
        status = 409
    elif isinstance(exc, ConfigurationError):
        log.error("configuration error on %s %s: %s", request.method, request.path, exc)
    return error(request, status, message, request_id)


def _has_signature(request: WebRequest) -> bool:
    if request.path.rstrip("/").endswith("/forward"):
        try:
            doc = json.loads(request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nesting past the parser
            return False
        return isinstance(doc, dict) and bool(doc.get("sign"))
    return bool(request.header("X-Hub-Signature-256") or request.header("X-Hub-Signature"))


def accepted(request: WebRequest, request_id: str, ids: tuple[tuple[str, str], ...]) -> WebResponse:
    message = f"request {request_id} is still running; GET /flow/{request_id} for its result"
    if request.wants_json:
        return json_response({"request_id": request_id, "status": "running",
                              "message": message}, 202, *ids)
    return text(message + "\n", 202, *ids)


def not_allowed(request: WebRequest, allowed: str) -> WebResponse:
    return error(request, 405, f"{request.method} is not allowed on {request.path}; use "
                 f"{allowed}", None, ("Allow", allowed))


def bad_id(request_id: str) -> str:
    shown = request_id if len(request_id) <= 64 else request_id[:64] + "..."
    return (f"invalid request id {shown!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")


