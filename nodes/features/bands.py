"""Volatility bands: normalised ATR, true range, Bollinger %B and width, Keltner position and width, squeeze.

Keltner channels are not in TA-Lib; they are composed here from TA-Lib's EMA and TRANGE as
pandas-ta-classic defines them (``ta.kc``: EMA(close) ± k · EMA(true range)), which the tests
use as the reference.
"""

from __future__ import annotations

import numpy as np
from nodes.features.ta import ta as talib

from nodes.features.bars import Bars
from nodes.features.featureset import Bands, _num
from nodes.features.numeric import safe_div

Out = dict[str, np.ndarray]


def compute(bars: Bars, p: Bands, out: Out, t: int = 0) -> None:
    h, lo, c = bars.high, bars.low, bars.close
    ct = c[t:]
    for n in p.natr:
        out[f"natr_{n}"] = talib.NATR(h, lo, c, n)[t:] / 100.0
    tr = talib.TRANGE(h, lo, c) if p.trange or p.keltner is not None else None
    if p.trange:
        out["trange_rel"] = tr[t:] / ct
    for n, k in p.bbands:
        upper, middle, lower = (x[t:] for x in talib.BBANDS(c, n, k, k, 0))
        width = upper - lower
        out[f"bb_pctb_{n}_{_num(k)}"] = safe_div(ct - lower, width, 0.5)
        out[f"bb_width_{n}_{_num(k)}"] = width / middle
    if p.keltner is not None:
        n, k = p.keltner
        basis, band = talib.EMA(c, n)[t:], talib.EMA(tr, n)[t:]
        lower = basis - k * band
        upper = basis + k * band
        out[f"kc_pos_{n}"] = safe_div(ct - lower, upper - lower, 0.5)
        out[f"kc_width_{n}"] = (upper - lower) / basis
        if p.squeeze:
            bb_upper, _, bb_lower = talib.BBANDS(c, n, 2.0, 2.0, 0)
            out[f"squeeze_{n}"] = safe_div(bb_upper[t:] - bb_lower[t:], upper - lower, 1.0)
