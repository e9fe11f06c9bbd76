"""The index of a flow's requests: newest first, by status and by failed node, paged by cursor.

It is a capability every StateStore has without writing code: the index is plain keys beside the
records, in their namespace ``faasflow/<flow>/~records/``, laid out so that one page is one
:meth:`~faasflow.interfaces.StateStore.scan_page` from the cursor's position::

    ix/t/<position>            every request            value: the entry as JSON
    ix/s/<status>/<position>   by status                value: the entry as JSON
    ix/n/<node>/<position>     failed requests, by the node that failed
    ix/d/<hash>/<position>     by the definition hash the request started with
    ix/id/<request>            where the request's keys are, so forgetting it leaves none

``<position>`` is the start time in microseconds subtracted from 10**17 (17 digits, so newer sorts
first) then ``/<request id>``. Positions never move, so a cursor (the last position served)
stays valid while requests are added: new ones sort before it. On sqlite and etcd, whose
``scan_page`` is one ranged read with a limit, a page costs the same however many are kept; on
memory and Consul ``scan_page`` reads the prefix whole.

A page reads the one sequence of its most selective filter (node, else definition, else
statuses). What is left to check -- ``q`` (id prefix or error text), statuses with a
definition, a definition with a node -- filters what that sequence yields and stops after
:data:`SCAN_BUDGET` entries, answering the matches found so far and a cursor where it stopped,
so a rare match never makes one page read everything.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import attrs

from faasflow.errors import FaasflowError, KeyNotFound
from faasflow.interfaces import StateStore

__all__ = [
    "DEFAULT_LIMIT",
    "INDEX",
    "MAX_LIMIT",
    "SCAN_BUDGET",
    "STATUSES",
    "IndexEntry",
    "IndexPage",
    "IndexQuery",
    "InvalidQuery",
    "RequestIndex",
]

#: Where the index keys start inside the records' namespace.
INDEX = "ix/"
_T, _S, _N, _D, _ID = (INDEX + "t/", INDEX + "s/", INDEX + "n/", INDEX + "d/",
                       INDEX + "id/")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
#: Entries a page that filters (``q``, combined filters) reads at most before it answers.
SCAN_BUDGET = 5000
STATUSES = ("running", "success", "failure", "stopped")

_BASE = 10**17
_WINDOW = 3600 * 1_000_000  # the first read window: an hour of start times, in microseconds
_SKEW = 60.0  # seconds another process's clock may be ahead
_WIDTH = 17
_POSITION = re.compile(r"^\d{17}/[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_QUERY_PARAMETERS = ("status", "limit", "cursor", "since", "until", "node", "definition", "q")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class InvalidQuery(FaasflowError, ValueError):
    """A query parameter of the request index is malformed; the message names it and the fix."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"query parameter {parameter!r}: {message}")


@attrs.frozen
class IndexEntry:
    """What the index keeps of one request."""

    request_id: str
    status: str
    created: float
    ended: float | None = None
    node: str | None = None
    """The node that failed, for a failed request."""
    error: str | None = None
    """The first line of the error."""
    definition: str = ""
    """Hash of the flow definition the request started with."""

    @property
    def position(self) -> str:
        return _position(self.created, self.request_id)

    def to_json(self, flow: str) -> dict[str, Any]:
        """The form ``GET /flow`` serves."""
        return {
            "id": self.request_id,
            "flow": flow,
            "status": self.status,
            "created": self.created,
            "ended": self.ended,
            "failed_node": self.node,
            "error": self.error,
            "definition": self.definition,
        }

    def encode(self) -> str:
        doc: dict[str, Any] = {"i": self.request_id, "s": self.status, "c": self.created}
        for key, value in (("e", self.ended), ("n", self.node), ("r", self.error),
                           ("d", self.definition)):
            if value:
                doc[key] = value
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> IndexEntry:
        doc = json.loads(raw)
        return cls(doc["i"], doc["s"], float(doc["c"]), doc.get("e"), doc.get("n"),
                   doc.get("r"), doc.get("d", ""))


def first_line(error: str | None, limit: int = 500) -> str | None:
    """The first line of an error message, at most ``limit`` characters."""
    if not error:
        return None
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


@attrs.frozen
class IndexPage:
    """One page of the index and the cursor of the next (None on the last page)."""

    entries: Sequence[IndexEntry]
    next: str | None


