"""The wire codec: how every transport turns a message into bytes and back (JSON through orjson).

NATS and Kafka encode payloads with :func:`encode` and read them with :func:`decode`; the
in-process bus uses the same pair when it runs with ``wire=True``, so a message that would not
survive the wire fails in-process too, and a subscriber gets what a NATS subscriber would.

A value that is not JSON (a numpy scalar, a set, ``Decimal``, bytes, a non-string key) raises
:class:`EncodeError` at publish, naming the subject and the field. So does a ``datetime``: orjson
would quietly turn it into an ISO string, a different type on the other side than the one
published (messages carry times as epoch milliseconds). A float NaN or infinity becomes
``null``, as JSON has no such numbers.
"""

from __future__ import annotations

from typing import Any

import orjson

from framework.transport.base import Message

__all__ = ["DecodeError", "EncodeError", "decode", "encode"]

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


class EncodeError(TypeError):
    """A payload that is not JSON: a programming error of its publisher, raised at publish."""


class DecodeError(ValueError):
    """Bytes that are not a JSON object; the message says why."""


def encode(payload: Message, subject: str | None = None) -> bytes:
    """``payload`` as JSON bytes, or :class:`EncodeError` naming ``subject`` and the first offending field."""
    try:
        return orjson.dumps(payload, option=_OPTIONS)
    except TypeError as exc:
        where = f" on {subject!r}" if subject is not None else ""
        field = _offending(payload)
        at = f" at {field[0]}" if field else ""
        raise EncodeError(f"message{where} is not JSON{at}: {field[1] if field else exc}") from None


def decode(data: bytes | bytearray | memoryview | str) -> Message:
    """The JSON object in ``data``, or :class:`DecodeError`."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = " ".join(str(exc).split())
        raise DecodeError(f"payload is not valid JSON: {text if len(text) <= 300 else text[:297] + '...'}") from None
    if type(value) is not dict:
        raise DecodeError(f"payload is a JSON {type(value).__name__}, not an object")
    return value


def _offending(value: Any, path: str = "$") -> tuple[str, str] | None:
    """The first place in ``value`` orjson refuses, as ``(path, reason)``; only run after a failure."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"key {key!r} is not a string"
            found = _offending(item, f"{path}.{key}" if path != "$" else key)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _offending(item, f"{path}[{i}]")
            if found:
                return found
        return None
    try:
        orjson.dumps(value, option=_OPTIONS)
    except TypeError as exc:
        return path, str(exc)
    return None
