"""Per-node markers and per-edge sets: what makes every step of an iteration repeatable.

Each node instance (node in one branch) has ONE key, ``node--<eid>``, that moves forward only:

``claimed`` (a delivery runs the node) -> ``done`` (its output is durable) -> ``handed`` (every
successor, join and ending it feeds is durable).

A delivery that finds ``handed`` does nothing; ``done`` re-does the hand-on from the stored
output (never the operations); ``claimed`` by the same delivery token (a redelivery of a crashed
attempt) takes over, by another token it is a concurrent duplicate and is dropped until the
claim's lease expires. Fan-in arrivals and branch completions are sets of members changed by
compare-and-swap, so a repeated hand-on adds nothing twice.
"""

from __future__ import annotations

import base64
import json
import time
from binascii import a2b_base64, b2a_base64
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.interfaces import DataStore, StateStore

from .ids import CLAIM
from .iteration import Duplicate, Folded, Handed, Iteration, Stopped
from .state import KEY as STATE_KEY

__all__ = [
    "REDO", "RUN", "Recheck", "add_member", "arrive_folded", "claim", "done_of", "fold_of",
    "hand_over", "inlines", "joined_output", "mark_done", "mark_handed", "member_payload",
    "members_of", "offer_handed", "write_done",
]

RUN = "run"
REDO = "redo"
#: Outputs up to this size are kept inside the marker; larger ones under ``out--<eid>``.
INLINE = 4096


# one encoder for every marker: json.dumps with options builds a new one per call
_encode = json.JSONEncoder(separators=(",", ":")).encode
_string = encode_basestring_ascii


def _read(states: StateStore, key: str) -> tuple[str, dict[str, Any]] | None:
    try:
        raw = states.get(key)
    except KeyNotFound:
        return None
    return raw, json.loads(raw)


class Recheck(Exception):
    """The claim's transaction found the request state, the marker or the predecessor's marker
    other than this iteration assumed: admit it again from what the store holds."""


def claim(
    it: Iteration, eid: str, lease: float, pending: dict[tuple[str, str], str]
) -> tuple[str, str, dict[str, Any]]:
    """Claim node instance ``eid`` for this delivery: (RUN or REDO, raw marker, marker).

    Raises Duplicate when the node was handed on already, its hand-over waits in this process
    for its successor (``pending``, see ``Core.pending``) or another live delivery holds it.
    With an assumed request state or a predecessor's hand-over (``it.state``, ``it.handed``)
    on a store with atomic transactions, one transaction checks the state, claims the node and
    moves the predecessor to handed; Recheck when it finds anything else (nothing written).
    """
    key = CLAIM + eid
    now, raw, doc = _claim_of(it, lease)
    if (it.state is not None or it.handed is not None) and it.states.atomic_transactions:
        compare: dict[str, str | None] = {key: None}
        put = {key: raw}
        if it.state is not None:
            compare[STATE_KEY] = it.state
        handed = it.handed
        if handed is not None:
            compare[handed.key] = handed.done
            put[handed.key] = handed.handed
        if not it.states.transaction(compare, put):
            raise Recheck
        it.state = None
        if handed is not None:
            it.handed = None
            pending.pop((it.msg.request_id, handed.key), None)
            for data_key in handed.data_keys:
                it.data.delete(data_key)
        return RUN, raw, doc
    while True:
        if it.states.create(key, raw):  # the common case first: one call
            return RUN, raw, doc
        found = _read(it.states, key)
        if found is None:
            now, raw, doc = _claim_of(it, lease)
            continue
        raw, doc = found
        if doc["p"] == "handed" or pending.get((it.msg.request_id, key)) == raw:
            raise Duplicate
        mine = doc.get("token") == it.token
        if not mine and doc.get("until", 0) > now:
            raise Duplicate  # another delivery is working on it right now
        if mine and doc["p"] == "claimed" and doc.get("n") == it.nonce:
            return RUN, raw, doc  # our own create, applied although it reported an error
        new = dict(doc, token=it.token, until=now + lease, att=it.attempt, n=it.nonce)
        new_raw = _encode(new)
        try:
            it.states.update(key, raw, new_raw)
        except KeyNotFound:
            raise Stopped from None  # the request ended and its namespace went
        except CompareFailed:
            now, raw, doc = _claim_of(it, lease)
            continue
        return (REDO if new["p"] == "done" else RUN), new_raw, new


#: A claim as this version writes it (``_claim_of``): its members in their order.
_CLAIM_MEMBERS = ("p", "token", "until", "start", "att", "n")
_CLAIM_HEAD = '{"p":"claimed",'


