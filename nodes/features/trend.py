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
    np.subtract(np.divide(a, b, out=x.via(out)), 1.0, out=out)


def _aroon_osc(x: Rows, up: np.ndarray, down: np.ndarray, n: int) -> np.ndarray:
    """TA-Lib's AROONOSC from AROON's outputs, to the bit, without a second pass over the bars.

    Both functions track the same highest high and lowest low (the same code, ties to the latest bar);
    with ``factor = 100 / n``, AROON returns ``factor * (n - bars since each)`` and AROONOSC
    ``factor * (index of the high - index of the low)``. The two integers are recovered exactly
    (rounding the ratio of values at most a few ulps off an integer) and their difference is
    multiplied by the same ``factor``: the same correctly rounded product as TA-Lib's."""
    factor = 100.0 / n
    bars = np.rint(np.divide(np.subtract(up, down, out=x.scratch), factor, out=x.scratch), out=x.scratch)
    return np.multiply(factor, bars, out=bars)


def compute(x: Rows, p: Trend) -> None:
    b = x.bars
    c, h, lo = b.close, b.high, b.low
    ct = x.rows(c)
    sma: dict[int, np.ndarray] = {}
    for kind, fn, periods in (("sma", talib.SMA, p.sma), ("ema", talib.EMA, p.ema)):
        for n in periods:
            if kind == "sma" and n in x.bbands:  # the middle band of the bands group's call, shared with it
                k = x.bbands[n]
                _, ma, earlier, _ = x.running(talib.BBANDS, (c,), n, k, k, 0, lags=(0, p.slope_lag), lagged=(1,), share=True)
            else:
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
        diff = x.col(f"di_diff_{n}")
        np.divide(np.subtract(plus, minus, out=x.via(diff)), 100.0, out=diff)
        np.divide(plus, 100.0, out=x.col(f"plus_di_{n}"))
        np.divide(minus, 100.0, out=x.col(f"minus_di_{n}"))
    if p.aroon is not None:
        n = p.aroon
        down, up = x.local(talib.AROON, (h, lo), n, lookback=n)
        np.divide(up, 100.0, out=x.col(f"aroon_up_{n}"))
        np.divide(down, 100.0, out=x.col(f"aroon_down_{n}"))
        np.divide(_aroon_osc(x, up, down, n), 100.0, out=x.col(f"aroon_osc_{n}"))
    if p.linreg is not None:
        x.running(talib.LINEARREG_SLOPE, (c,), p.linreg, out=(x.col(f"linreg_slope_{p.linreg}"),), over=ct)
