"""The equity curve: one point per recorded step, kept as packed arrays (a year of minutes is 12 MB, not 100)."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from nodes.trading.metrics import RunningCurve

WEEKDAYS_ONLY = True
"""The account's daily returns are the weekdays' (:func:`nodes.trading.metrics.period_returns`): FX and gold close from
Friday 22:00 to Sunday 22:00 UTC, yet the curve is recorded through the weekend."""


class Curve:
    def __init__(self) -> None:
        self.ts = array("q")
        self.equity = array("d")
        self.balance = array("d")
        self.running = RunningCurve(weekdays_only=WEEKDAYS_ONLY)
        """The whole curve's returns and drawdown, kept up to date point by point."""
        self.ordered = True
        """No point is earlier than the one before (a window is then a tail of the arrays)."""

    def __len__(self) -> int:
        return len(self.ts)

    def append(self, ts: int, equity: float, balance: float) -> None:
        if self.ts and ts < self.ts[-1]:
            self.ordered = False
        self.running.add(ts, equity)
        self.ts.append(ts)
        self.equity.append(equity)
        self.balance.append(balance)

    def last(self) -> tuple[int, float, float] | None:
        return (self.ts[-1], self.equity[-1], self.balance[-1]) if self.ts else None

    def arrays(self, current: tuple[int, float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ts, equity and balance (copies), with ``current`` appended when it is later than the last point."""
        ts = np.array(self.ts, dtype=np.int64)
        equity = np.array(self.equity, dtype=np.float64)
        balance = np.array(self.balance, dtype=np.float64)
        if current is not None and (not len(ts) or current[0] > ts[-1]):
            ts, equity, balance = np.r_[ts, current[0]], np.r_[equity, current[1]], np.r_[balance, current[2]]
        return ts, equity, balance

    def since(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """ts and equity of the points at or after ``start``, in the curve's order."""
        if self.ordered:
            first = bisect.bisect_left(self.ts, start)
            return np.array(self.ts[first:], dtype=np.int64), np.array(self.equity[first:], dtype=np.float64)
        ts, equity, _ = self.arrays()
        chosen = ts >= start
        return ts[chosen], equity[chosen]

    def load(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.append(int(row["ts"]), float(row["equity"]), float(row["balance"]))


def sample(n: int, limit: int | None) -> np.ndarray:
    """At most ``limit`` indices of ``n`` points, evenly spread, the first and the last included."""
    if limit is None or n <= limit:
        return np.arange(n)
    if limit == 1:
        return np.array([n - 1])
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))
