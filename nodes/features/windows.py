"""Anchored-window evaluation: why batch and streaming give the same bits.

Rows of a (symbol, timeframe) are grouped in blocks of B bars anchored on time
(``block = ts // (B * timeframe)``). Every row of a block is computed by the kernel over the
same input window: the W bars before the block's first bar, then the block's bars up to the
row. The kernel is causal (TA-Lib running computations and elementwise numpy, started at the
window's first bar), so a row depends only on that window:

- batch runs the kernel once per block over ``[block start - W, block end)`` and keeps the
  block's rows: about (W + B) / B times the cost of the kernel alone;
- streaming runs it for each new bar over ``[block start - W, bar]`` and keeps the last row.

Same start, same bars, same operations: the same bits. A block whose start has fewer than W
bars before it (the beginning of the history) is *incomplete*: its rows are never published,
since their values would depend on where the history happens to begin.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nodes.features.bars import Bars
from nodes.features.featureset import ResolvedFeatureSet
from nodes.features.kernel import kernel


def block_ids(ts: np.ndarray, block: int, timeframe_ms: int) -> np.ndarray:
    return ts // (block * timeframe_ms)


def block_bounds(ts: np.ndarray, block: int, timeframe_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """First index and end (exclusive) of every block of the sorted ``ts``."""
    if not len(ts):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ids = block_ids(ts, block, timeframe_ms)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return starts, np.r_[starts[1:], len(ts)]


def batch_blocks(
    fs: ResolvedFeatureSet, bars: Bars, basket: np.ndarray, gold: np.ndarray, timeframe_ms: int, *, rows: int = 65_536, width: int = 0
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(start, stop, kernel rows, complete)`` for consecutive runs of whole blocks of about ``rows`` rows.

    The kernel's columns come first in a matrix of ``width`` columns (at least the kernel's), so
    the caller can add its joined columns in place."""
    W = fs.history
    starts, ends = block_bounds(bars.ts, fs.block, timeframe_ms)
    k = len(fs.kernel_names)
    width = max(width, k)
    i = 0
    while i < len(starts):
        j = i
        while j < len(starts) and ends[j] - starts[i] < rows:
            j += 1
        j = max(j, i + 1)
        lo, hi = int(starts[i]), int(ends[j - 1])
        matrix = np.full((hi - lo, width), np.nan, order="F")
        complete = np.zeros(hi - lo, dtype=bool)
        for b in range(i, j):
            i0, i1 = int(starts[b]), int(ends[b])
            s = i0 - W
            if s < 0:
                continue
            matrix[i0 - lo : i1 - lo, :k] = kernel(fs, bars.slice(s, i1), basket[s:i1], gold[s:i1], last=i1 - i0)
            complete[i0 - lo : i1 - lo] = True
        yield lo, hi, matrix, complete
        i = j
