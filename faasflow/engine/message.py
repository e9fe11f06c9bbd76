"""Iteration messages: what one iteration hands to the next, signed end to end.

faas-flow signed only the execution position, with SHA-1 and a public default key, so the data
of a forwarded iteration could be changed undetected. Here the HMAC-SHA256 covers every field.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

import attrs

from faasflow.errors import ConfigurationError, FaasflowError, SignatureError

from .ids import unique

__all__ = ["Message", "MessageError", "sign_body", "verify_body_signature"]

VERSION = 1
_PREFIX = "sha256="
_BLOCK = 64  # SHA-256's block size, the length HMAC pads its key to
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
# one encoder for every message: json.dumps with options builds a new one per call
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_string = encode_basestring_ascii


class MessageError(FaasflowError):
    """A forwarded iteration message is not valid JSON or lacks a field."""


#: A dynamic branch the message runs inside: (dynamic node unique id, branch key, branch count).
Branch = tuple[str, str, int]


@attrs.define(eq=True)
class Message:
    """One iteration of a request: run ``node`` (a unique id) inside ``branches``.

    Never changed once made (``attrs.evolve`` makes another): handed on in this process, one
    object goes from iteration to iteration. Not frozen only because a frozen class's
    constructor sets each of its 13 fields through ``object.__setattr__``, which doubles
    the cost of the one message every iteration makes."""

    request_id: str
    flow: str
    definition_hash: str
    node: str
    branches: tuple[Branch, ...] = ()
    source: str | None = None
    """Id of the predecessor whose output is ``data`` (for ``context.node_input``)."""
    data: bytes | None = None
    data_ref: str | None = None
    query: str = ""
    callback: str | None = None
    trace: Mapping[str, str] = attrs.field(factory=dict)
    deadline: float | None = None
    mid: str = attrs.field(factory=unique)
    """This message's own id: copies of one message (redelivered, duplicated) share it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "id": self.request_id,
            "flow": self.flow,
            "hash": self.definition_hash,
            "node": self.node,
            "branches": [list(b) for b in self.branches],
            "from": self.source,
            "data": None if self.data is None else base64.b64encode(self.data).decode(),
            "data_ref": self.data_ref,
            "query": self.query,
            "callback": self.callback,
            "trace": dict(self.trace),
            "deadline": self.deadline,
            "mid": self.mid,
        }

    def encode(self, key: bytes | None) -> bytes:
        """The JSON body (the members of :meth:`to_json`); with a key, ``sign`` is appended as
        the last member and covers every byte before it."""
        # Written directly rather than through to_json: one is sent per iteration. The members
        # every message of a request shares are encoded once (``_shared``).
        data = None if self.data is None else base64.b64encode(self.data).decode()
        shared = _shared(self.request_id, self.flow, self.definition_hash, self.query,
                         self.callback, self.deadline)
        body = (
            f'{{"v":{VERSION},{shared},"node":{_json(self.node)},'
            f'"branches":{_branches(self.branches)},'
            f'"from":{_json(self.source)},"data":{_json(data)},"data_ref":{_json(self.data_ref)},'
            f'"trace":{_ENCODER.encode(dict(self.trace)) if self.trace else "{}"},'
            f'"mid":{_json(self.mid)}}}'
        ).encode()
        if key is None:
            return body
        return body[:-1] + b',"sign":"' + _mac(key, body).encode() + b'"}'

    @classmethod
    def decode(cls, body: bytes, key: bytes | None) -> Message:
        """Parse and (when ``key`` is given) verify a message; nothing is trusted before that."""
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError(f"forwarded iteration is not valid JSON: {exc}") from None
        except RecursionError:
            raise MessageError(
                "forwarded iteration nests JSON too deeply: an iteration message is a flat "
                "object written by faasflow"
            ) from None
        if not isinstance(doc, dict):
            raise MessageError("forwarded iteration must be a JSON object")
        sign = doc.pop("sign", None)
        if key is not None:
            if not isinstance(sign, str) or not sign:
                raise SignatureError(
                    "forwarded iteration is not signed: it must carry 'sign' = sha256=<hex>"
                )
            if not sign.isascii():
                raise SignatureError(
                    "failed to validate forwarded iteration: 'sign' must be sha256=<hex> "
                    "(ASCII), it holds other characters"
                )
            # the signature covers the exact bytes before it: nothing is re-serialised
            suffix = b',"sign":"' + sign.encode() + b'"}'
            signed = body[: -len(suffix)] + b"}" if body.endswith(suffix) else b""
            if not signed or not hmac.compare_digest(sign, _mac(key, signed)):
                raise SignatureError(
                    f"failed to validate forwarded iteration of request {doc.get('id')!r}: "
                    "signature does not match (tampered, or signed with another "
                    "faasflow-hmac-secret)"
                )
        try:
            if doc["v"] != VERSION:
                raise MessageError(f"unsupported iteration message version {doc['v']!r}")
            data = doc["data"]
            return cls(
                request_id=_str(doc, "id"),
                flow=_str(doc, "flow"),
                definition_hash=_str(doc, "hash"),
                node=_str(doc, "node"),
                branches=tuple((str(b[0]), str(b[1]), int(b[2])) for b in doc["branches"]),
                source=doc.get("from"),
                data=None if data is None else base64.b64decode(data, validate=True),
                data_ref=doc.get("data_ref"),
                query=str(doc.get("query") or ""),
                callback=doc.get("callback"),
                trace={str(k): str(v) for k, v in (doc.get("trace") or {}).items()},
                deadline=None if doc.get("deadline") is None else float(doc["deadline"]),
                mid=str(doc.get("mid") or hashlib.sha256(body).hexdigest()[:24]),
            )
        except MessageError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MessageError(
                f"forwarded iteration is malformed ({type(exc).__name__}: {exc})"
            ) from None


