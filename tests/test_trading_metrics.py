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


def _random_curve(rng: np.random.Generator, wild: bool) -> tuple[list[int], list[float]]:
    """Points as a monitor records them, or (``wild``) with repeated and earlier times, a zero, -0.0, NaN and sign flips."""
    ts, equity = [], []
    t, e = T0 + int(rng.integers(-10**9, 10**9)), float(rng.choice([100_000.0, 1.0, 0.0, -5.0] if wild else [100_000.0]))
    for _ in range(int(rng.integers(0, 80))):
        t += int(rng.choice([60_000, 60_000, 3_600_000, M.DAY_MS] + ([0, -60_000] if wild else [])))
        r = rng.random()
        if wild and r < 0.03:
            e = 0.0
        elif wild and r < 0.05:
            e = -0.0 if r < 0.04 else math.nan
        elif wild and r < 0.06:
            e = -e
        elif r > 0.1:
            e = round(e + float(rng.normal(0, 50)), 2)
        ts.append(t)
        equity.append(e)
    return ts, equity


def _outcome(f):  # type: ignore[no-untyped-def]
    try:
        return f()
    except Exception as exc:  # the array functions raise on some wild curves (an overflowing annual return): so must the running ones
        return type(exc)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("wild", [False, True])
def test_a_running_curve_gives_the_summary_of_its_points_bit_for_bit(wild: bool) -> None:
    """RunningCurve (the monitor's whole-curve metrics, point by point) equals summary() over the arrays: every value the
    same float (NaN where it is NaN), every failure the same, over thousands of random curves."""
    rng = np.random.default_rng(11 if wild else 12)
    compared = 0
    for _ in range(4000):
        ts, equity = _random_curve(rng, wild)
        pnls = rng.normal(0, 10, int(rng.integers(0, 5)))
        running = M.RunningCurve()
        for t, e in zip(ts, equity):
            running.add(t, e)
        expected = _outcome(lambda: M.summary(np.array(ts, dtype=np.int64), np.array(equity, dtype=np.float64), pnls))
        got = _outcome(lambda: M.running_summary(running, pnls))
        if isinstance(expected, type):
            assert got is expected
            continue
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for name, value in expected.items():
            assert (got[name] == value and type(got[name]) is type(value)) or (math.isnan(value) and math.isnan(got[name])), (name, ts, equity)
        returns = M.period_returns(np.array(ts, dtype=np.int64), np.array(equity, dtype=np.float64))
        assert np.array_equal(running.returns(), returns, equal_nan=True)
        compared += 1
    assert compared > 3000


def test_a_running_curve_keeps_a_fall_open_until_the_peak_is_regained() -> None:
    running = M.RunningCurve()
    for t, e in [(0, 100.0), (10, 90.0), (20, 95.0), (30, 100.0), (40, 80.0), (45, 85.0)]:
        running.add(t, e)
    dd = running.drawdown()
    assert dd.max == pytest.approx(0.2) and dd.current == pytest.approx(0.15)
    assert dd.max_duration_ms == 30  # 0 -> 30 regained; the open fall from 30 lasts 15 so far
    running.add(100, 79.0)
    assert running.drawdown().max_duration_ms == 70
