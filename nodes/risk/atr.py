"""TA-Lib's ATR, one bar at a time, so a live gate and a backtest get the same stop distances.

TA-Lib's definition (``talib.ATR``, unstable period 0): the true range of a bar is
``max(high, previous close) - min(low, previous close)`` (undefined for the first bar); the
first ATR is the mean of the first ``period`` true ranges (bars 2 .. period + 1), then Wilder's
smoothing ``atr = (atr * (period - 1) + tr) / period``. Fed the same bars from the same first
one, :class:`WilderATR` gives ``talib.ATR``'s values (tests/test_risk_rules.py checks it).
"""

from __future__ import annotations

from typing import Any


class WilderATR:
    __slots__ = ("period", "prev_close", "count", "total", "value", "last_ts")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("ATR period must be at least 1")
        self.period = period
        self.prev_close: float | None = None
        self.count = 0
        """True ranges seen so far (up to ``period``; after that the value is smoothed)."""
        self.total = 0.0
        self.value: float | None = None
        self.last_ts: int | None = None
        """Start of the last bar taken (a bar at or before it is a repeat and is skipped)."""

    def update(self, high: float, low: float, close: float, ts: int | None = None) -> float | None:
        """Take one bar; returns the ATR once ``period`` true ranges are known, else None."""
        if ts is not None:
            if self.last_ts is not None and ts <= self.last_ts:
                return self.value
            self.last_ts = ts
        prev, self.prev_close = self.prev_close, close
        if prev is None:
            return None
        tr = max(high, prev) - min(low, prev)
        n = self.period
        if self.value is not None:
            self.value = (self.value * (n - 1) + tr) / n
        else:
            self.count += 1
            self.total += tr
            if self.count == n:
                self.value = self.total / n
        return self.value

    @property
    def warming(self) -> str:
        """How far the warm-up is, for a rejection reason: ``3/14 true ranges``."""
        return f"{self.count}/{self.period} true ranges"

    def snapshot(self) -> list[Any]:
        return [self.period, self.prev_close, self.count, self.total, self.value, self.last_ts]

    @classmethod
    def from_snapshot(cls, data: list[Any]) -> WilderATR:
        atr = cls(int(data[0]))
        atr.prev_close, atr.count, atr.total, atr.value, atr.last_ts = data[1], int(data[2]), float(data[3]), data[4], data[5]
        return atr
