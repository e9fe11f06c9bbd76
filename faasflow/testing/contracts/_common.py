"""Test data and the thread runner the contracts share."""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import pytest

#: Values that break naive encodings: quotes, separators, escapes, scripts, emoji.
DIFFICULT_TEXT = (
    "The quick brown fox jumps over the lazy dog",
    'quotes \' " ` and back\\slash, {"json": [1, 2]}',
    "tabs\tnew\nlines\r\nand spaces  ",
    "Съешь же ещё этих мягких французских булок",
    "日本語のテキスト, ελληνικά, עברית, العربية",
    "emoji 🚀🔥 and combining e\u0301",
    "%2F/../?#&=+;",
)

#: Keys a flow may produce from user-chosen branch names.
DIFFICULT_KEYS = (
    "simple",
    "with/slash",
    "../dots",
    ".hidden",
    "with space and %25 percent",
    "ünïcødé-ключ",
    "a" * 200,
)

WAIT = 60.0  # upper bound for any child process or thread to report back


def unique(prefix: str) -> str:
    """``prefix`` and a random suffix: a flow or request name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_threads(work: Callable[[int], Any], count: int) -> list[Any]:
    """Run ``work(index)`` in ``count`` threads; their results in index order, or the test
    fails with the first traceback (or a thread still running after ``WAIT``)."""
    results: list[Any] = [None] * count
    errors: list[str] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    if any(thread.is_alive() for thread in threads):
        pytest.fail(f"a worker thread did not finish within {WAIT:.0f} s")
    if errors:
        pytest.fail("a worker thread raised:\n" + errors[0])
    return results
