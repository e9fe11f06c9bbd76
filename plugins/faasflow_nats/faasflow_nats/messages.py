"""How a queued call travels in a JetStream message: one JSON line describing the call (function,
path, query, method, headers, callback, time, the digest that tells two calls apart), then the
call's own body, untouched."""

from __future__ import annotations

import json
from typing import Any

from faasflow.runtime.queue import Job

__all__ = ["decode", "encode", "subject_token"]


def encode(job: Job, **extra: object) -> bytes:
    """The message body: one JSON line describing the call, then the call's own body."""
    meta = {
        "id": job.id, "function": job.function, "path": job.path, "query": job.query,
        "method": job.method, "headers": [list(h) for h in job.headers],
        "callback": job.callback, "enqueued": job.enqueued, "digest": job.digest, **extra,
    }
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + job.body


def decode(data: bytes, attempts: int = 0) -> tuple[Job, dict[str, Any]]:
    head, _, body = data.partition(b"\n")
    meta = json.loads(head)
    job = Job(
        id=str(meta["id"]), function=str(meta["function"]), path=str(meta["path"]),
        query=str(meta["query"]), method=str(meta["method"]),
        headers=tuple((str(k), str(v)) for k, v in meta["headers"]), body=body,
        callback=meta.get("callback"), enqueued=float(meta["enqueued"]), attempts=attempts,
    )
    return job, meta


def subject_token(function: str) -> str:
    """A function name as one subject token (``.``, ``*``, ``>`` and blanks have meanings)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in function) or "_"
