"""Fan-in arrivals and branch completions: sets of members, each added once.

A member's key holds its arrival position, and a small payload after it
(``"<position>:<base64>"``); a counter beside the members says how many arrived. Each store
kind gets the strongest form it supports: one locked step (memory, sqlite), compare-and-swap
of the counter and the member together (etcd, Consul), or one JSON list changed by
compare-and-swap. A folded arrival (:func:`arrive_folded`) also moves the arriving node's
marker, so its done marker costs no write of its own.
"""

from __future__ import annotations

import json
from binascii import a2b_base64, b2a_base64
from collections.abc import Iterable, Mapping

from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.interfaces import StateStore

from .iteration import Folded, Handed, Stopped
from .markers import INLINE
from .state import KEY as STATE_KEY

__all__ = ["add_member", "arrive_folded", "inlines", "member_payload", "members_of"]


def add_member(
    states: StateStore, key: str, member: str, total: int, state: str | None = None,
    handed: Handed | None = None, payload: bytes | None = None,
) -> tuple[int, bool, bool, bool]:
    """Record ``member``'s arrival in the set ``key`` once: (members so far, whether this
    member is the one that completed the set of ``total``, whether the request was running
    at the arrival).

    Repeating it (after a lost answer or a crash) adds nothing and answers the same. With an
    atomic multi-key transaction each member is a key holding its arrival position, written
    together with a counter (constant work per member); without, the set is one JSON list
    changed by compare-and-swap (work grows with the set's size).

    ``state``: the request state this process last saw running; the first try of the
    transaction also checks it, and when it held, nothing the caller wrote before can have
    come after the request's end and cleanup (which change or delete the state first), so
    the caller need not look (``endings.clean_if_ended``). Otherwise the third value is False.

    ``handed``: the arriving node's own hand-over, made in that same first try when this
    arrival does not complete the set (nothing follows it then); the fourth value says whether
    it was made.

    ``payload``: what the member brings, kept in its key after its position (see
    :func:`member_payload`); only with atomic transactions (the caller stores it otherwise).

    A store with ``locked_transactions`` reads the counter, the member's key, the state and
    the hand-over's marker and writes the arrival in one locked step: no lost race for the
    counter, no read before it."""
    if states.locked_transactions:
        return _add_locked(states, key, member, total, state, handed, payload)
    if states.atomic_transactions:
        return _add_counted(states, key, member, total, state, handed, payload)
    members = _add_listed(states, key, member)
    return len(members), len(members) >= total and members[-1] == member, False, False


def inlines(states: StateStore, payload: bytes | None) -> bool:
    """Whether an arrival at a set of ``states`` keeps ``payload`` in its member's key."""
    return (payload is not None and len(payload) <= INLINE
            and (states.atomic_transactions or states.locked_transactions))


def _member(count: int, payload: bytes | None) -> str:
    """A member's value: its arrival position, then ``:`` and its payload in base64."""
    if payload is None:
        return str(count)
    return f"{count}:{b2a_base64(payload, newline=False).decode()}"


def _position(value: str) -> int:
    return int(value.partition(":")[0])


def member_payload(value: str | None) -> bytes | None:
    """The payload a member's value (``add_member``) keeps, None when it keeps none."""
    if value is None:
        return None
    _, colon, payload = value.partition(":")
    return a2b_base64(payload) if colon else None


def members_of(states: StateStore, key: str, members: Iterable[str]) -> dict[str, str]:
    """The values of ``members`` of the set ``key`` that arrived (by member), in one multi-key
    read or one scan; empty on a store without atomic transactions (its set is one list and
    keeps no payloads)."""
    prefix = f"{key}@"
    cut = len(prefix)
    if states.locked_transactions:
        # a locked step that writes nothing reads just these keys, where a scan may walk the
        # whole namespace (memory: every branch's keys, at every join of a nested foreach)
        found: dict[str, str] = {}

        def keep(values: Mapping[str, str | None]) -> None:
            found.update((k[cut:], v) for k, v in values.items() if v is not None)

        keys = [prefix + member for member in members]
        for start in range(0, len(keys), _READ):
            states.locked_transaction(keys[start:start + _READ], keep)
        return found
    if not states.atomic_transactions:
        return {}
    return {k[cut:]: v for k, v in states.scan(prefix).items()}


#: Keys a multi-key read asks for at once (SQLite takes up to 127 arguments in a function).
_READ = 100


def _add_locked(
    states: StateStore, key: str, member: str, total: int, state: str | None,
    handed: Handed | None, payload: bytes | None,
) -> tuple[int, bool, bool, bool]:
    marker = f"{key}@{member}"
    keys = [key, marker]
    if state is not None:
        keys.append(STATE_KEY)
        if handed is not None:
            keys.append(handed.key)
    answer: tuple[int, bool, bool, bool] | None = None

    def decide(values: Mapping[str, str | None]) -> dict[str, str] | None:
        nonlocal answer
        current = values[key]
        position = values[marker]
        if position is not None:  # our own arrival, recorded before (its answer was lost)
            answer = None if current is None else (int(current), _position(position) == total,
                                                   False, False)
            return None
        count = int(current) + 1 if current else 1
        checked = state is not None and values[STATE_KEY] == state
        # the hand-over only where the state held (as one transaction comparing both would)
        # and nothing follows this arrival (it does not complete the set)
        made = (checked and handed is not None and count < total
                and values[handed.key] == handed.done)
        answer = (count, count == total, checked, made)
        writes = {marker: _member(count, payload), key: str(count)}
        if made:
            assert handed is not None
            writes[handed.key] = handed.handed
        return writes

    states.locked_transaction(keys, decide)
    if answer is None:
        raise Stopped  # the member's key without the counter: the request's keys are going
    return answer


