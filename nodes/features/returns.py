"""Returns over several horizons and the shape of the bar itself (log ratios: scale-free)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Returns
from nodes.features.numeric import safe_div

if TYPE_CHECKING:
    from nodes.features.kernel import Rows


def compute(x: Rows, p: Returns) -> None:
    b = x.bars
    c = x.rows(b.close)

    def log_ratio(a: np.ndarray, d: np.ndarray, name: str) -> None:
        out = x.col(name)
        np.log(np.divide(a, d, out=x.via(out)), out=out)

    for h in p.horizons:
        log_ratio(c, x.lag(b.close, h), f"ret_{h}")
    if p.bar_shape:
        o, hi, lo = x.rows(b.open), x.rows(b.high), x.rows(b.low)
        log_ratio(c, o, "ret_oc")
        log_ratio(hi, lo, "range_hl")
        log_ratio(hi, np.maximum(o, c), "wick_up")
        log_ratio(np.minimum(o, c), lo, "wick_down")
        pos = x.col("close_pos")
        safe_div(np.subtract(c, lo, out=x.via(pos)), hi - lo, 0.5, out=pos)
