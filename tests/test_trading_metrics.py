"""Performance metrics against independent references: empyrical (returns ratios) and backtesting.py (drawdown, trades)."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from nodes.trading import metrics as M

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _equity(seed: int, days: int = 300, per_day: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(days * per_day, dtype=np.int64) * (M.DAY_MS // per_day)
    equity = 100_000 * np.cumprod(1 + rng.normal(0.0002, 0.004, len(ts)))
    return ts, equity


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_return_ratios_equal_empyricals(seed: int) -> None:
    ts, equity = _equity(seed)
    returns = M.period_returns(ts, equity)
    daily = pd.Series(equity, index=pd.to_datetime(ts, unit="ms")).resample("D").last().pct_change().dropna()
    assert np.allclose(returns, daily.to_numpy(), rtol=0, atol=1e-15)
    assert M.sharpe(returns) == pytest.approx(empyrical.sharpe_ratio(daily), rel=1e-12)
    assert M.sortino(returns) == pytest.approx(empyrical.sortino_ratio(daily), rel=1e-12)
    assert M.annual_return(returns) == pytest.approx(empyrical.annual_return(daily), rel=1e-12)
    dd = M.drawdown(ts, equity)
    assert M.calmar(returns, dd.max) == pytest.approx(empyrical.annual_return(daily) / dd.max, rel=1e-12)


def test_calmar_uses_the_drawdown_of_every_mark() -> None:
    ts, equity = _equity(4)
    returns = M.period_returns(ts, equity)
    dd = M.drawdown(ts, equity)
    assert M.calmar(returns, dd.max) == pytest.approx(empyrical.annual_return(returns) / dd.max, rel=1e-12)
    daily_dd = -empyrical.max_drawdown(pd.Series(equity).pct_change().dropna())  # every mark, as ours
    assert dd.max == pytest.approx(daily_dd, rel=1e-12)


@pytest.mark.parametrize("seed", [5, 6])
def test_drawdown_and_its_duration_equal_backtesting_py(seed: int) -> None:
    from backtesting._stats import compute_drawdown_duration_peaks

    ts, equity = _equity(seed, days=120)
    index = pd.to_datetime(ts, unit="ms")
    dd_series = pd.Series(1 - equity / np.maximum.accumulate(equity), index=index)
    durations, _ = compute_drawdown_duration_peaks(dd_series)
    ours = M.drawdown(ts, equity)
    assert ours.max == pytest.approx(dd_series.max(), rel=1e-12)
    assert ours.max_duration_ms == int(durations.max() / pd.Timedelta(milliseconds=1))


def test_trade_statistics() -> None:
    stats = M.trade_stats([120.5, -40.0, 0.0, 60.0, -20.25])
    assert stats.trades == 5 and stats.win_rate == pytest.approx(0.4)
    assert stats.profit_factor == pytest.approx(180.5 / 60.25) and stats.expectancy == pytest.approx(120.25 / 5)
    assert math.isinf(M.trade_stats([1.0]).profit_factor) and math.isnan(M.trade_stats([]).win_rate)
    assert M.pnl_by_symbol([{"symbol": "XAUUSD", "pnl": 2}, {"symbol": "EURUSD", "pnl": 1}, {"symbol": "XAUUSD", "pnl": -5}]) == {
        "EURUSD": 1.0, "XAUUSD": -3.0}


def test_summary_names_every_metric() -> None:
    ts, equity = _equity(7, days=30)
    s = M.summary(ts, equity, [10.0, -5.0])
    assert set(s) >= {"sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_duration_ms", "win_rate", "profit_factor", "expectancy"}
    assert s["equity"] == equity[-1] and s["trades"] == 2


def test_a_curve_marked_one_point_at_a_time_has_the_curves_drawdowns() -> None:
    """performance-monitoring marks a point at a time (drawdown_from); the report's curve (drawdown_curve) must agree bit for bit."""
    rng = np.random.default_rng(5)
    equity = 100_000 * np.cumprod(1 + rng.normal(0, 0.003, 5_000))
    peak = -math.inf
    one_by_one = []
    for value in equity.tolist():
        peak = max(peak, value)
        one_by_one.append(M.drawdown_from(peak, value))
    assert np.array_equal(np.array(one_by_one), M.drawdown_curve(equity))
