"""Trend: distances to and slopes of moving averages, MACD, ADX/DI, Aroon, regression slope.

Prices enter as ratios (close / MA - 1, MACD / close), oscillators on 0..1 (TA-Lib's 0..100 / 100),
so one model can pool pairs quoted on very different scales.
"""

from __future__ import annotations

import numpy as np
from nodes.features.ta import ta as talib

from nodes.features.bars import Bars
from nodes.features.featureset import Trend
from nodes.features.numeric import lag_ratio

Out = dict[str, np.ndarray]


def _dist(c: np.ndarray, ma: np.ndarray) -> np.ndarray:
    out = c / ma
    out -= 1.0
    return out


def compute(bars: Bars, p: Trend, out: Out, t: int = 0) -> None:
    c, h, lo = bars.close, bars.high, bars.low
    ct = c[t:]
    sma = {n: talib.SMA(c, n) for n in p.sma}
    for n, ma in sma.items():
        out[f"sma_dist_{n}"] = _dist(ct, ma[t:])
    for n, ma in sma.items():
        out[f"sma_slope_{n}"] = lag_ratio(ma, p.slope_lag, t)
    ema = {n: talib.EMA(c, n) for n in p.ema}
    for n, ma in ema.items():
        out[f"ema_dist_{n}"] = _dist(ct, ma[t:])
    for n, ma in ema.items():
        out[f"ema_slope_{n}"] = lag_ratio(ma, p.slope_lag, t)
    for a, b in p.crosses:
        out[f"sma_cross_{a}_{b}"] = _dist(sma[a][t:], sma[b][t:])
    if p.macd is not None:
        macd, signal, hist = talib.MACD(c, *p.macd)
        out["macd"], out["macd_signal"], out["macd_hist"] = macd[t:] / ct, signal[t:] / ct, hist[t:] / ct
    if p.adx is not None:
        n = p.adx
        plus, minus = talib.PLUS_DI(h, lo, c, n)[t:], talib.MINUS_DI(h, lo, c, n)[t:]
        out[f"adx_{n}"] = talib.ADX(h, lo, c, n)[t:] / 100.0
        out[f"plus_di_{n}"], out[f"minus_di_{n}"] = plus / 100.0, minus / 100.0
        out[f"di_diff_{n}"] = (plus - minus) / 100.0
    if p.aroon is not None:
        n = p.aroon
        down, up = talib.AROON(h, lo, n)
        out[f"aroon_up_{n}"], out[f"aroon_down_{n}"] = up[t:] / 100.0, down[t:] / 100.0
        out[f"aroon_osc_{n}"] = talib.AROONOSC(h, lo, n)[t:] / 100.0
    if p.linreg is not None:
        out[f"linreg_slope_{p.linreg}"] = talib.LINEARREG_SLOPE(c, p.linreg)[t:] / ct
