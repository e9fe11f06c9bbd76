"""Figures of a flow's recent requests: counts by status, p50/p99 duration, failure rate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["FlowStats", "percentile", "summarise"]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@attrs.frozen
class FlowStats:
    counts: Mapping[str, int]
    p50: float | None
    """Seconds, over the requests that ended."""
    p99: float | None
    failure_rate: float | None
    """Failed share of the requests that ended."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def summarise(requests: Iterable[Mapping[str, Any]], since: float) -> FlowStats:
    counts: dict[str, int] = {}
    durations: list[float] = []
    ended = failed = 0
    for doc in requests:
        created = doc.get("created")
        if not isinstance(created, (int, float)) or created < since:
            continue
        status = str(doc.get("status") or "running")
        counts[status] = counts.get(status, 0) + 1
        end = doc.get("ended")
        if isinstance(end, (int, float)) and status in ("success", "failure", "stopped"):
            ended += 1
            failed += status == "failure"
            durations.append(max(0.0, end - created))
    return FlowStats(counts, percentile(durations, 50), percentile(durations, 99),
                     failed / ended if ended else None)
