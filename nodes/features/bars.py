"""Bars of one (symbol, timeframe) as columns, and what a bar must be to enter a window.

Spreads are NaN where the source has none (downloaded bars): the activity group treats them
as unknown. A bar message that fails :func:`parse_bar` is refused with a one-line reason
naming the field, so the node dead-letters it and goes on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

PRICE_FIELDS = ("open", "high", "low", "close")
SPREAD_FIELDS = ("spread_mean", "spread_min", "spread_max")


class BarError(ValueError):
    """A bar that cannot enter a window; the message names the field."""


@dataclass(slots=True)
class Bars:
    """Sorted by ``ts``, one bar per ``ts`` (bucket start); ``ts_close`` is the bucket end."""

    ts: np.ndarray
    ts_close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    ticks: np.ndarray
    spread: np.ndarray
    spread_min: np.ndarray
    spread_max: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> Bars:
        return Bars(*(getattr(self, f.name)[start:stop] for f in fields(self)))

    def take(self, index: np.ndarray) -> Bars:
        return Bars(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def empty(cls) -> Bars:
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(i, i.copy(), *(f.copy() for _ in range(8)))

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> Bars:
        """From a mapping of columns (a DataFrame, a dict of arrays) named as in ``bar.v1``."""

        def floats(name: str) -> np.ndarray:
            col = columns[name]
            values = col.to_numpy(dtype=np.float64, na_value=np.nan) if hasattr(col, "to_numpy") else np.asarray(col, dtype=np.float64)
            return np.ascontiguousarray(values, dtype=np.float64)

        def ints(name: str) -> np.ndarray:
            col = columns[name]
            return np.ascontiguousarray(col.to_numpy() if hasattr(col, "to_numpy") else col, dtype=np.int64)

        return cls(
            ints("ts"), ints("ts_close"), floats("open"), floats("high"), floats("low"), floats("close"),
            floats("tick_count"), floats("spread_mean"), floats("spread_min"), floats("spread_max"),
        )  # fmt: skip

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Bars:
        if not rows:
            return cls.empty()
        cols = {name: [r.get(name) for r in rows] for name in ("ts", "ts_close", *PRICE_FIELDS, "tick_count", *SPREAD_FIELDS)}
        for name in SPREAD_FIELDS:
            cols[name] = [math.nan if v is None else v for v in cols[name]]
        return cls.from_columns(cols)

    def sane(self) -> np.ndarray:
        """Rows a window may take: positive finite prices, low <= open, close <= high, ts < ts_close."""
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(self.open) & np.isfinite(self.high) & np.isfinite(self.low) & np.isfinite(self.close)
            ok &= (self.low > 0) & (self.low <= self.open) & (self.low <= self.close) & (self.high >= self.open) & (self.high >= self.close)
            ok &= self.ts < self.ts_close
            ok &= np.isfinite(self.ticks) & (self.ticks >= 0)
        return ok


def _number(bar: Mapping[str, Any], name: str, *, optional: bool = False) -> float:
    value = bar.get(name)
    if value is None and optional:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BarError(f"field {name}: {value!r} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise BarError(f"field {name}: {value!r} is not finite")
    return value


def parse_bar(bar: Any) -> tuple[str, str, int, int, tuple[float, ...]]:
    """``(symbol, timeframe, ts, ts_close, (open, high, low, close, ticks, spread, spread_min, spread_max))``."""
    if not isinstance(bar, Mapping):
        raise BarError(f"a bar is an object, not a {type(bar).__name__}")
    symbol, timeframe = bar.get("symbol"), bar.get("timeframe")
    if not isinstance(symbol, str) or not symbol:
        raise BarError(f"field symbol: {symbol!r} is not a symbol")
    if not isinstance(timeframe, str) or not timeframe:
        raise BarError(f"field timeframe: {timeframe!r} is not a timeframe")
    ts, ts_close = bar.get("ts"), bar.get("ts_close")
    for name, value in (("ts", ts), ("ts_close", ts_close)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BarError(f"field {name}: {value!r} is not an epoch-ms integer")
    assert isinstance(ts, int) and isinstance(ts_close, int)
    if ts_close <= ts:
        raise BarError(f"field ts_close: {ts_close} is not after ts {ts}")
    o, h, lo, c = (_number(bar, n) for n in PRICE_FIELDS)
    if lo <= 0:
        raise BarError(f"field low: {lo!r} is not a positive price")
    if not (lo <= o <= h and lo <= c <= h):
        raise BarError(f"fields open/high/low/close: {o}, {h}, {lo}, {c} are not a bar (low <= open, close <= high)")
    ticks = _number(bar, "tick_count")
    if ticks < 0:
        raise BarError(f"field tick_count: {ticks!r} is negative")
    spreads = tuple(_number(bar, n, optional=True) for n in SPREAD_FIELDS)
    if any(s < 0 for s in spreads if not math.isnan(s)):
        raise BarError(f"fields spread_*: {spreads} has a negative spread")
    return symbol, timeframe, ts, ts_close, (o, h, lo, c, ticks, *spreads)