@attrs.frozen
class IndexQuery:
    """Which requests, and which page of them.

    ``statuses`` empty means every status; ``since`` and ``until`` bound the start time
    (inclusive, epoch seconds); ``node`` keeps the requests that failed at that node;
    ``definition`` those started with that definition hash; ``text`` keeps ids starting with
    it or errors containing it (case-insensitive).
    """

    statuses: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    node: str | None = None
    text: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    definition: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Sequence[str]]) -> IndexQuery:
        """The query of ``GET /flow``'s parameters; raises :class:`InvalidQuery`."""
        unknown = sorted(set(args) - set(_QUERY_PARAMETERS))
        if unknown:
            raise InvalidQuery(unknown[0], "unknown; the request list takes "
                               + ", ".join(_QUERY_PARAMETERS))
        statuses: list[str] = []
        for raw in args.get("status", ()):
            for status in filter(None, (s.strip().lower() for s in raw.split(","))):
                if status not in STATUSES:
                    raise InvalidQuery("status", f"{status!r} is not a status; use one of "
                                       + ", ".join(STATUSES) + " (repeat it for several)")
                if status not in statuses:
                    statuses.append(status)
        limit = DEFAULT_LIMIT
        if args.get("limit"):
            raw = _one(args, "limit")
            try:
                limit = int(raw)
            except ValueError:
                raise InvalidQuery("limit", f"{raw!r} is not a whole number; use 1 to "
                                   f"{MAX_LIMIT}") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise InvalidQuery("limit", f"{limit} is out of range; use 1 to {MAX_LIMIT} "
                                   "and follow `next` for more")
        cursor = _one(args, "cursor") if args.get("cursor") else None
        if cursor is not None:
            decode_cursor(cursor)
        since = parse_time("since", _one(args, "since")) if args.get("since") else None
        until = parse_time("until", _one(args, "until")) if args.get("until") else None
        if since is not None and until is not None and since > until:
            raise InvalidQuery("since", "is after until; swap them")
        node = _one(args, "node") if args.get("node") else None
        text = _one(args, "q") if args.get("q") else None
        definition = _one(args, "definition").lower() if args.get("definition") else None
        if definition is not None and not _HASH.match(definition):
            raise InvalidQuery("definition", "is not a definition hash; give the 64 hex digits "
                               "an entry's `definition` shows")
        return cls(tuple(statuses), since, until, node, text, limit, cursor, definition)


def _one(args: Mapping[str, Sequence[str]], name: str) -> str:
    values = args[name]
    if len(values) > 1:
        raise InvalidQuery(name, f"given {len(values)} times; give it once")
    return values[0]


def parse_time(parameter: str, raw: str) -> float:
    """Epoch seconds or ISO 8601 (``2026-12-01T21:00:00Z``; no offset means UTC)."""
    try:
        value = float(raw)
    except ValueError:
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise InvalidQuery(parameter, f"{raw!r} is neither epoch seconds nor ISO 8601; "
                               "use e.g. 1764622800 or 2026-12-01T21:00:00Z") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        value = moment.timestamp()
    if not math.isfinite(value) or value < 0:
        raise InvalidQuery(parameter, f"{raw!r} is not a time; use epoch seconds or ISO 8601")
    return value


def _inverted(created: float) -> int:
    return max(0, _BASE - 1 - round(created * 1_000_000))


def _position(created: float, request_id: str) -> str:
    return f"{_inverted(created):0{_WIDTH}d}/{request_id}"


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = ""
    if not _POSITION.match(position):
        raise InvalidQuery("cursor", "is not a cursor this index gave out; pass the `next` "
                           "of the previous page unchanged, or leave it out for the first page")
    return position


def _node_key(node: str) -> str:
    return quote(node, safe="")


_UNIQUE = re.compile(r"^(?:.*_)?\d+_(?P<id>.+)$")


def _node_names(node: str) -> set[str]:
    """The failed node as errors name it (its unique id, ``0_2_check``) and as the flow does
    (``check``), so ``node=`` finds it by either."""
    found = _UNIQUE.match(node)
    return {node, found["id"]} if found else {node}


