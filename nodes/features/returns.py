"""Returns over several horizons and the shape of the bar itself (log ratios: scale-free)."""

from __future__ import annotations

import numpy as np

from nodes.features.bars import Bars
from nodes.features.featureset import Returns
from nodes.features.numeric import lag_log_ratio, safe_div

Out = dict[str, np.ndarray]


def compute(bars: Bars, p: Returns, out: Out, t: int = 0) -> None:
    c = bars.close
    for h in p.horizons:
        out[f"ret_{h}"] = lag_log_ratio(c, h, t)
    if p.bar_shape:
        o, hi, lo, c = bars.open[t:], bars.high[t:], bars.low[t:], c[t:]
        out["ret_oc"] = np.log(c / o)
        out["range_hl"] = np.log(hi / lo)
        out["wick_up"] = np.log(hi / np.maximum(o, c))
        out["wick_down"] = np.log(np.minimum(o, c) / lo)
        out["close_pos"] = safe_div(c - lo, hi - lo, 0.5)
