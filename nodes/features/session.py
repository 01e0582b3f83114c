"""Calendar and session features of a bar's start: cyclical time of day and week, market sessions.

Values come from tables indexed by integer minute and weekday, so a row's value is the same bits
however many rows are computed at once. Sessions follow their zone's daylight-saving rules
(``08:00-17:00 Europe/London`` is 07:00-16:00 UTC in summer) and count only local weekdays.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from nodes.features.featureset import Session, _session_spec

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_ANGLE_DAY = 2.0 * np.pi * np.arange(1440) / 1440.0
_ANGLE_WEEK = 2.0 * np.pi * np.arange(7) / 7.0
HOUR_SIN, HOUR_COS = np.sin(_ANGLE_DAY), np.cos(_ANGLE_DAY)
DOW_SIN, DOW_COS = np.sin(_ANGLE_WEEK), np.cos(_ANGLE_WEEK)


@lru_cache(maxsize=65536)
def _hour_offset_ms(zone: str, hour: int) -> int:
    """The zone's UTC offset during the UTC hour starting at ``hour`` * 1 h (transitions fall on whole hours)."""
    when = datetime.fromtimestamp(hour * 3600, timezone.utc).astimezone(ZoneInfo(zone))
    offset = when.utcoffset()
    return int(offset.total_seconds() * 1000) if offset is not None else 0


@lru_cache(maxsize=65536)
def _day_offset_ms(zone: str, day: int) -> int | None:
    """The offset for the whole UTC day, or None when it changes during the day (at most once)."""
    first, last = _hour_offset_ms(zone, day * 24), _hour_offset_ms(zone, day * 24 + 23)
    return first if first == last else None


def _offset_ms(zone: str, hour: int) -> int:
    whole_day = _day_offset_ms(zone, hour // 24)
    return whole_day if whole_day is not None else _hour_offset_ms(zone, hour)


def offsets_ms(zone: str, ts: np.ndarray) -> np.ndarray:
    if len(ts) == 1:
        return np.array([_offset_ms(zone, int(ts[0]) // HOUR_MS)], dtype=np.int64)
    hours, inverse = np.unique(ts // HOUR_MS, return_inverse=True)
    table = np.fromiter((_offset_ms(zone, int(h)) for h in hours), dtype=np.int64, count=len(hours))
    return table[inverse.reshape(-1)]


def weekday(ts: np.ndarray) -> np.ndarray:
    """Monday = 0 (1970-01-01 was a Thursday)."""
    return (ts // DAY_MS + 3) % 7


def compute(ts: np.ndarray, p: Session, out: dict[str, np.ndarray]) -> None:
    ts = np.asarray(ts, dtype=np.int64)
    if p.cyclical:
        minute = (ts // MINUTE_MS) % 1440
        dow = weekday(ts)
        out["hour_sin"], out["hour_cos"] = HOUR_SIN[minute], HOUR_COS[minute]
        out["dow_sin"], out["dow_cos"] = DOW_SIN[dow], DOW_COS[dow]
    for name, text in p.sessions.items():
        start, end, zone = _session_spec(text)
        local = ts + offsets_ms(zone, ts)
        minute = (local // MINUTE_MS) % 1440
        open_ = (minute >= start) & (minute < end) & (weekday(local) < 5)
        out[f"session_{name}"] = open_.astype(np.float64)