def _done_members(raw: str, doc: dict[str, Any], end: float, attempts: int, deliveries: int
                  ) -> tuple[dict[str, Any], str] | None:
    """The done marker's members made from the claim ``doc`` (stored as ``raw``) as this
    version writes it (every node has one): (members, their JSON without braces, as
    ``_encode`` writes them), or None for any other claim.

    The members that do not change are cut from ``raw`` instead of encoded again: ``raw`` is
    the claim's JSON, so the text is the encoder's."""
    if tuple(doc) != _CLAIM_MEMBERS or not raw.startswith(_CLAIM_HEAD):
        return None
    # ',"' occurs only between members: inside a JSON string every '"' is escaped
    cut = raw.find(',"until":', 15)
    rest = raw.find(',"start":', cut)
    if not 0 < cut < rest:
        return None
    until = end + (float(doc["until"]) - float(doc["start"]))
    kept = {"token": doc["token"], "until": until, "start": doc["start"], "att": doc["att"],
            "n": doc["n"], "end": end, "attempts": attempts, "deliveries": deliveries}
    return kept, (f'{raw[15:cut]},"until":{until!r}{raw[rest:-1]},"end":{end!r},'
                  f'"attempts":{int(attempts)},"deliveries":{int(deliveries)}')


def _claim_of(it: Iteration, lease: float) -> tuple[float, str, dict[str, Any]]:
    """(now, raw claim, claim) of this delivery, leased from now."""
    now = time.time()
    until = now + lease
    token, attempt, nonce = it.token, it.attempt, it.nonce
    # formatted directly (every node writes one): floats by ``repr`` as the JSON encoder
    # does, strings escaped by its own function
    raw = (f'{{"p":"claimed","token":{_string(token)},"until":{until!r},"start":{now!r},'
           f'"att":{int(attempt)},"n":{_string(nonce)}}}')
    return now, raw, {
        "p": "claimed", "token": token, "until": until, "start": now, "att": attempt,
        "n": nonce,
    }


def store_output(data: DataStore, name: str, output: bytes) -> dict[str, Any]:
    if len(output) <= INLINE:
        return {"out": base64.b64encode(output).decode()}
    data.set(f"out--{name}", output)
    return {"ref": f"out--{name}"}


def load_output(data: DataStore, doc: dict[str, Any]) -> bytes:
    if doc.get("out") is not None:
        return base64.b64decode(doc["out"])
    return data.get(doc["ref"])


def keep_input(
    it: Iteration, eid: str, raw: str, doc: dict[str, Any], value: bytes
) -> tuple[str, dict[str, Any]]:
    """Store a fan-in node's aggregated input in its claim, so a delivery that takes the claim
    over (after a crash during the operations) does not run the aggregator again."""
    if len(value) <= INLINE:
        kept = dict(doc, **{"in": base64.b64encode(value).decode()})
    else:
        it.data.set(f"in--{eid}", value)
        kept = dict(doc, in_ref=f"in--{eid}")
    kept_raw = _encode(kept)
    _update_claim(it, eid, raw, kept_raw)
    return kept_raw, kept


def _update_claim(
    it: Iteration, eid: str, raw: str, new_raw: str, failed: Exception | None = None
) -> None:
    """Replace this delivery's claim ``raw`` by ``new_raw``. Stopped when the request's markers
    went; Duplicate when another delivery took the node over. ``failed``: what the caller's
    own first try raised (it is not made again)."""
    while True:
        if failed is None:
            try:
                it.states.update(CLAIM + eid, raw, new_raw)
                return
            except (CompareFailed, KeyNotFound) as exc:
                failed = exc
        if isinstance(failed, KeyNotFound):
            raise Stopped from None
        failed = None
        found = _read(it.states, CLAIM + eid)
        if found is None:
            raise Stopped from None
        if found[0] == new_raw:
            return  # our write landed before the error
        if found[1].get("token") != it.token or found[1]["p"] != "claimed":
            raise Duplicate from None
        raw = found[0]  # our claim, renewed meanwhile


def kept_input(it: Iteration, doc: dict[str, Any]) -> bytes | None:
    """The aggregated input an earlier attempt kept, if any."""
    if doc.get("in") is not None:
        return base64.b64decode(doc["in"])
    if doc.get("in_ref"):
        return it.data.get(doc["in_ref"])
    return None


def mark_done(
    it: Iteration, eid: str, raw: str, doc: dict[str, Any], output: bytes, attempts: int
) -> tuple[str, dict[str, Any], str]:
    """Store the output and move the marker from claimed to done (output first: a done marker
    always has its output); the done marker (raw, doc) and the raw handed marker that follows
    it (see :func:`mark_handed`)."""
    done_raw, done, handed_raw = done_of(it, eid, raw, doc, output, attempts)
    write_done(it, CLAIM + eid, raw, done_raw)
    return done_raw, done, handed_raw


