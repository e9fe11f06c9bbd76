"""The request list: its URL parameters (all of its state, so every view is a deep link), checked
and passed to the flow's paged index; a flow without the index lists every record, which is
then filtered and paged here."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs

from faasflow.runtime.web import WebRequest, WebResponse
from faasflow_tower import pages
from faasflow_tower.client import GatewayClient

__all__ = ["BadParameter", "Filter", "list_requests", "matching_ids", "parse_time"]

PAGE = 50
MAX_PAGE = 1000
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadParameter(ValueError):
    pass


def parse_time(name: str, raw: str, now: float) -> float | None:
    """``30m``/``1h``/``7d`` (ago), epoch seconds, or an ISO 8601 time; None when empty."""
    raw = raw.strip()
    if not raw:
        return None
    match = _DURATION.match(raw)
    if match:
        return now - float(match["n"]) * _UNITS[match["unit"]]
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(f"{name}: {raw!r} is not a time; give 30m, 1h or 7d (ago), epoch "
                           "seconds, or an ISO 8601 time like 2026-12-01T10:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _matches(doc: Mapping[str, Any], statuses: Sequence[str], since: float | None,
             until: float | None, node: str, text: str) -> bool:
    if statuses and doc.get("status") not in statuses:
        return False
    created = doc.get("created")
    created = float(created) if isinstance(created, (int, float)) else 0.0
    if since is not None and created < since:
        return False
    if until is not None and created > until:
        return False
    if node:
        failed = [k for k, r in (doc.get("nodes") or {}).items()
                  if isinstance(r, Mapping) and r.get("status") not in (None, "success")]
        if not any(k == node or k.endswith(node) or k.rpartition("_")[2] == node
                   for k in failed):
            return False
    if text:
        rid = str(doc.get("id") or "")
        if not (rid.startswith(text) or text.lower() in str(doc.get("error") or "").lower()):
            return False
    return True


@attrs.frozen
class Filter:
    """The request list's filter, checked: what the URL (or the bulk form) asked for."""

    statuses: tuple[str, ...]
    since: float | None
    until: float | None
    node: str
    text: str
    limit: int

    @classmethod
    def parse(cls, args: Mapping[str, list[str]]) -> Filter:
        first = {k: v[0] for k, v in args.items() if v}
        statuses = tuple(s for s in args.get("status", []) if s)
        bad = [s for s in statuses if s not in pages.STATUSES]
        if bad:
            raise BadParameter(f"status: {bad[0]!r} is not one of {', '.join(pages.STATUSES)}")
        now = time.time()
        limit_raw = first.get("limit", str(PAGE))
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= MAX_PAGE:
            raise BadParameter(f"limit: {limit_raw!r} is not a number from 1 to {MAX_PAGE}")
        return cls(statuses, parse_time("since", first.get("since", ""), now),
                   parse_time("until", first.get("until", ""), now), first.get("node", ""),
                   first.get("q", ""), int(limit_raw))

    def params(self, cursor: str = "") -> list[tuple[str, str]]:
        """The flow's ``GET /flow`` parameters for this filter."""
        since = f"{self.since:.3f}" if self.since is not None else ""
        until = f"{self.until:.3f}" if self.until is not None else ""
        return [*(("status", s) for s in self.statuses), ("since", since), ("until", until),
                ("node", self.node), ("q", self.text), ("limit", str(self.limit)),
                ("cursor", cursor)]

    def matches(self, doc: Mapping[str, Any]) -> bool:
        return _matches(doc, self.statuses, self.since, self.until, self.node, self.text)


def matching_ids(client: GatewayClient, flow: str, chosen: Filter, most: int) -> list[str]:
    """Ids of up to ``most`` requests the filter matches, page by page."""
    ids: list[str] = []
    cursor = ""
    while len(ids) < most:
        rows, cursor_next, paged = client.requests(flow, chosen.params(cursor))
        if not paged:
            return [str(d.get("id")) for d in rows if chosen.matches(d)][:most]
        ids.extend(str(d.get("id")) for d in rows if d.get("id"))
        if not cursor_next:
            break
        cursor = cursor_next
    return ids[:most]


def list_requests(client: GatewayClient, request: WebRequest, page: pages.Page,
                  flow: str) -> WebResponse:
    args = {k: v[0] for k, v in request.args.items() if v}
    try:
        chosen = Filter.parse(request.args)
    except BadParameter as exc:
        return pages.html_response(pages.error_page(page, 400, str(exc)), 400)
    statuses, limit, cursor = list(chosen.statuses), chosen.limit, args.get("cursor", "")
    rows, next_cursor, paged = client.requests(flow, chosen.params(cursor))
    if not paged:
        rows = [d for d in rows if chosen.matches(d)]
        rows.sort(key=lambda d: (d.get("created") or 0, str(d.get("id"))), reverse=True)
        offset = int(cursor[2:]) if cursor.startswith("o:") and cursor[2:].isdigit() else 0
        more = len(rows) > offset + limit
        rows = rows[offset:offset + limit]
        next_cursor = f"o:{offset + limit}" if more else None
    next_url = None
    if next_cursor:
        kept = [(k, v) for k, vs in request.args.items() for v in vs if k != "cursor"]
        next_url = page.url(f"/flows/{pages.q(flow)}/requests", [*kept, ("cursor", next_cursor)])
    flash = ""
    stopped, failed = args.get("stopped", ""), args.get("failed", "")
    if stopped.isdigit():
        flash = (f'<p class="flash ok" role="status">Stopped {int(stopped)} request(s)'
                 + (f", {int(failed)} could not be stopped" if failed.isdigit() and int(failed)
                    else "") + ".</p>")
    body = pages.requests_page(page, flow, rows, args, statuses, next_url, flash)
    return pages.html_response(body)
