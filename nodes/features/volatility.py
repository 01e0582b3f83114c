"""Realized volatility per bar: close-to-close, Parkinson (high/low), Garman-Klass (OHLC)."""

from __future__ import annotations

import numpy as np
from nodes.features.ta import ta as talib

from nodes.features.bars import Bars
from nodes.features.featureset import Volatility
from nodes.features.numeric import lag_log_ratio, safe_div

Out = dict[str, np.ndarray]
_PK = 1.0 / (4.0 * np.log(2.0))
_GK = 2.0 * np.log(2.0) - 1.0


def compute(bars: Bars, p: Volatility, out: Out, t: int = 0) -> None:
    hl2 = np.log(bars.high / bars.low) ** 2
    if "cc" in p.estimators:
        lr = lag_log_ratio(bars.close, 1)
        for n in p.windows:
            out[f"rv_cc_{n}"] = talib.STDDEV(lr, n)[t:]
    if "pk" in p.estimators:
        for n in p.windows:
            out[f"rv_pk_{n}"] = np.sqrt(talib.SMA(hl2, n)[t:] * _PK)
    if "gk" in p.estimators:
        gk = 0.5 * hl2 - _GK * np.log(bars.close / bars.open) ** 2
        for n in p.windows:
            out[f"rv_gk_{n}"] = np.sqrt(np.maximum(talib.SMA(gk, n)[t:], 0.0))
    if p.ratio is not None:
        a, b = p.ratio
        out[f"rv_ratio_{a}_{b}"] = safe_div(out[f"rv_cc_{a}"], out[f"rv_cc_{b}"], 1.0)