def done_of(
    it: Iteration, eid: str, raw: str, doc: dict[str, Any], output: bytes, attempts: int
) -> tuple[str, dict[str, Any], str]:
    """The done marker (raw, doc) and the raw handed marker of the claim ``raw`` (``doc``)
    with ``output``, not written yet; a large output is stored now (a done marker always has
    its output)."""
    end = time.time()
    fast = _done_members(raw, doc, end, attempts, it.attempt)
    if fast is not None:
        kept, members = fast
    else:
        kept = {k: v for k, v in doc.items() if k not in ("p", "in", "in_ref")}
        if doc.get("in_ref"):
            it.consumed.append(doc["in_ref"])  # deleted with the inputs, once handed on
        lease = float(doc.get("until", end)) - float(doc.get("start", end))
        # the lease starts again for the hand-on: a node that ran long is still not taken over
        kept.update(end=end, until=end + lease, attempts=attempts, deliveries=it.attempt)
        members = _encode(kept)[1:-1]
    if len(output) <= INLINE:
        name, value = "out", b2a_base64(output, newline=False).decode()
    else:
        name, value = "ref", f"out--{eid}"
        it.data.set(value, output)  # before the marker: a done marker always has its output
    # done and handed share every member but the phase and the output: encoded once
    done_raw = f'{{"p":"done",{members},"{name}":{_string(value)}}}'
    handed_raw = f'{{"p":"handed",{members}}}'
    return done_raw, {"p": "done", **kept, name: value}, handed_raw


def write_done(it: Iteration, key: str, raw: str, done_raw: str) -> None:
    """Move the marker ``key`` from this delivery's claim ``raw`` to ``done_raw`` (see
    :func:`_update_claim` for Stopped and Duplicate)."""
    try:  # the first try directly (every node makes it): only a failure needs the loop
        it.states.update(key, raw, done_raw)
    except (CompareFailed, KeyNotFound) as exc:
        _update_claim(it, key[len(CLAIM):], raw, done_raw, exc)


def fold_of(
    it: Iteration, eid: str, raw: str, done_raw: str, done: dict[str, Any], handed_raw: str
) -> Folded:
    """The node's done marker left to its arrival at the fan-in or join it feeds (see
    :func:`arrive_folded`), with the DataStore keys that go once it is handed."""
    keys = [*it.consumed]
    if done.get("ref"):
        keys.insert(0, done["ref"])
    return Folded(CLAIM + eid, raw, done_raw, handed_raw, tuple(keys))


def mark_handed(
    it: Iteration, eid: str, raw: str, doc: dict[str, Any], handed_raw: str | None = None
) -> None:
    """Everything the node fed is durable: its stored output can go, and a later copy of its
    message has nothing left to do. ``handed_raw``: the marker as :func:`mark_done` made it."""
    if handed_raw is None:
        handed = {k: v for k, v in doc.items() if k not in ("out", "ref")}
        handed["p"] = "handed"
        handed_raw = _encode(handed)
    try:
        it.states.update(CLAIM + eid, raw, handed_raw)
    except (CompareFailed, KeyNotFound):
        return  # another delivery (or the end of the request) got there first
    if doc.get("ref"):
        it.data.delete(doc["ref"])


def offer_handed(
    it: Iteration, eid: str, raw: str, doc: dict[str, Any], handed_raw: str
) -> Handed:
    """This node's move to handed, with the DataStore keys that go once it is made."""
    keys = [*it.consumed]
    if doc.get("ref"):
        keys.insert(0, doc["ref"])
    return Handed(CLAIM + eid, raw, handed_raw, tuple(keys))


def hand_over(it: Iteration, handed: Handed) -> None:
    """Make a predecessor's move to handed on its own (its successor got no claim)."""
    try:
        it.states.update(handed.key, handed.done, handed.handed)
    except (CompareFailed, KeyNotFound):
        return  # another delivery (or the end of the request) got there first
    for key in handed.data_keys:
        it.data.delete(key)


def joined_output(it: Iteration, owner_eid: str, compute: Any) -> bytes:
    """The aggregated output of a branch join: computed once and stored, so a repeated
    hand-on reuses it instead of running the aggregator again."""
    key = f"joined--{owner_eid}"
    found = _read(it.states, key)
    if found is not None:
        return load_output(it.data, found[1])
    output: bytes = compute()
    doc = store_output(it.data, f"joined--{owner_eid}", output)
    if it.states.create(key, _encode(doc)):
        return output
    found = _read(it.states, key)
    return output if found is None else load_output(it.data, found[1])


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
        return {marker: _member(count, payload), key: str(count),
                fold.key: fold.done if last else fold.handed}

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
