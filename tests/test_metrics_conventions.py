"""performance-monitoring's numbers, each against an independent computation (pandas, by hand).

The convention expected (nodes/trading/metrics.py's docstring): simple daily returns between the last marks of
consecutive FX trading days (Monday to Friday, UTC: the FX weekend is Friday 22:00 to Sunday 22:00, so Monday's
return runs from Friday's last mark to Monday's), risk-free rate 0, annualised by 252 periods a year: Sharpe
mean / sample std (ddof 1) × √252; Sortino mean / √(Σ min(r, 0)² / N) × √252 (target 0, over all N returns); annual
return (Π(1 + r))^(252 / N) − 1; Calmar the annual return over the maximum drawdown of every mark.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework.testing import query
from nodes.trading import metrics as M
from tests.test_performance import DAY, HOUR, MIN, T0, Run, fill, tick

MONDAY = T0  # 2026-11-02T00:00Z


def _weekday_metrics(ts: np.ndarray, equity: np.ndarray) -> dict[str, float]:
    """Every return ratio from first principles, on the last mark of each UTC weekday (Saturdays and Sundays are no
    trading day: their marks close no period)."""
    series = pd.Series(equity, index=pd.to_datetime(ts, unit="ms"))
    closes = series.groupby(series.index.floor("D")).last()
    closes = closes[closes.index.day_of_week < 5]
    r = (closes / closes.shift(1) - 1.0).dropna().to_numpy()
    annual = float(np.prod(1.0 + r) ** (252 / len(r)) - 1.0)
    max_dd = float((1.0 - series / series.cummax()).max())
    return {
        "returns": float(len(r)),
        "sharpe": float(r.mean() / r.std(ddof=1) * math.sqrt(252)),
        "sortino": float(r.mean() / math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(252)),
        "annual_return": annual,
        "calmar": annual / max_dd,
        "max_drawdown": max_dd,
    }


def _fx_week_curve(weeks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly marks every hour of the calendar (the monitor's record timer writes the weekend's too), the equity still
    from Friday 22:00 to Sunday 22:00 UTC."""
    rng = np.random.default_rng(seed)
    ts = MONDAY + np.arange(weeks * 7 * 24, dtype=np.int64) * HOUR
    since_monday = (ts - MONDAY) % (7 * DAY)
    open_market = (since_monday < 4 * DAY + 22 * HOUR) | (since_monday >= 6 * DAY + 22 * HOUR)
    steps = np.where(open_market, rng.normal(0.0001, 0.002, len(ts)), 0.0)
    return ts, 100_000 * np.cumprod(1.0 + steps)


def test_an_fx_curve_with_its_weekends_is_annualised_over_trading_days_only() -> None:
    """A weekend's flat Saturday (and Sunday's two hours) are no trading days: counted as daily returns of 0 they
    shrank Sharpe and Sortino by about √(5/7) and the annual return as if a year were 365 returns of 252."""
    ts, equity = _fx_week_curve(weeks=12, seed=4)
    want = _weekday_metrics(ts, equity)
    got = M.summary(ts, equity, weekdays_only=True)
    assert len(M.period_returns(ts, equity, weekdays_only=True)) == want["returns"] == 12 * 5 - 1
    for name in ("sharpe", "sortino", "annual_return", "calmar", "max_drawdown"):
        assert got[name] == pytest.approx(want[name], rel=1e-12), name
    running = M.RunningCurve(weekdays_only=True)
    for t, e in zip(ts.tolist(), equity.tolist()):
        running.add(t, e)
    assert M.running_summary(running) == got


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_running_curve_of_weekday_returns_equals_the_arrays_bit_for_bit() -> None:
    """RunningCurve's weekday periods: the same floats as summary() over the arrays, weekend points between, before and
    after the weekdays', out of time order and alone included."""
    rng = np.random.default_rng(21)
    for _ in range(3000):
        t, e = MONDAY + int(rng.integers(-3, 4)) * DAY, 100_000.0
        ts, equity = [], []
        for _ in range(int(rng.integers(0, 40))):
            t += int(rng.choice([HOUR, 7 * HOUR, DAY, 2 * DAY, -HOUR]))
            e = e if rng.random() < 0.2 else round(e + float(rng.normal(0, 300)), 2)
            ts.append(t)
            equity.append(e)
        running = M.RunningCurve(weekdays_only=True)
        for point in zip(ts, equity):
            running.add(*point)
        want = M.summary(np.array(ts, dtype=np.int64), np.array(equity), weekdays_only=True)
        got = M.running_summary(running)
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert got[name] == value or (math.isnan(value) and math.isnan(got[name])), (name, ts, equity)
        returns = M.period_returns(np.array(ts, dtype=np.int64), np.array(equity), weekdays_only=True)
        assert np.array_equal(running.returns(), returns)


