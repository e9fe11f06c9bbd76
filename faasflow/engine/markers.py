"""Per-node markers and per-edge sets: what makes every step of an iteration repeatable.

Each node instance (node in one branch) has ONE key, ``node--<eid>``, that moves forward only:

``claimed`` (a delivery runs the node) -> ``done`` (its output is durable) -> ``handed`` (every
successor, join and ending it feeds is durable).

A delivery that finds ``handed`` does nothing; ``done`` re-does the hand-on from the stored
output (never the operations); ``claimed`` by the same delivery token (a redelivery of a crashed
attempt) takes over, by another token it is a concurrent duplicate and is dropped until the
claim's lease expires. Fan-in arrivals and branch completions are sets of members
(``arrivals``), so a repeated hand-on adds nothing twice.
"""

from __future__ import annotations

import base64
import json
import time
from binascii import b2a_base64
from json.encoder import encode_basestring_ascii
from typing import Any

from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.interfaces import DataStore, StateStore

from .ids import CLAIM
from .iteration import Duplicate, Folded, Handed, Iteration, Stopped
from .state import KEY as STATE_KEY

__all__ = [
    "REDO", "RUN", "Recheck", "claim", "done_of", "fold_of", "hand_over", "joined_output",
    "mark_done", "mark_handed", "offer_folded", "offer_handed", "write_done", "write_unfolded",
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
    kept, members = _ended(it, raw, doc, attempts)
    if len(output) <= INLINE:  # as ``_output_of``, without its call: every node has one
        name, value = "out", b2a_base64(output, newline=False).decode()
    else:
        name, value = _output_of(it, eid, output)
    # done and handed share every member but the phase and the output: encoded once
    done_raw = f'{{"p":"done",{members},"{name}":{_string(value)}}}'
    handed_raw = f'{{"p":"handed",{members}}}'
    return done_raw, {"p": "done", **kept, name: value}, handed_raw


def _ended(it: Iteration, raw: str, doc: dict[str, Any], attempts: int
           ) -> tuple[dict[str, Any], str]:
    """The members the done and handed markers of the claim ``raw`` (``doc``) share, ended
    now: (members, their JSON without braces)."""
    end = time.time()
    fast = _done_members(raw, doc, end, attempts, it.attempt)
    if fast is not None:
        return fast
    kept = {k: v for k, v in doc.items() if k not in ("p", "in", "in_ref")}
    if doc.get("in_ref"):
        it.consumed.append(doc["in_ref"])  # deleted with the inputs, once handed on
    lease = float(doc.get("until", end)) - float(doc.get("start", end))
    # the lease starts again for the hand-on: a node that ran long is still not taken over
    kept.update(end=end, until=end + lease, attempts=attempts, deliveries=it.attempt)
    return kept, _encode(kept)[1:-1]


def _output_of(it: Iteration, eid: str, output: bytes) -> tuple[str, str]:
    """The done marker's output member (name, value); a large output is stored now, before
    the marker: a done marker always has its output."""
    if len(output) <= INLINE:
        return "out", b2a_base64(output, newline=False).decode()
    it.data.set(f"out--{eid}", output)
    return "ref", f"out--{eid}"


_HANDED_HEAD = '{"p":"handed",'


def offer_folded(it: Iteration, eid: str, raw: str, doc: dict[str, Any], attempts: int
                 ) -> Handed:
    """This node's move from its claim ``raw`` (``doc``) straight to handed, its done marker
    never written (``Handed.folded``): its output goes with the message it hands on, so a
    large one is not stored either. :func:`write_unfolded` writes the done marker instead."""
    _, members = _ended(it, raw, doc, attempts)
    return Handed(CLAIM + eid, raw, f"{_HANDED_HEAD}{members}}}", tuple(it.consumed), True)


def write_unfolded(it: Iteration, handed: Handed, output: bytes) -> Handed:
    """Write the done marker (with ``output``, as :func:`mark_done` does) of a folded
    hand-over that did not go with its message; the move from it to handed that follows."""
    members = handed.handed[len(_HANDED_HEAD):-1]
    name, value = _output_of(it, handed.key[len(CLAIM):], output)
    done_raw = f'{{"p":"done",{members},"{name}":{_string(value)}}}'
    write_done(it, handed.key, handed.done, done_raw)
    keys = handed.data_keys if name == "out" else (value, *handed.data_keys)
    return Handed(handed.key, done_raw, handed.handed, keys)


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


def hand_over(states: StateStore, data: DataStore, handed: Handed) -> None:
    """Make a predecessor's move to handed on its own (its successor got no claim). A
    BackendError goes through: the move may not be made."""
    try:
        states.update(handed.key, handed.done, handed.handed)
    except (CompareFailed, KeyNotFound):
        # made already (a first try applied, then reported lost), another delivery took the
        # node over, or the request ended: either way nothing is left to write
        return
    for key in handed.data_keys:
        data.delete(key)


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
