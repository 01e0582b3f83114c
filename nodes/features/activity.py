"""Activity without volume: tick counts and spread statistics as z-scores and ratios.

FX has no real volume; the aggregator's tick count and spread statistics stand in. Bars without
spreads (downloaded ones) carry the last known spread forward within the window (0 before
any) and ``spread_known`` = 0, so a row never waits for a spread a source will not send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Activity
from nodes.features.numeric import ffill_known, safe_div, zscore
from nodes.features.ta import ta as talib

if TYPE_CHECKING:
    from nodes.features.kernel import Rows


def _carried(x: Rows, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``spread`` carried forward over the whole span and where it is known, or None when that is
    not what carrying it forward within every window gives (a window starts on an unknown spread
    with a known one before it)."""
    filled, known = ffill_known(spread)
    if filled is not spread and known.any():
        first = int(np.argmax(known))
        if any(start > first and not known[start] for start, _, _ in x.segments):
            return None
    return filled, known


def compute(x: Rows, p: Activity) -> None:
    b = x.bars
    if p.windows:
        ticks = np.log1p(b.ticks)
        for n in p.windows:
            mean, std = x.running(talib.SMA, (ticks,), n) + x.running(talib.STDDEV, (ticks,), n)
            zscore(x.rows(ticks), mean, std, x.col(f"ticks_z_{n}"))
    if not p.spread:
        return
    cols = {n: x.col(f"spread_z_{n}") for n in p.windows}
    rel_out, range_out, known_out = x.col("spread_rel"), x.col("spread_range"), x.col("spread_known")
    carried = [_carried(x, s) for s in (b.spread, b.spread_min, b.spread_max)]
    if carried[0] is not None and carried[1] is not None and carried[2] is not None:
        (spread, known), (smin, _), (smax, _) = carried
        rel = spread / b.close
        np.multiply(x.rows(rel), 1e4, out=rel_out)
        for n, out in cols.items():
            mean, std = x.running(talib.SMA, (rel,), n) + x.running(talib.STDDEV, (rel,), n)
            zscore(x.rows(rel), mean, std, out)
        safe_div(x.rows(smax) - x.rows(smin), x.rows(spread), 0.0, out=range_out)
        known_out[:] = x.rows(known)
        return
    for start, lo, hi in x.segments:  # each window carries its own spreads forward
        t, rows = lo - start, slice(lo - x.lo, hi - x.lo)
        spread, known = ffill_known(b.spread[start:hi])
        smin, _ = ffill_known(b.spread_min[start:hi])
        smax, _ = ffill_known(b.spread_max[start:hi])
        rel = spread / b.close[start:hi]
        rel_out[rows] = rel[t:] * 1e4
        for n, out in cols.items():
            zscore(rel[t:], talib.SMA(rel, n)[t:], talib.STDDEV(rel, n)[t:], out[rows])
        range_out[rows] = safe_div(smax[t:] - smin[t:], spread[t:], 0.0)
        known_out[rows] = known[t:]
