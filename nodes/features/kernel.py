"""The kernel: every kernel-group feature of one (symbol, timeframe) over a window of bars.

Causal by construction (TA-Lib running computations and elementwise numpy from the window's
first bar), so row i of the result depends only on the window's start and bars <= i. The
anchored windows of :mod:`nodes.features.windows` rely on exactly that.
"""

from __future__ import annotations

import numpy as np

from nodes.features import activity, bands, crosspair, momentum, returns, trend, volatility
from nodes.features.bars import Bars
from nodes.features.featureset import ResolvedFeatureSet

_SIMPLE = {"returns": returns, "volatility": volatility, "trend": trend, "momentum": momentum, "bands": bands, "activity": activity}


def kernel(fs: ResolvedFeatureSet, bars: Bars, basket: np.ndarray, gold: np.ndarray, last: int | None = None) -> np.ndarray:
    """A (len(bars), len(fs.kernel_names)) float64 matrix, NaN where a feature is not defined yet;
    only its ``last`` rows when given (a streaming update needs one)."""
    out: dict[str, np.ndarray] = {}
    groups = fs.params.groups
    t = len(bars) - last if last is not None else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, module in _SIMPLE.items():
            group = getattr(groups, name)
            if group is not None:
                module.compute(bars, group, out, t)
        if groups.crosspair is not None:
            crosspair.compute(bars, basket, gold, groups.crosspair, out, t)
        for name, fn in fs.extra.items():
            out[name] = fn(bars)[t:]
    names = fs.kernel_names
    if len(out) != len(names):
        missing = sorted(set(names) - set(out)) or sorted(set(out) - set(names))
        raise AssertionError(f"kernel and feature names disagree: {missing}")
    # one copy into a (features, rows) block whose transpose is the (rows, features) matrix, column-major
    return np.concatenate([out[name] for name in names]).reshape(len(names), len(bars) - t).T
