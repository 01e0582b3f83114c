"""Momentum oscillators (RSI, stochastic, CCI, Williams %R, ROC, MOM, ULTOSC, CMO, TRIX, BOP), scaled to ~unit range."""

from __future__ import annotations

import numpy as np
from nodes.features.ta import ta as talib

from nodes.features.bars import Bars
from nodes.features.featureset import Momentum

Out = dict[str, np.ndarray]


def compute(bars: Bars, p: Momentum, out: Out, t: int = 0) -> None:
    o, h, lo, c = bars.open, bars.high, bars.low, bars.close
    for n in p.rsi:
        out[f"rsi_{n}"] = talib.RSI(c, n)[t:] / 100.0
    if p.stoch is not None:
        fastk, slowk, slowd = p.stoch
        k, d = talib.STOCH(h, lo, c, fastk_period=fastk, slowk_period=slowk, slowk_matype=0, slowd_period=slowd, slowd_matype=0)
        out["stoch_k"], out["stoch_d"] = k[t:] / 100.0, d[t:] / 100.0
    if p.cci is not None:
        out[f"cci_{p.cci}"] = talib.CCI(h, lo, c, p.cci)[t:] / 100.0
    if p.willr is not None:
        out[f"willr_{p.willr}"] = talib.WILLR(h, lo, c, p.willr)[t:] / 100.0
    for n in p.roc:
        out[f"roc_{n}"] = talib.ROCR(c, n)[t:] - 1.0
    for n in p.mom:
        out[f"mom_{n}"] = talib.MOM(c, n)[t:] / c[t:]
    if p.ultosc is not None:
        out["ultosc"] = talib.ULTOSC(h, lo, c, *p.ultosc)[t:] / 100.0
    if p.cmo is not None:
        out[f"cmo_{p.cmo}"] = talib.CMO(c, p.cmo)[t:] / 100.0
    if p.trix is not None:
        out[f"trix_{p.trix}"] = talib.TRIX(c, p.trix)[t:] / 100.0
    if p.bop:
        out["bop"] = talib.BOP(o[t:], h[t:], lo[t:], c[t:])
