"""Dukascopy datafeed paths: ``{SYM}/{YYYY}/{MM0}/{DD}/{HH}h_ticks.bi5`` with a ZERO-based month.

January is ``00`` and December ``11``; the day is 1-based and the hour is UTC. 2019-02-04 07:00
EURUSD ticks are ``EURUSD/2019/01/04/07h_ticks.bi5``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Literal

from nodes.dukascopy_historical.hours import HOUR_MS

DEFAULT_BASE_URL = "https://datafeed.dukascopy.com/datafeed"

_TICK_PATH = re.compile(r"(?:^|/)([A-Za-z0-9]+)/(\d{4})/(\d{2})/(\d{2})/(\d{2})h_ticks\.bi5$")


def _utc(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)


def tick_path(symbol: str, hour_start_ms: int) -> str:
    """The path of the tick file holding the UTC hour that contains ``hour_start_ms``."""
    t = _utc(hour_start_ms - hour_start_ms % HOUR_MS)
    return f"{symbol.upper()}/{t.year:04d}/{t.month - 1:02d}/{t.day:02d}/{t.hour:02d}h_ticks.bi5"


def tick_url(base_url: str, symbol: str, hour_start_ms: int) -> str:
    return f"{base_url.rstrip('/')}/{tick_path(symbol, hour_start_ms)}"


def parse_tick_path(path: str) -> tuple[str, int]:
    """``…/EURUSD/2019/01/04/07h_ticks.bi5`` → ``("EURUSD", epoch ms of 2019-02-04T07:00Z)``.

    Raises ValueError when the path does not have that shape or names no real date.
    """
    match = _TICK_PATH.search(path.replace("\\", "/"))
    if match is None:
        raise ValueError(f"{path!r} does not look like SYMBOL/YYYY/MM/DD/HHh_ticks.bi5")
    symbol, year, month0, day, hour = match.groups()
    try:
        t = datetime(int(year), int(month0) + 1, int(day), int(hour), tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"{path!r}: no such hour ({exc}; the month in the path is zero-based, 00-11)") from None
    return symbol.upper(), int(t.timestamp() * 1000)


CandleSpan = Literal["min_1", "hour_1", "day_1"]


def candle_path(symbol: str, span: CandleSpan, side: Literal["BID", "ASK"], period_start_ms: int) -> str:
    """Candle files: minute candles per UTC day, hour candles per month, day candles per year."""
    t = _utc(period_start_ms)
    sym, file = symbol.upper(), f"{side}_candles_{span}.bi5"
    if span == "min_1":
        return f"{sym}/{t.year:04d}/{t.month - 1:02d}/{t.day:02d}/{file}"
    if span == "hour_1":
        return f"{sym}/{t.year:04d}/{t.month - 1:02d}/{file}"
    return f"{sym}/{t.year:04d}/{file}"