def _add_counted(
    states: StateStore, key: str, member: str, total: int, state: str | None,
    handed: Handed | None, payload: bytes | None,
) -> tuple[int, bool, bool, bool]:
    marker = f"{key}@{member}"
    while True:
        try:
            raw: str | None = states.get(key)
        except KeyNotFound:
            raw = None
        count = int(raw) + 1 if raw else 1
        value = _member(count, payload)
        compare: dict[str, str | None] = {marker: None, key: raw}
        if state is not None:
            compare[STATE_KEY] = state
            put = {marker: value, key: str(count)}
            made = handed is not None and count < total
            if handed is not None and made:
                compare[handed.key] = handed.done
                put[handed.key] = handed.handed
            state = handed = None  # once: a failure may be theirs, and is looked into below
            if states.transaction(compare, put):
                return count, count == total, True, made
            continue
        if states.transaction(compare, {marker: value, key: str(count)}):
            return count, count == total, False, False
        try:
            position = _position(states.get(marker))
        except KeyNotFound:
            continue  # another member moved the counter first
        try:
            current = int(states.get(key))
        except KeyNotFound:
            raise Stopped from None
        return current, position == total, False, False  # our own arrival, recorded before


def arrive_folded(
    states: StateStore, key: str, member: str, total: int, state: str | None, fold: Folded,
    payload: bytes | None = None,
) -> tuple[int, bool, bool] | None:
    """Record ``member``'s arrival in the set ``key`` (as :func:`add_member`) and move the
    arriving node's marker from its claim to handed, or to done when the arrival completes
    the set (more follows it then), in one step: (members so far, completed, state held).

    None when the marker is not this delivery's claim (nor moved by this very arrival):
    nothing was written, and the caller writes the done marker and arrives as before. A
    repeated call finds its own arrival and answers as the first did (state not held)."""
    if states.locked_transactions:
        return _fold_locked(states, key, member, total, state, fold, payload)
    return _fold_counted(states, key, member, total, state, fold, payload)


def _fold_locked(
    states: StateStore, key: str, member: str, total: int, state: str | None, fold: Folded,
    payload: bytes | None,
) -> tuple[int, bool, bool] | None:
    marker = f"{key}@{member}"
    keys = [key, marker, fold.key]
    if state is not None:
        keys.append(STATE_KEY)
    answer: tuple[int, bool, bool] | None = None

    def decide(values: Mapping[str, str | None]) -> dict[str, str] | None:
        nonlocal answer
        answer = None
        current, position, node = values[key], values[marker], values[fold.key]
        if position is not None:
            # ours when the marker moved with it (an earlier call whose answer was lost)
            if current is not None and node in (fold.done, fold.handed):
                answer = (int(current), _position(position) == total, False)
            return None
        if node != fold.claim:
            return None  # taken over, or the request's keys went
        count = int(current) + 1 if current else 1
        last = count == total
        answer = (count, last, state is not None and values[STATE_KEY] == state)
        position = str(count)
        return {marker: position if payload is None else _member(count, payload),
                key: position, fold.key: fold.done if last else fold.handed}

    states.locked_transaction(keys, decide)
    return answer


def _fold_counted(
    states: StateStore, key: str, member: str, total: int, state: str | None, fold: Folded,
    payload: bytes | None,
) -> tuple[int, bool, bool] | None:
    marker = f"{key}@{member}"
    while True:
        raw = _value(states, key)
        count = int(raw) + 1 if raw else 1
        last = count == total
        compare: dict[str, str | None] = {marker: None, key: raw, fold.key: fold.claim}
        checked = state is not None
        if state is not None:
            compare[STATE_KEY] = state
            state = None  # once: a failure may be the state's, and is looked into below
        put = {marker: _member(count, payload), key: str(count),
               fold.key: fold.done if last else fold.handed}
        if states.transaction(compare, put):
            return count, last, checked
        node = _value(states, fold.key)
        position = _value(states, marker)
        if node == fold.claim and position is None:
            continue  # another member moved the counter first (or the state changed)
        if position is None or node not in (fold.done, fold.handed):
            return None  # not ours to fold: nothing written
        current = _value(states, key)
        if current is None:
            return None
        return int(current), _position(position) == total, False  # ours, answer lost


def _value(states: StateStore, key: str) -> str | None:
    try:
        return states.get(key)
    except KeyNotFound:
        return None


def _add_listed(states: StateStore, key: str, member: str) -> list[str]:
    while True:
        try:
            raw = states.get(key)
        except KeyNotFound:
            if states.create(key, json.dumps([member])):
                return [member]
            continue
        members: list[str] = json.loads(raw)
        if member in members:
            return members
        try:
            states.update(key, raw, json.dumps([*members, member]))
        except KeyNotFound:
            raise Stopped from None
        except CompareFailed:
            continue
        return [*members, member]
