"""Returns over several horizons and the shape of the bar itself (log ratios: scale-free)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Returns
from nodes.features.numeric import safe_div

if TYPE_CHECKING:
    from nodes.features.kernel import Rows


def compute(x: Rows, p: Returns) -> None:
    b, tmp = x.bars, x.scratch
    c = x.rows(b.close)
    for h in p.horizons:
        np.log(np.divide(c, x.lag(b.close, h), out=tmp), out=x.col(f"ret_{h}"))
    if p.bar_shape:
        o, hi, lo = x.rows(b.open), x.rows(b.high), x.rows(b.low)
        np.log(np.divide(c, o, out=tmp), out=x.col("ret_oc"))
        np.log(np.divide(hi, lo, out=tmp), out=x.col("range_hl"))
        np.log(np.divide(hi, np.maximum(o, c), out=tmp), out=x.col("wick_up"))
        np.log(np.divide(np.minimum(o, c), lo, out=tmp), out=x.col("wick_down"))
        safe_div(np.subtract(c, lo, out=tmp), hi - lo, 0.5, out=x.col("close_pos"))