async def test_the_monitors_metrics_of_a_week_with_a_weekend_equal_weekday_returns(tmp_path: Path) -> None:
    """Long 1 lot of EURUSD from a Thursday to the next Wednesday: the performance_metrics rows and the report equal the
    ratios of the curve's weekday closes, computed here from the portfolio_value rows."""
    thursday = MONDAY + 3 * DAY
    prices = [(thursday + 12 * HOUR, 1.10200), (thursday + DAY + 12 * HOUR, 1.10050), (thursday + DAY + 21 * HOUR, 1.10300),
              (thursday + 3 * DAY + 22 * HOUR + 30 * MIN, 1.09900), (thursday + 4 * DAY + 12 * HOUR, 1.10150),
              (thursday + 5 * DAY + 12 * HOUR, 1.09950), (thursday + 6 * DAY + 12 * HOUR, 1.10400)]  # fmt: skip
    async with Run(tmp_path, record_every="1h", drawdown_limit=None, daily_loss_limit=None, low_sharpe=None) as run:
        await run.feed([tick("EURUSD", thursday + 30 * MIN, 1.10000, 1.10010),
                        fill("b", "EURUSD", "buy", 1.0, 1.10010, thursday + 40 * MIN)])  # fmt: skip
        await run.feed([tick("EURUSD", ts, bid, round(bid + 0.0001, 5)) for ts, bid in prices])
        report = await run.report()
    curve = pd.DataFrame(await query(tmp_path, "SELECT ts, equity FROM portfolio_value FINAL ORDER BY ts"))
    assert {pd.Timestamp(t, unit="ms").day_of_week for t in curve["ts"]} == set(range(7))  # the weekend has its points
    want = _weekday_metrics(curve["ts"].to_numpy(), curve["equity"].to_numpy())
    assert want["returns"] == 4  # Thursday's close → Friday, Monday, Tuesday, Wednesday
    last = await query(tmp_path, "SELECT max(ts) AS ts FROM performance_metrics")
    rows = await query(tmp_path, "SELECT name, value FROM performance_metrics FINAL "
                                 f"WHERE window = 'all' AND ts = {last[0]['ts']}")
    published = {r["name"]: r["value"] for r in rows}
    for name in ("sharpe", "sortino", "annual_return", "calmar", "max_drawdown"):
        assert published[name] == pytest.approx(want[name], rel=1e-9), name
        assert report["metrics"][name] == pytest.approx(want[name], rel=1e-9), name


def test_returns_that_do_not_vary_have_no_sharpe_ratio() -> None:
    """Zero variance leaves the Sharpe ratio undefined (no row, null in a report): identical returns must not give
    the mean over float noise (np.std of [r, r, r] is ~1e-17, not 0, for most r)."""
    returns = np.full(3, 0.1)
    assert float(np.std(returns, ddof=1)) != 0.0  # the trap: the mean of identical floats is not always that float
    assert math.isnan(M.sharpe(returns))
    assert math.isnan(M.sharpe(np.zeros(4)))
    varied = np.array([0.001, 0.002, 0.001])
    assert M.sharpe(varied) == pytest.approx(varied.mean() / varied.std(ddof=1) * math.sqrt(252), rel=1e-12)
