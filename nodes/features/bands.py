"""Volatility bands: normalised ATR, true range, Bollinger %B and width, Keltner position and width, squeeze.

Keltner channels are not in TA-Lib; they are composed here from TA-Lib's EMA and TRANGE as
pandas-ta-classic defines them (``ta.kc``: EMA(close) ± k · EMA(true range)), which the tests
use as the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Bands, _num
from nodes.features.numeric import safe_div
from nodes.features.ta import ta as talib

if TYPE_CHECKING:
    from nodes.features.kernel import Rows


def compute(x: Rows, p: Bands) -> None:
    b = x.bars
    h, lo, c = b.high, b.low, b.close
    ct = x.rows(c)
    for n in p.natr:
        x.running(talib.NATR, (h, lo, c), n, out=(x.col(f"natr_{n}"),), over=100.0)
    tr = talib.TRANGE(h, lo, c) if p.trange or p.keltner is not None else None
    if p.trange:
        np.divide(x.rows(tr), ct, out=x.col("trange_rel"))
    widths: dict[tuple[int, float], np.ndarray] = {}
    for n, k in p.bbands:
        upper, middle, lower = x.running(talib.BBANDS, (c,), n, k, k, 0, share=True)
        width = widths[(n, k)] = upper - lower
        pctb = x.col(f"bb_pctb_{n}_{_num(k)}")
        safe_div(np.subtract(ct, lower, out=x.via(pctb)), width, 0.5, out=pctb)
        np.divide(width, middle, out=x.col(f"bb_width_{n}_{_num(k)}"))
    if p.keltner is not None:
        n, k = p.keltner
        (basis,) = x.running(talib.EMA, (c,), n)
        (band,) = x.running(talib.EMA, (tr,), n, lead=1)
        offset = np.multiply(band, k, out=band)
        lower = basis - offset
        width = np.subtract(np.add(basis, offset, out=offset), lower, out=offset)
        pos = x.col(f"kc_pos_{n}")
        safe_div(np.subtract(ct, lower, out=x.via(pos)), width, 0.5, out=pos)
        np.divide(width, basis, out=x.col(f"kc_width_{n}"))
        if p.squeeze:
            bb_width = widths.get((n, 2.0))
            if bb_width is None:
                bb_upper, _, bb_lower = x.running(talib.BBANDS, (c,), n, 2.0, 2.0, 0, share=True)
                bb_width = bb_upper - bb_lower
            safe_div(bb_width, width, 1.0, out=x.col(f"squeeze_{n}"))