@attrs.define
class RequestIndex:
    """The index of one flow, over the StateStore handle of its records."""

    states: StateStore

    # -- writing -------------------------------------------------------------------------------

    def opened(self, entry: IndexEntry) -> None:
        """Index a running request; never overwrites what an end already wrote."""
        pos = entry.position
        value = entry.encode()
        where = json.dumps({"p": pos, "s": entry.status, "d": entry.definition})
        puts = {_T + pos: value, f"{_S}{entry.status}/{pos}": value}
        if entry.definition:
            puts[f"{_D}{entry.definition}/{pos}"] = value
        states = self.states
        if states.atomic_transactions:
            states.transaction({_ID + entry.request_id: None}, {_ID + entry.request_id: where,
                                                                  **puts})
            return
        if states.create(_ID + entry.request_id, where):
            for key, value in puts.items():
                states.set(key, value)

    def ended(self, entry: IndexEntry) -> None:
        """Index the end of a request (again, harmlessly, when an end is redone)."""
        states = self.states
        try:
            where = json.loads(states.get(_ID + entry.request_id))
        except KeyNotFound:
            where = {}
        if not entry.definition and where.get("d"):
            entry = attrs.evolve(entry, definition=where["d"])
        pos = entry.position
        puts = self.keys_of_ended(entry)
        stale = {f"{_S}{status}/{pos}" for status in STATUSES if status != entry.status}
        if where.get("p"):  # a repaired entry (started at another time), or a redrive's
            stale |= _keys_of(where)  # running again: what indexed it before goes
        stale -= set(puts)
        if states.atomic_transactions:
            states.transaction({}, puts, sorted(stale))
            return
        for key, value in puts.items():
            states.set(key, value)
        for key in stale:
            states.delete(key)

    @staticmethod
    def keys_of_ended(entry: IndexEntry) -> dict[str, str]:
        """Every key (and value) that indexes an ended request; a bulk load writes these."""
        pos = entry.position
        value = entry.encode()
        puts = {_T + pos: value, f"{_S}{entry.status}/{pos}": value,
                _ID + entry.request_id: json.dumps(
                    {"p": pos, "s": entry.status, "n": entry.node, "d": entry.definition})}
        for name in _node_names(entry.node) if entry.node else ():
            puts[f"{_N}{_node_key(name)}/{pos}"] = value
        if entry.definition:
            puts[f"{_D}{entry.definition}/{pos}"] = value
        return puts

    def remove(self, request_id: str) -> None:
        """Forget a request (retention): every key that indexed it."""
        states = self.states
        try:
            where = json.loads(states.get(_ID + request_id))
        except KeyNotFound:
            return
        doomed = sorted(_keys_of(where) | {_ID + request_id})
        if states.atomic_transactions:
            states.transaction({}, {}, doomed)
            return
        for key in doomed:
            states.delete(key)

    # -- reading -------------------------------------------------------------------------------

    def page(self, query: IndexQuery) -> IndexPage:
        """The entries ``query`` selects, newest first, and the cursor of the next page."""
        # one sequence of keys holds what the most selective filter keeps; the others check
        # the entries it yields
        checks: list[Callable[[IndexEntry], bool]] = []
        if query.node is not None:
            if query.statuses and "failure" not in query.statuses:
                return IndexPage((), None)
            sequences = [f"{_N}{_node_key(query.node)}/"]
        elif query.definition is not None:
            sequences = [f"{_D}{query.definition}/"]
            if query.statuses:
                checks.append(lambda e: e.status in query.statuses)
        elif query.statuses:
            sequences = [f"{_S}{status}/" for status in query.statuses]
        else:
            sequences = [_T]
        if query.node is not None and query.definition is not None:
            checks.append(lambda e: e.definition == query.definition)
        start = decode_cursor(query.cursor) if query.cursor else ""
        if query.until is not None:
            start = max(start, f"{_inverted(query.until):0{_WIDTH}d}")
        stop = None if query.since is None else f"{_inverted(query.since):0{_WIDTH}d}/~"
        text = query.text.lower() if query.text else None
        if text is not None:
            checks.append(lambda e: _matches(e, text))
        chunk = query.limit + 1 if not checks else max(query.limit + 1, 256)
        streams = [self._stream(seq, start, stop, chunk) for seq in sequences]
        merged: Iterator[tuple[str, IndexEntry]] = (
            streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda p: p[0])
        )
        found: list[IndexEntry] = []
        for examined, (position, entry) in enumerate(merged, 1):
            if all(check(entry) for check in checks):
                if len(found) == query.limit:
                    return IndexPage(found, encode_cursor(found[-1].position))
                found.append(entry)
            if checks and examined >= SCAN_BUDGET:
                return IndexPage(found, encode_cursor(position))
        return IndexPage(found, None)

    def _stream(
        self, sequence: str, start: str, stop: str | None, chunk: int
    ) -> Iterator[tuple[str, IndexEntry]]:
        after = sequence + start
        # On a store whose limited reads still walk to the end of the range, read windows of
        # start times (an hour past the cursor, then 4x wider each time one runs dry), so a
        # page walks about the requests of its window, not every older one.
        windows = self.states.pages_walk_the_range
        base = int(start[:_WIDTH]) if start else _inverted(time.time() + _SKEW)
        width = _WINDOW
        while True:
            end = None
            if windows and base + width < _BASE:
                end = f"{sequence}{base + width:0{_WIDTH}d}"
            rows = self.states.scan_page(sequence, after, chunk, end)
            for key, raw in rows:
                position = key[len(sequence):]
                if stop is not None and position > stop:
                    return
                try:
                    yield position, IndexEntry.decode(raw)
                except (ValueError, KeyError, TypeError):
                    continue  # a damaged entry is skipped, not fatal to the page
            if len(rows) == chunk:
                after = rows[-1][0]  # more in this window
                continue
            if end is None or (stop is not None and end[len(sequence):] > stop):
                return
            after, base, width = end, base + width, width * 4


def _keys_of(where: Mapping[str, Any]) -> set[str]:
    pos = where.get("p")
    if not pos:
        return set()
    keys = {_T + pos} | {f"{_S}{status}/{pos}" for status in STATUSES}
    if where.get("d"):
        keys.add(f"{_D}{where['d']}/{pos}")
    for name in _node_names(where["n"]) if where.get("n") else ():
        keys.add(f"{_N}{_node_key(name)}/{pos}")
    return keys


def _matches(entry: IndexEntry, text: str) -> bool:
    return entry.request_id.lower().startswith(text) or text in (entry.error or "").lower()
