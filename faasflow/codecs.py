"""Codecs: how a flow's data (bytes between nodes) becomes the values user functions see.

The engine moves bytes; a codec turns them into Python values before a modifier, aggregator,
forwarder, foreach or condition function is called, and turns what the function returns back
into bytes. :data:`BYTES` (the default) keeps faas-flow's behaviour: functions get and return
``bytes`` (``str`` results are UTF-8 encoded). A custom codec is any object with
``content_type``, ``encode`` and ``decode`` (see :class:`Codec`).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

import attrs

from faasflow.errors import FaasflowError

__all__ = ["BYTES", "JSON", "TEXT", "Codec", "CodecError", "check_codec"]


class CodecError(FaasflowError):
    """A value could not be encoded, or data could not be decoded, by a node's codec."""


@runtime_checkable
class Codec(Protocol):
    """Turns a node's data into a value and back.

    ``content_type`` is sent as the ``Content-Type`` of the node's function calls (``apply``,
    ``request``) when they set none; ``None`` sends none.
    """

    @property
    def content_type(self) -> str | None: ...

    def encode(self, value: Any) -> bytes:
        """The bytes that represent ``value``; raise to fail the node."""
        ...

    def decode(self, data: bytes) -> Any:
        """The value ``data`` represents; raise to fail the node."""
        ...


@attrs.frozen
class BytesCodec:
    """faas-flow's data: functions get ``bytes`` and return ``bytes`` or ``str`` (UTF-8)."""

    content_type: str | None = None
    name: str = "bytes"

    def encode(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8")
        raise CodecError(
            f"the bytes codec encodes bytes or str, got {type(value).__name__} {value!r:.80}: "
            "return bytes or str, or give the DAG or node a codec such as faasflow.JSON"
        )

    def decode(self, data: bytes) -> bytes:
        return data


@attrs.frozen
class TextCodec:
    """UTF-8 text: functions get and return ``str``."""

    content_type: str | None = "text/plain; charset=utf-8"
    name: str = "text"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise CodecError(
                f"the text codec encodes str, got {type(value).__name__} {value!r:.80}"
            )
        return value.encode("utf-8")

    def decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"the text codec got data that is not UTF-8: {exc}") from None


@attrs.frozen
class JsonCodec:
    """JSON documents: functions get and return ``dict``, ``list``, ``str``, numbers, ``None``.

    Empty data (a node after an execution-only edge, a fan-in without aggregator) decodes to
    ``None``.
    """

    content_type: str | None = "application/json"
    name: str = "json"

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise CodecError(
                f"the JSON codec cannot encode {type(value).__name__}: {exc}"
            ) from None

    def decode(self, data: bytes) -> Any:
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CodecError(
                f"the JSON codec got data that is not JSON ({exc}): {data!r:.80}"
            ) from None


#: The default: bytes in, bytes (or str) out, no Content-Type added.
BYTES: Codec = BytesCodec()
#: JSON values; calls carry ``Content-Type: application/json``.
JSON: Codec = JsonCodec()
#: UTF-8 strings; calls carry ``Content-Type: text/plain; charset=utf-8``.
TEXT: Codec = TextCodec()


def check_codec(value: object, what: str) -> Codec | None:
    """``value`` if it is a codec (or ``None``), else a definition error naming ``what``."""
    from faasflow.errors import DefinitionError

    if value is None:
        return None
    if isinstance(value, type) or not isinstance(value, Codec):
        raise DefinitionError(
            f"{what}: codec must be an object with content_type, encode() and decode() "
            f"(faasflow.JSON, faasflow.TEXT, faasflow.BYTES or your own), got {value!r}"
        )
    return value
