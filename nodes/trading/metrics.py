"""Performance metrics: one implementation for the live monitor and the backtest report.

Conventions (those of empyrical, the reference the tests compare with): returns are simple
returns of the equity per period (a UTC day by default) between the last marks of consecutive
periods; with ``weekdays_only`` (performance-monitoring's FX account) marks stamped on a Saturday
or a Sunday (UTC) close no period, so Monday's return runs from Friday's last mark: the curve is
marked through the weekend, and its flat Saturday counted as a return of 0 would shrink Sharpe
and Sortino by about √(5/7) and annualise a year of 365 returns as 365 / 252 years. The
risk-free rate is 0. Sharpe is the mean over the sample standard deviation (ddof 1; undefined
when the returns do not vary), Sortino the mean over the downside deviation √(Σ min(r, 0)² / N)
(target 0, over all N returns; undefined without a negative return), both annualised by
√periods_per_year (252 trading days: FX trades five days a week); the annual return is
compounded, (Π(1 + r))^(periods_per_year / N) − 1; Calmar is the annual return over the maximum
drawdown. Drawdown is measured on the equity series itself (every mark, not only period ends),
its duration in time from the peak to the mark that regains it (or to the end, if none does).
Trade statistics come from closed trades' P&L in the account currency: win rate (trades with a
P&L above 0 over all trades, break-even ones included), profit factor (gross profit over gross
loss: undefined without a loss), expectancy (mean P&L per trade).
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DAY_MS = 86_400_000
TRADING_DAYS = 252


@dataclass(frozen=True, slots=True)
class Drawdown:
    max: float
    """The deepest fall from a peak, as a fraction of the peak (0.12 = 12 %)."""
    max_duration_ms: int
    """The longest time from a peak to the mark that regained it (or to the end)."""
    current: float


def drawdown_curve(equity: Sequence[float] | np.ndarray) -> np.ndarray:
    """The drawdown at every mark: the fall from the highest equity so far, as a fraction of it."""
    equity = np.asarray(equity, dtype=np.float64)
    if not len(equity):
        return equity
    return 1.0 - equity / np.maximum.accumulate(equity)


def drawdown_from(peak: float, equity: float) -> float:
    """One mark's drawdown from the peak so far (``peak`` includes ``equity``): :func:`drawdown_curve`'s formula for a
    curve marked one point at a time (a numpy call per point costs more than the arithmetic)."""
    return 1.0 - equity / peak


def drawdown(ts_ms: Sequence[int] | np.ndarray, equity: Sequence[float] | np.ndarray) -> Drawdown:
    equity = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(ts_ms, dtype=np.int64)
    if not len(equity):
        return Drawdown(0.0, 0, 0.0)
    dd = drawdown_curve(equity)
    underwater = dd > 0
    longest = 0
    if underwater.any():
        # each underwater run starts after a peak mark and ends at the mark that regains it (or the end)
        edges = np.diff(np.r_[0, underwater.astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for start, end in zip(starts, ends):
            recovered = ts[end] if end < len(ts) else ts[-1]
            longest = max(longest, int(recovered - ts[start - 1]))
    return Drawdown(float(dd.max()), longest, float(dd[-1]))


def period_returns(ts_ms: Sequence[int] | np.ndarray, equity: Sequence[float] | np.ndarray, period_ms: int = DAY_MS, *,
                   weekdays_only: bool = False) -> np.ndarray:  # fmt: skip
    """Simple returns between the last marks of consecutive periods (UTC days by default) that have marks (with
    ``weekdays_only``, marks on a Saturday or a Sunday count for none)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    equity = np.asarray(equity, dtype=np.float64)
    if weekdays_only:
        weekday = (ts // DAY_MS + 3) % 7 < 5  # Monday 0 (1970-01-01 was a Thursday)
        ts, equity = ts[weekday], equity[weekday]
    if len(ts) < 2:
        return np.empty(0)
    bucket = ts // period_ms
    last = np.r_[bucket[1:] != bucket[:-1], True]
    closes = equity[last]
    return closes[1:] / closes[:-1] - 1.0


def annual_return(returns: np.ndarray, periods_per_year: int = TRADING_DAYS) -> float:
    if not len(returns):
        return math.nan
    growth = float(np.prod(1.0 + returns))
    return growth ** (periods_per_year / len(returns)) - 1.0 if growth > 0 else -1.0


def sharpe(returns: np.ndarray, periods_per_year: int = TRADING_DAYS) -> float:
    if len(returns) < 2:
        return math.nan
    if not returns.max() > returns.min():  # identical returns: np.std leaves float noise (~1e-17), not 0
        return math.nan
    std = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / std * math.sqrt(periods_per_year) if std > 0 else math.nan


def sortino(returns: np.ndarray, periods_per_year: int = TRADING_DAYS) -> float:
    if len(returns) < 2:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    return float(np.mean(returns)) / downside * math.sqrt(periods_per_year) if downside > 0 else math.nan


def calmar(returns: np.ndarray, max_drawdown: float, periods_per_year: int = TRADING_DAYS) -> float:
    return annual_return(returns, periods_per_year) / max_drawdown if max_drawdown > 0 else math.nan


@dataclass(frozen=True, slots=True)
class TradeStats:
    trades: int
    win_rate: float
    profit_factor: float
    expectancy: float
    gross_profit: float
    gross_loss: float


def trade_stats(pnls: Sequence[float] | np.ndarray) -> TradeStats:
    pnl = np.asarray(pnls, dtype=np.float64)
    if not len(pnl):
        return TradeStats(0, math.nan, math.nan, math.nan, 0.0, 0.0)
    profit, loss = float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())
    return TradeStats(
        trades=len(pnl),
        win_rate=float((pnl > 0).mean()),
        profit_factor=profit / loss if loss > 0 else math.inf if profit > 0 else math.nan,
        expectancy=float(pnl.mean()),
        gross_profit=profit,
        gross_loss=loss,
    )


