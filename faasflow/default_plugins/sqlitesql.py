"""The statements of the ``sqlite`` state store: key ranges, compares, upserts, and the guarded
upsert that makes a transaction of puts under compares one statement."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "POINT_READS",
    "UPSERT",
    "compare_sql",
    "guarded_sql",
    "key_range",
    "matches",
    "overlap",
    "upsert_sql",
]


def key_range(prefix: str) -> tuple[str, str | None]:
    """Bounds of the keys starting with ``prefix`` (so a scan is one index range)."""
    last = prefix[-1] if prefix else ""
    if not prefix or ord(last) >= 0x10FFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(ord(last) + 1)


#: Keys read as one point lookup each; more are one ``IN`` list (SQLite sorts it into a
#: temporary index first: 4 keys cost 17 us that way and 13 as lookups; at 32 the two meet).
POINT_READS = 16


@functools.lru_cache(maxsize=64)
def compare_sql(count: int) -> str:
    """The ``(key, value)`` rows of ``count`` keys (a key given twice may come twice)."""
    if 0 < count <= POINT_READS:
        return " UNION ALL ".join(["SELECT key, value FROM faasflow_state WHERE key = ?"] * count)
    return f"SELECT key, value FROM faasflow_state WHERE key IN ({', '.join('?' * count)})"


UPSERT = (
    "INSERT INTO faasflow_state (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


@functools.lru_cache(maxsize=64)
def guarded_sql(present: int, absent: int, puts: int) -> str:
    """One statement writing ``puts`` rows if ``present`` keys hold the values given and
    ``absent`` keys do not exist (parameters in that order: key and value per row, key and
    value per present key, then the absent keys). The SELECT reads the table it inserts into,
    so SQLite computes all its rows (and the guard) before the first write."""
    guard = [
        "EXISTS (SELECT 1 FROM faasflow_state WHERE key = ? AND value = ?)"
    ] * present + ["NOT EXISTS (SELECT 1 FROM faasflow_state WHERE key = ?)"] * absent
    rows = ", ".join(["(?, ?)"] * puts)
    return (
        "INSERT INTO faasflow_state (key, value) SELECT column1, column2"
        f" FROM (VALUES {rows}) WHERE {' AND '.join(guard) or 'true'}"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )


@functools.lru_cache(maxsize=16)
def upsert_sql(rows: int) -> str:
    """One statement writing ``rows`` rows (one trip into SQLite, not one per row)."""
    values = ", ".join(["(?, ?)"] * rows)
    return (
        f"INSERT INTO faasflow_state (key, value) VALUES {values}"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )


def matches(rows: Sequence[Any], checks: Mapping[str, str | None]) -> bool:
    """Whether the ``(key, value)`` rows found are exactly what ``checks`` expects."""
    found = {str(key): str(value) for key, value in rows}
    return all(found.get(key) == expected for key, expected in checks.items())


def overlap(put: Mapping[str, str], doomed: Sequence[tuple[str]], skip: int) -> None:
    """Refuse a transaction that both puts and deletes one key."""
    both = set(put) & {full[skip:] for (full,) in doomed}
    if both:
        raise ValueError(f"transaction both puts and deletes {sorted(both)}; choose one per key")
