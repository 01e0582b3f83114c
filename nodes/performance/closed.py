"""The finished round trips (trade_analysis rows) in closing order, with what the metrics ask of them at every step
kept up to date: their P&L packed, the P&L per symbol, and a window's trips found by bisection.

Recomputing those from every row at each metrics step cost O(trips) per step, O(n²) over a long backtest."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


class ClosedTrips:
    def __init__(self, rows: Iterable[dict[str, Any]] = ()) -> None:
        self.rows: list[dict[str, Any]] = []
        self._ts = array("q")
        self._pnls = array("d")
        self._by_symbol: dict[str, float] = {}
        self.ordered = True
        """Every trip closed no earlier than the one before (a window is then a tail)."""
        for row in rows:
            self.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        ts, pnl, symbol = int(row["ts"]), float(row["pnl"]), row["symbol"]
        if self._ts and ts < self._ts[-1]:
            self.ordered = False
        self.rows.append(row)
        self._ts.append(ts)
        self._pnls.append(pnl)
        self._by_symbol[symbol] = self._by_symbol.get(symbol, 0.0) + pnl

    def pnls(self) -> np.ndarray:
        """Every trip's P&L, in closing order (a copy)."""
        return np.array(self._pnls, dtype=np.float64)

    def pnl_by_symbol(self) -> dict[str, float]:
        """:func:`nodes.trading.metrics.pnl_by_symbol` of every trip: the same sums, made as the trips closed."""
        return dict(sorted(self._by_symbol.items()))

    def since(self, start: int) -> list[dict[str, Any]]:
        """The trips that closed at or after ``start``, in closing order."""
        if self.ordered:
            return self.rows[bisect.bisect_left(self._ts, start) :]
        return [t for t in self.rows if t["ts"] >= start]
