"""Request ids: generated ones sort by creation time; supplied ones are checked."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time

from faasflow.errors import ConfigurationError

__all__ = ["check_request_id", "new_request_id"]

_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # base32hex: byte order == sort order
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()
_MACHINE = os.urandom(3)
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_request_id() -> str:
    """A 20-character id like faas-flow's xid: 4 bytes of seconds, 3 random machine bytes,
    2 bytes of pid and a 3-byte counter, in lower-case base32hex (URL-safe, time-sortable)."""
    with _lock:
        count = next(_counter) & 0xFFFFFF
    raw = (
        int(time.time()).to_bytes(4, "big")
        + _MACHINE
        + (os.getpid() & 0xFFFF).to_bytes(2, "big")
        + count.to_bytes(3, "big")
    )
    value = int.from_bytes(raw, "big") << 4  # 96 bits -> 100 bits = 20 base32 digits
    digits = []
    for _ in range(20):
        digits.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(digits))


def check_request_id(request_id: str) -> str:
    """Return a caller-supplied id, or raise if it cannot be used in keys and URLs."""
    if not _VALID.match(request_id):
        raise ConfigurationError(
            f"invalid request id {request_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return request_id
