"""Causal array helpers of the kernel: element i depends on elements <= i only.

Every helper is elementwise numpy or a TA-Lib running computation started at the window's first
element, so a row's value depends only on the window's start and the bars up to the row: the
property that makes the batch and streaming evaluations of a row the same bits. Helpers taking
``t`` return rows ``t..`` only: running computations still start at the window's first element,
the elementwise finish is done on the rows kept (numpy's elementwise results do not depend on an
element's position in its array, so this changes no bit and saves the work on the warm-up rows).
"""

from __future__ import annotations

import numpy as np
from nodes.features.ta import ta as talib

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


def lag_ratio(x: np.ndarray, k: int, t: int = 0) -> np.ndarray:
    """x[i] / x[i-k] - 1 for i >= t; NaN where i < k (and where x[i-k] is NaN)."""
    n = len(x)
    out = nans(n - t)
    first = max(t, k)
    if first < n:
        r = x[first:] / x[first - k : n - k]
        r -= 1.0
        out[first - t :] = r
    return out


def shift(x: np.ndarray, k: int = 1) -> np.ndarray:
    out = nans(len(x))
    if k < len(x):
        out[k:] = x[:-k]
    return out


def safe_div(a: np.ndarray, b: np.ndarray, default: float) -> np.ndarray:
    """a / b, ``default`` where b is 0; NaN stays NaN (warm-up)."""
    out = np.full(np.broadcast(a, b).shape, default)
    np.divide(a, b, out=out, where=b != 0)
    nan = np.isnan(a) | np.isnan(b)
    out[nan] = np.nan
    return out


def zscore(x: np.ndarray, n: int, t: int = 0) -> np.ndarray:
    """(x - SMA(x, n)) / STDDEV(x, n) for rows >= t, 0 where the window is constant."""
    mean = talib.SMA(x, n)[t:]
    std = talib.STDDEV(x, n)[t:]
    x = x[t:]
    out = np.zeros(len(x))
    live = std > Z_FLOOR * np.abs(mean)
    np.divide(x - mean, std, out=out, where=live)
    out[np.isnan(mean) | np.isnan(std)] = np.nan
    return out


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
