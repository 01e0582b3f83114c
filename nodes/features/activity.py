"""Activity without volume: tick counts and spread statistics as z-scores and ratios.

FX has no real volume; the aggregator's tick count and spread statistics stand in. Bars without
spreads (downloaded ones) carry the last known spread forward within the window (0 before
any) and ``spread_known`` = 0, so a row never waits for a spread a source will not send.
"""

from __future__ import annotations

import numpy as np

from nodes.features.bars import Bars
from nodes.features.featureset import Activity
from nodes.features.numeric import ffill_known, safe_div, zscore

Out = dict[str, np.ndarray]


def compute(bars: Bars, p: Activity, out: Out, t: int = 0) -> None:
    ticks = np.log1p(bars.ticks)
    for n in p.windows:
        out[f"ticks_z_{n}"] = zscore(ticks, n, t)
    if p.spread:
        spread, known = ffill_known(bars.spread)
        smin, _ = ffill_known(bars.spread_min)
        smax, _ = ffill_known(bars.spread_max)
        rel = spread / bars.close
        out["spread_rel"] = rel[t:] * 1e4
        for n in p.windows:
            out[f"spread_z_{n}"] = zscore(rel, n, t)
        out["spread_range"] = safe_div(smax[t:] - smin[t:], spread[t:], 0.0)
        out["spread_known"] = known[t:].astype(np.float64)
