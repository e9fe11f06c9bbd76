"""What a failure keeps: the function's status and the start of its answer, and the traceback
of the user's code (modifiers, aggregators, conditions, foreach functions, ``define()``).

The record keeps them as its ``failure`` member; the log line of the failure carries the
traceback too. Only the user's frames are kept (frames of faasflow itself and of the Python
runtime say nothing about the user's bug), followed by the exception line.
"""

from __future__ import annotations

import base64
import os
import sysconfig
import traceback
from typing import Any

from faasflow.errors import FaasflowError, FunctionError

__all__ = ["BODY_LIMIT", "details", "user_traceback"]

#: The first bytes of a failing function's answer kept in the record.
BODY_LIMIT = 4096

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_RUNTIME = tuple(
    os.path.abspath(p) + os.sep
    for p in {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
    if p
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _users(filename: str) -> bool:
    path = os.path.abspath(filename)
    if path.startswith(_PACKAGE) or filename.startswith("<frozen"):
        return False
    return not path.startswith(_RUNTIME) or "site-packages" in path


def _user_frames(exc: BaseException) -> tuple[BaseException, list[traceback.FrameSummary]]:
    found = [e for e in _chain(exc) if not isinstance(e, FaasflowError)]
    if not found:
        return exc, []
    origin = found[0]
    return origin, [f for f in traceback.extract_tb(origin.__traceback__) if _users(f.filename)]


def user_traceback(exc: BaseException) -> str | None:
    """The traceback of the innermost non-faasflow exception, trimmed to the user's frames
    and its exception line; None when no user code raised it."""
    origin, frames = _user_frames(exc)
    if not frames:
        return None
    lines = ["Traceback (most recent call last, user code only):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(origin), origin)
    return "".join(lines).rstrip("\n")


def details(exc: BaseException) -> dict[str, Any]:
    """The record's ``failure`` member for a failure caused by ``exc`` (may be empty)."""
    out: dict[str, Any] = {}
    for cause in _chain(exc):
        if isinstance(cause, FunctionError):
            if cause.status is not None:
                out["status"] = cause.status
            if cause.url:
                out["url"] = cause.url
            if cause.body:
                body = cause.body[:BODY_LIMIT]
                try:
                    out["body"] = body.decode()
                    out["body_encoding"] = "utf-8"
                except UnicodeDecodeError:
                    out["body"] = base64.b64encode(body).decode()
                    out["body_encoding"] = "base64"
                out["body_truncated"] = len(cause.body) > BODY_LIMIT
            break
    trace = user_traceback(exc)
    if trace:
        out["traceback"] = trace
        last = _user_frames(exc)[1][-1]
        out["where"] = f"{last.filename}:{last.lineno} in {last.name}"
    return out


