"""Multi-timeframe context: a higher timeframe's features of its last bar closed strictly before a row's close.

"Strictly before" makes the value independent of the order in which bars of different
timeframes closing at the same instant arrive (the 1h bar closing at 11:00 is not used by the
1m bar closing at 11:00; the one closing at 10:00 is), so batch and streaming agree. A higher
bar whose window is incomplete, or whose selected features are not all finite, gives NaN: the
row waits for the higher timeframe's warm-up.
"""

from __future__ import annotations

import numpy as np


def lookup(ts_close: np.ndarray, values: np.ndarray, ok: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Rows of ``values`` (n × F, with their closes ``ts_close`` sorted and usability ``ok``) as of each ``at``."""
    result = np.full((len(at), values.shape[1]), np.nan)
    if not len(ts_close):
        return result
    j = np.searchsorted(ts_close, at, side="left") - 1
    jj = np.maximum(j, 0)
    usable = (j >= 0) & ok[jj]
    result[usable] = values[jj[usable]]
    return result
