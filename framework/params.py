"""Field types for node params: a duration or a UTC time written in YAML, checked when the topology loads.

    class MyParams(BaseModel):
        every: PositiveDuration = "1m"
        lookback: Duration | None = None
        start: UtcTime | None = None

A bad value is a validation error with the field's path, reported by the lint with file and
line, like every other params mistake.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator

from framework.durations import parse_ms


def utc_ms(text: str) -> int:
    """Unix ms of an ISO-8601 time (``2026-11-02T00:00:00Z``, ``2026-11-02T00:00Z``, ``2026-11-02``); naive means UTC."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


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


Duration = Annotated[str, AfterValidator(_duration)]
"""``500ms``, ``30s``, ``5m``, ``1h``, ``3d``, ``2w``, ``7y`` or ``forever``."""
PositiveDuration = Annotated[str, AfterValidator(_positive)]
"""A duration above zero (an interval; ``forever`` is refused)."""
UtcTime = Annotated[str, AfterValidator(_utc_time)]
