"""Causal array helpers of the kernel: element i depends on elements <= i only.

Every helper is elementwise numpy (whose results do not depend on an element's position in its
array, nor on how many elements are computed at once) or carries values forward within the
array it is given, so the kernel can apply them to a window, to a run of rows or to one row and
get the same bits. :func:`lag_log_ratio` taking ``t`` returns rows ``t..`` only.
"""

from __future__ import annotations

import numpy as np

Z_FLOOR = 1e-7
"""A z-score's standard deviation at or below this fraction of the mean's magnitude counts as zero
(a constant series): the z-score is then 0, not the noise of a running sum's rounding."""


def nans(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def lag_log_ratio(x: np.ndarray, k: int, t: int = 0) -> np.ndarray:
    """log(x[i] / x[i-k]) for i >= t; NaN where i < k."""
    n = len(x)
    out = nans(n - t)
    first = max(t, k)
    if first < n:
        out[first - t :] = np.log(x[first:] / x[first - k : n - k])
    return out


def shift(x: np.ndarray, k: int = 1) -> np.ndarray:
    out = nans(len(x))
    if k < len(x):
        out[k:] = x[:-k]
    return out


def safe_div(a: np.ndarray, b: np.ndarray, default: float, out: np.ndarray | None = None) -> np.ndarray:
    """a / b, ``default`` where b is 0; NaN stays NaN (warm-up). ``out`` may be ``a`` or ``b``."""
    zero = b == 0
    if not zero.any():
        return np.divide(a, b, out=out)  # a NaN operand gives NaN
    zero &= ~np.isnan(a)  # NaN / 0 stays NaN
    out = np.divide(a, b, out=out)
    np.copyto(out, default, where=zero)
    return out


def zscore(x: np.ndarray, mean: np.ndarray, std: np.ndarray, out: np.ndarray) -> None:
    """(x - mean) / std into ``out`` (the rolling SMA and STDDEV of ``x`` given), 0 where the window
    is constant, NaN where either is not defined yet."""
    out[:] = 0.0
    live = std > Z_FLOOR * np.abs(mean)
    np.divide(x - mean, std, out=out, where=live)
    nan = np.isnan(mean)
    nan |= np.isnan(std)
    np.copyto(out, np.nan, where=nan)


def ffill_known(x: np.ndarray, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """x with NaNs replaced by the last known value before them (``fill`` before the first), and
    the mask of known values; only earlier elements of the window are used."""
    known = ~np.isnan(x)
    if known.all():
        return x, known
    index = np.where(known, np.arange(len(x)), -1)
    np.maximum.accumulate(index, out=index)
    out = np.where(index >= 0, x[np.maximum(index, 0)], fill)
    return out, known
