"""Names the engine shares: request ids, execution ids, coordination keys and headers.

Generated request ids sort by creation time (a 4-byte seconds prefix) and are unguessable (80
random bits after it): a request id is the only handle on its record and control routes.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Mapping
from urllib.parse import quote

from faasflow.errors import ConfigurationError

__all__ = [
    "ATTEMPT_HEADER",
    "CALLBACK_HEADER",
    "CALL_ID_HEADER",
    "CLAIM",
    "DEAD_LETTER_HEADER",
    "REQUEST_ID_HEADER",
    "check_request_id",
    "encode_key",
    "exec_id",
    "header",
    "new_request_id",
    "unique",
]

REQUEST_ID_HEADER = "X-Faas-Flow-Reqid"
CALLBACK_HEADER = "X-Faas-Flow-Callback-Url"
#: The gateway's id of one queued or synchronous call: the same across redeliveries.
CALL_ID_HEADER = "X-Call-Id"
#: The gateway queue's delivery attempt of a forwarded iteration (1 for the first).
ATTEMPT_HEADER = "X-Faas-Flow-Attempt"
#: Set by a gateway queue that gave up on a forwarded iteration (the cause): the request
#: then fails instead of waiting for its deadline.
DEAD_LETTER_HEADER = "X-Faas-Flow-Dead-Letter"

#: ``node--<eid>``: a node instance's marker (claimed, done, handed on); see ``markers``.
CLAIM = "node--"

_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # base32hex: byte order == sort order
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_request_id() -> str:
    """A 23-character id: 4 bytes of seconds and 10 random bytes in lower-case base32hex
    (URL-safe, sorts by creation second, 80 bits nobody can guess)."""
    raw = int(time.time()).to_bytes(4, "big") + os.urandom(10)
    value = int.from_bytes(raw, "big") << 3  # 112 bits -> 115 bits = 23 base32 digits
    digits = []
    for _ in range(23):
        digits.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(digits))


class _Unique:
    """Ids no other call in any process makes: a random prefix drawn once per process (and
    again in a forked child, which must not repeat its parent's ids) and a counter. Message ids
    and claim nonces are made per iteration, where a system call for fresh random bytes each
    time is a measurable cost."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


#: ``unique()``: a fresh id of 24 hex digits, unique across processes and calls (a bound
#: method: cheaper to call than the object itself, through its ``__call__``).
unique = _Unique().new


def check_request_id(request_id: str) -> str:
    """Return a caller-supplied id, or raise if it cannot be used in keys and URLs."""
    if not _VALID.match(request_id):
        raise ConfigurationError(
            f"invalid request id {request_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return request_id


def encode_key(key: str) -> str:
    """A branch key as it appears inside store keys: ``%``, ``-`` and ``/`` percent-encoded,
    so ``--`` (the separator of execution ids) can never come from user data."""
    return quote(key, safe="").replace("-", "%2D")


def exec_id(unique_id: str, branches: tuple[tuple[str, str, int], ...]) -> str:
    """faas-flow's execution id: branch keys innermost first, then the node's unique id."""
    if not branches:
        return unique_id
    return "--".join([encode_key(b[1]) for b in reversed(branches)] + [unique_id])


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, its name compared case-insensitively."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None