def _json(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _branches(branches: tuple[Branch, ...]) -> str:
    if not branches:
        return "[]"
    return _ENCODER.encode([list(b) for b in branches])


@functools.lru_cache(maxsize=256)
def _shared(
    request_id: str, flow: str, digest: str, query: str, callback: str | None,
    deadline: float | None,
) -> str:
    """The members every message of one request carries alike, encoded (without braces)."""
    doc = {"id": request_id, "flow": flow, "hash": digest, "query": query,
           "callback": callback, "deadline": deadline}
    return _ENCODER.encode(doc)[1:-1]


def _str(doc: Mapping[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise MessageError(f"forwarded iteration field {name!r} must be a non-empty string")
    return value


@functools.lru_cache(maxsize=16)
def _pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256's inner and outer hashes with the key's pads absorbed (RFC 2104)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD)))


def _mac(key: bytes, body: bytes) -> str:
    # HMAC from copies of the keyed pad states: every message is signed or verified, and
    # OpenSSL's HMAC set-up per call costs twice the hashing itself
    inner, outer = _pads(key)
    inner = inner.copy()
    inner.update(body)
    outer = outer.copy()
    outer.update(inner.digest())
    return _PREFIX + outer.hexdigest()


def sign_body(key: bytes, body: bytes) -> str:
    """``sha256=<hex>`` of ``body``: the ``X-Hub-Signature-256`` of an authenticated request."""
    return _mac(key, body)


def verify_body_signature(key: bytes | None, body: bytes, header: str | None) -> None:
    """Check a new request's ``X-Hub-Signature-256`` header; raise SignatureError if wrong."""
    if key is None:
        raise ConfigurationError(
            "failed to get auth key: request authentication is on but no secret is set "
            "(create the OpenFaaS secret faasflow-hmac-secret or set FAASFLOW_HMAC_SECRET)"
        )
    if not header:
        raise SignatureError(
            "failed to authenticate request: header X-Hub-Signature-256 is missing"
        )
    given = header.strip().encode("utf-8", "replace")  # bytes: a non-ASCII str cannot compare
    if not hmac.compare_digest(given, sign_body(key, body).encode()):
        raise SignatureError(
            "failed to authenticate request: X-Hub-Signature-256 does not match the body"
        )
