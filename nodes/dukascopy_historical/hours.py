"""UTC hours as epoch milliseconds: parsing the params' ISO times, flooring, printing."""

from __future__ import annotations

from datetime import datetime, timezone

HOUR_MS = 3_600_000


def parse_utc_ms(text: str) -> int:
    """``2019-02-04``, ``2019-02-04T07``, ``2019-02-04T07:00Z``, ``…+01:00`` → epoch ms (no zone = UTC).

    Raises ValueError naming the accepted forms.
    """
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or time (e.g. 2019-02-04, 2019-02-04T07:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1000)


def floor_hour(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def ceil_hour(ts_ms: int) -> int:
    return -floor_hour(-ts_ms)


def iso_hour(ts_ms: int) -> str:
    """``2019-02-04T07:00Z``."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def iso_ms(ts_ms: int) -> str:
    """``2019-02-04T07:00:00.994Z``."""
    t = datetime.fromtimestamp(ts_ms // 1000, tz=timezone.utc)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"
