"""What a bar timeframe may be: the rule the topology, the lint and every bar-building node share.

Intraday timeframes must divide a day evenly, so their buckets align to midnight (and to the
daily roll); among calendar timeframes only ``1d`` and ``1w`` exist, since longer ones have
no fixed length. The topology also requires at least a minute (``MINUTE_MS``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
_TIMEFRAME = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_MS = {"s": 1_000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}


class TimeframeSpec(NamedTuple):
    ms: int
    calendar: bool
    days: int


def parse_timeframe(name: str) -> TimeframeSpec:
    """The length of ``name`` (``1m`` … ``4h``, ``1d``, ``1w``); ``ValueError`` says what is wrong."""
    match = _TIMEFRAME.match(name)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{name!r} is not a timeframe (use e.g. 1m, 5m, 1h, 4h, 1d, 1w)")
    count, unit = int(match.group(1)), match.group(2)
    ms = count * _UNIT_MS[unit]
    if unit in ("d", "w"):
        if count != 1:
            raise ValueError(f"{name!r}: only 1d and 1w are supported among calendar timeframes")
        return TimeframeSpec(ms, True, 7 if unit == "w" else 1)
    if DAY_MS % ms:
        raise ValueError(f"{name!r} does not divide a day evenly, so its bars could not align to midnight")
    return TimeframeSpec(ms, False, 0)
