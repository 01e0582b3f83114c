"""Trend: distances to and slopes of moving averages, MACD, ADX/DI, Aroon, regression slope.

Prices enter as ratios (close / MA - 1, MACD / close), oscillators on 0..1 (TA-Lib's 0..100 / 100),
so one model can pool pairs quoted on very different scales.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Trend
from nodes.features.ta import ta as talib

if TYPE_CHECKING:
    from nodes.features.kernel import Rows


def _ratio(x: Rows, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """a / b - 1"""
    np.subtract(np.divide(a, b, out=x.scratch), 1.0, out=out)


def compute(x: Rows, p: Trend) -> None:
    b = x.bars
    c, h, lo = b.close, b.high, b.low
    ct = x.rows(c)
    sma: dict[int, np.ndarray] = {}
    for kind, fn, periods in (("sma", talib.SMA, p.sma), ("ema", talib.EMA, p.ema)):
        for n in periods:
            ma, earlier = x.running(fn, (c,), n, lags=(0, p.slope_lag))
            _ratio(x, ct, ma, x.col(f"{kind}_dist_{n}"))
            _ratio(x, ma, earlier, x.col(f"{kind}_slope_{n}"))
            if kind == "sma":
                sma[n] = ma
    for a, z in p.crosses:
        _ratio(x, sma[a], sma[z], x.col(f"sma_cross_{a}_{z}"))
    if p.macd is not None:
        x.running(talib.MACD, (c,), *p.macd, out=(x.col("macd"), x.col("macd_signal"), x.col("macd_hist")), over=ct)
    if p.adx is not None:
        n = p.adx
        x.running(talib.ADX, (h, lo, c), n, out=(x.col(f"adx_{n}"),), over=100.0)
        (plus,) = x.running(talib.PLUS_DI, (h, lo, c), n)
        (minus,) = x.running(talib.MINUS_DI, (h, lo, c), n)
        np.divide(np.subtract(plus, minus, out=x.scratch), 100.0, out=x.col(f"di_diff_{n}"))
        np.divide(plus, 100.0, out=x.col(f"plus_di_{n}"))
        np.divide(minus, 100.0, out=x.col(f"minus_di_{n}"))
    if p.aroon is not None:
        n = p.aroon
        down, up = x.local(talib.AROON, (h, lo), n, lookback=n)
        np.divide(up, 100.0, out=x.col(f"aroon_up_{n}"))
        np.divide(down, 100.0, out=x.col(f"aroon_down_{n}"))
        np.divide(x.local(talib.AROONOSC, (h, lo), n, lookback=n), 100.0, out=x.col(f"aroon_osc_{n}"))
    if p.linreg is not None:
        x.running(talib.LINEARREG_SLOPE, (c,), p.linreg, out=(x.col(f"linreg_slope_{p.linreg}"),), over=ct)
