"""Anchored-window evaluation: why batch and streaming give the same bits.

Rows of a (symbol, timeframe) are grouped in blocks of B bars anchored on time
(``block = ts // (B * timeframe)``). Every row of a block is computed by the kernel over the
same input window: the W bars before the block's first bar, then the block's bars up to the
row. The kernel is causal (TA-Lib running computations and elementwise numpy, started at the
window's first bar), so a row depends only on that window:

- batch runs the kernel once per run of whole blocks (a chunk), each block a segment of it
  (:mod:`nodes.features.kernel`): the running computations (TA-Lib's moving averages and
  smoothings) once per block over ``[block start - W, block end)``, about (W + B) / B times
  their cost alone, the local ones (elementwise numpy, a few TA-Lib functions) once per chunk;
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
from nodes.features.kernel import Segment, compute


MATRIX_BYTES = 30 << 20
"""At most about this much matrix per run of blocks: glibc maps an allocation over 32 MiB afresh from
the OS each time, and first touching its pages cost more than a smaller run's overhead (5% of a
batch of the full core set, 119 columns, at 65,536 rows)."""
ONE_RUN = 1 << 30
"""``rows`` from which a history is one run whatever the matrix's size (what ``Batch.frame`` and the
checks ask for with ``1 << 40``)."""


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
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """``(start, stop, kernel rows, complete, finite)`` for consecutive runs of whole blocks of about
    ``rows`` rows (fewer for a wide matrix, :data:`MATRIX_BYTES`, unless :data:`ONE_RUN`);
    ``finite``: every kernel value of the row is finite.

    The kernel's columns come first in a matrix of ``width`` columns (at least the kernel's), so
    the caller can add its joined columns in place; those are left to the caller (uninitialised)."""
    W = fs.history
    starts, ends = block_bounds(bars.ts, fs.block, timeframe_ms)
    k = len(fs.kernel_names)
    width = max(width, k)
    if rows < ONE_RUN:
        rows = max(1, min(rows, MATRIX_BYTES // (8 * width)))
    i = 0
    while i < len(starts):
        j = i
        while j < len(starts) and ends[j] - starts[i] < rows:
            j += 1
        j = max(j, i + 1)
        lo, hi = int(starts[i]), int(ends[j - 1])
        matrix = np.empty((hi - lo, width), order="F")
        complete = np.zeros(hi - lo, dtype=bool)
        b = i + int(np.searchsorted(starts[i:j], W))  # blocks with W bars before them: a suffix
        ready = int(starts[b]) if b < j else hi
        matrix[: ready - lo, :k] = np.nan
        complete[ready - lo :] = True
        finite = complete.copy()
        if b < j:
            first = ready - W
            segments = [Segment(int(starts[m]) - W - first, int(starts[m]) - first, int(ends[m]) - first) for m in range(b, j)]
            compute(fs, bars.slice(first, hi), basket[first:hi], gold[first:hi], segments, matrix[ready - lo :, :k], finite[ready - lo :])
        yield lo, hi, matrix, complete, finite
        i = j
