"""Field types for node params: a duration or a UTC time written in YAML, checked when the topology loads.

    class MyParams(BaseModel):
        every: PositiveDuration = "1m"
        lookback: Duration | None = None
        start: UtcTime | None = None

A bad value is a validation error with the field's path, reported by the lint with file and
line, like every other params mistake.

A node reads the value as written. Dumped with ``context={CANONICAL: True}`` (what the configuration hash takes,
:mod:`framework.confighash`) each is its canonical form instead: equivalent spellings (``60m`` and ``1h``,
``2026-11-02T00:00Z`` and ``2026-11-02T00:00:00+00:00``) are one value there, and different values stay different.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer, SerializationInfo

from framework.durations import canonical as canonical_duration
from framework.durations import parse_ms

CANONICAL = "canonical"
"""The serialization context key (``model_dump(context={CANONICAL: True})``) under which these types dump canonical forms."""


def utc_ms(text: str) -> int:
    """Unix ms of an ISO-8601 time (``2026-11-02T00:00:00Z``, ``2026-11-02T00:00Z``, ``2026-11-02``); naive means UTC."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def canonical_time(text: str) -> str:
    """The one spelling of the instant ``text`` names, to the millisecond :func:`utc_ms` reads: ``2026-11-02T00:00:00Z``
    (``.250`` when the milliseconds are not zero; a time with no zone is UTC, as every node reads it)."""
    ms = utc_ms(text)
    whole = datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    millis = f".{ms % 1000:03d}" if ms % 1000 else ""
    return f"{whole}{millis}Z"


def _canonical_when_asked(form: Callable[[str], str]) -> PlainSerializer:
    def serialize(value: str, info: SerializationInfo) -> str:
        context = info.context
        return form(value) if isinstance(context, dict) and context.get(CANONICAL) else value

    return PlainSerializer(serialize, return_type=str)


def _duration(value: str) -> str:
    parse_ms(value)
    return value


def _positive(value: str) -> str:
    ms = parse_ms(value)
    if ms is None or ms <= 0:
        raise ValueError("must be a positive duration")
    return value


def _utc_time(value: str) -> str:
    try:
        utc_ms(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 time (e.g. 2026-11-02T00:00:00Z)") from None
    return value


Duration = Annotated[str, AfterValidator(_duration), _canonical_when_asked(canonical_duration)]
"""``500ms``, ``30s``, ``5m``, ``1h``, ``3d``, ``2w``, ``7y`` or ``forever``."""
PositiveDuration = Annotated[str, AfterValidator(_positive), _canonical_when_asked(canonical_duration)]
"""A duration above zero (an interval; ``forever`` is refused)."""
UtcTime = Annotated[str, AfterValidator(_utc_time), _canonical_when_asked(canonical_time)]