def pnl_by_symbol(trades: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for trade in trades:
        out[trade["symbol"]] += float(trade["pnl"])
    return dict(sorted(out.items()))


def summary(
    ts_ms: Sequence[int] | np.ndarray,
    equity: Sequence[float] | np.ndarray,
    trade_pnls: Sequence[float] | np.ndarray = (),
    *,
    period_ms: int = DAY_MS,
    periods_per_year: int = TRADING_DAYS,
    weekdays_only: bool = False,
) -> dict[str, float]:
    """Every metric, by name, as the monitor writes them to performance_metrics and a report shows them."""
    equity = np.asarray(equity, dtype=np.float64)
    first, last = (float(equity[0]), float(equity[-1])) if len(equity) else (math.nan, math.nan)
    returns = period_returns(ts_ms, equity, period_ms, weekdays_only=weekdays_only)
    return _summary(returns, drawdown(ts_ms, equity), first, last, trade_pnls, periods_per_year)


def running_summary(curve: RunningCurve, trade_pnls: Sequence[float] | np.ndarray = (), *,
                    periods_per_year: int = TRADING_DAYS) -> dict[str, float]:  # fmt: skip
    """:func:`summary` of every point ``curve`` was given (with the curve's ``weekdays_only``), without going over
    them again."""
    return _summary(curve.returns(), curve.drawdown(), curve.first, curve.last, trade_pnls, periods_per_year)


def _summary(returns: np.ndarray, dd: Drawdown, first: float, last: float, trade_pnls: Sequence[float] | np.ndarray,
             periods_per_year: int) -> dict[str, float]:  # fmt: skip
    stats = trade_stats(trade_pnls)
    return {
        "equity": last,
        "total_return": float(np.float64(last) / first - 1.0),  # numpy's division: a zero start gives inf, as over the array
        "annual_return": annual_return(returns, periods_per_year),
        "sharpe": sharpe(returns, periods_per_year),
        "sortino": sortino(returns, periods_per_year),
        "calmar": calmar(returns, dd.max, periods_per_year),
        "max_drawdown": dd.max,
        "max_drawdown_duration_ms": float(dd.max_duration_ms),
        "current_drawdown": dd.current,
        "trades": float(stats.trades),
        "win_rate": stats.win_rate,
        "profit_factor": stats.profit_factor,
        "expectancy": stats.expectancy,
    }


class RunningCurve:
    """:func:`period_returns` and :func:`drawdown` of a curve given one point at a time, equal bit for bit to those
    functions over the same points in the same order (the same float operations on the same values).

    A monitor that computed them from the whole curve at every metrics step paid O(points) each time: O(n²) over a
    long backtest, a sixth of a million-bar run. Here a point costs a few comparisons, and the returns are made from
    the periods' closes alone."""

    __slots__ = ("period_ms", "weekdays_only", "closes", "count", "first", "last", "last_ts", "_bucket", "_marks",
                 "_close", "peak", "max", "current", "longest", "_under_since")  # fmt: skip

    def __init__(self, period_ms: int = DAY_MS, *, weekdays_only: bool = False) -> None:
        self.period_ms = period_ms
        self.weekdays_only = weekdays_only
        """:func:`period_returns`' ``weekdays_only``: a point on a Saturday or a Sunday closes no period."""
        self.closes = array("d")
        """The last equity of every run of points in one period, but the last run's (that is :attr:`_close`)."""
        self._marks = 0
        """Points that count for the periods (every one, unless ``weekdays_only``)."""
        self._close = math.nan
        self.count = 0
        self.first = self.last = math.nan
        self.last_ts = 0
        self._bucket = 0
        self.peak = math.nan
        self.max = 0.0
        self.current = 0.0
        self.longest = 0
        self._under_since: int | None = None
        """The time of the point before the current fall from the peak began (None: at a peak)."""

    def add(self, ts: int, equity: float) -> None:
        if not self.weekdays_only or (ts // DAY_MS + 3) % 7 < 5:
            bucket = ts // self.period_ms
            if self._marks and bucket != self._bucket:
                self.closes.append(self._close)
            self._bucket, self._close = bucket, equity
            self._marks += 1
        if not self.count:
            self.first = self.peak = equity
        if self.peak == self.peak and not self.peak > equity:  # np.maximum's rule: the new value unless the peak is greater or NaN
            self.peak = equity
        peak = self.peak
        dd = 1.0 - equity / peak if peak else float(1.0 - np.float64(equity) / peak)  # numpy's x/0: inf or NaN
        if self.max == self.max and not dd <= self.max:  # ndarray.max(): NaN wins
            self.max = dd
        if dd > 0:
            if self._under_since is None:
                self._under_since = self.last_ts
        elif self._under_since is not None:
            self.longest = max(self.longest, ts - self._under_since)
            self._under_since = None
        self.current = dd
        self.last, self.last_ts = equity, ts
        self.count += 1

    def returns(self) -> np.ndarray:
        if self._marks < 2:
            return np.empty(0)
        closes = np.array(self.closes, dtype=np.float64)
        closes = np.append(closes, self._close)
        return closes[1:] / closes[:-1] - 1.0

    def drawdown(self) -> Drawdown:
        if not self.count:
            return Drawdown(0.0, 0, 0.0)
        longest = self.longest if self._under_since is None else max(self.longest, self.last_ts - self._under_since)
        return Drawdown(self.max, longest, self.current)
