"""The look-ahead and recursive checks of a feature set (``fxrun check lookahead | recursive``).

- **lookahead**: compute every row of a history, then again on the history as known at K
  instants (bars closed by then, external data released by then), each just after a random
  row of a stream, the streams taken in turn so every timeframe is cut; any value of a row
  closed at or before the instant that differs (bitwise, NaN included) used the future.
- **recursive**: compute every row with the declared history W and with ``factor`` × W; a
  feature whose values differ by more than the tolerance (absolute, relative above 1) depends
  on how much history precedes its warm-up: W is too short for it to converge.

Planted features (:data:`PLANTED`) are the checks' own canaries: a set with one of them must fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nodes.features.bars import Bars
from nodes.features.engine import Batch, FeatureFrame, History, Stream
from nodes.features.featureset import ResolvedFeatureSet
from nodes.features.numeric import lag_log_ratio, nans


def _next_bar(bars: Bars) -> np.ndarray:
    """The next bar's return: the textbook look-ahead."""
    out = nans(len(bars))
    out[:-1] = lag_log_ratio(bars.close, 1)[1:]
    return out


def _window_mean(bars: Bars) -> np.ndarray:
    """Close over the mean close of the whole window: in a batch the window holds the block's later bars."""
    return bars.close / bars.close.mean() - 1.0


def _cumulative(bars: Bars) -> np.ndarray:
    """Sum of returns since the window began: depends on how much history precedes the row."""
    lr = lag_log_ratio(bars.close, 1)
    lr[0] = 0.0
    return np.cumsum(lr)


PLANTED: dict[str, Callable[[Bars], np.ndarray]] = {"next_bar": _next_bar, "window_mean": _window_mean, "cumulative": _cumulative}
"""Canary features for testing the checks: look-ahead (next_bar, window_mean) and history-dependent (cumulative)."""


@dataclass
class Finding:
    feature: str
    stream: Stream
    ts: int
    cut: int | None
    before: float
    after: float
    rows: int = 1
    """How many rows of this feature differed in all."""


def _frames(fs: ResolvedFeatureSet, history: History) -> dict[Stream, FeatureFrame]:
    return {(f.symbol, f.timeframe): f for f in Batch(fs, history).frames(rows=1 << 40)}


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ~((a == b) | (np.isnan(a) & np.isnan(b)))


def cut_times(history: History, cuts: int, seed: int, fs: ResolvedFeatureSet) -> list[int]:
    """``cuts`` instants, each just after a random complete row of a stream (streams taken in turn,
    in a random order, so every timeframe is cut): the row is kept, the bar after it is not."""
    frames = _frames(fs, history)
    rng = np.random.default_rng(seed)
    streams = [s for s in sorted(frames) if np.count_nonzero(frames[s].complete[:-1]) > 0]
    if not streams:
        return []
    order = [streams[i] for i in rng.permutation(len(streams))]
    out = []
    for k in range(cuts):
        f = frames[order[k % len(order)]]
        rows = np.flatnonzero(f.complete[:-1])
        i = int(rows[rng.integers(len(rows))])
        out.append(int(f.ts_close[i]) + int(rng.integers(0, int(f.ts_close[i + 1] - f.ts_close[i]))))
    return sorted(out)


def lookahead(fs: ResolvedFeatureSet, history_at: Callable[[int | None], History], cuts: Sequence[int]) -> tuple[list[Finding], int]:
    """Findings per feature (first difference found, with the count of all), and the number of
    published (valid) rows compared; complete rows that are not published are compared too."""
    full = _frames(fs, history_at(None))
    found: dict[str, Finding] = {}
    compared = 0
    for cut in cuts:
        for stream, frame in _frames(fs, history_at(cut)).items():
            ref = full.get(stream)
            if ref is None:
                continue
            rows = np.flatnonzero(frame.complete & (frame.ts_close <= cut))
            if not len(rows):
                continue
            pos = np.searchsorted(ref.ts, frame.ts[rows])
            compared += int(ref.valid[pos].sum())
            diff = _differs(frame.values[rows], ref.values[pos])
            for col in np.flatnonzero(diff.any(axis=0)):
                name = frame.names[col]
                hits = np.flatnonzero(diff[:, col])
                k = int(hits[0])
                if name in found:
                    found[name].rows += len(hits)
                    continue
                found[name] = Finding(name, stream, int(frame.ts[rows[k]]), cut, float(ref.values[pos[k], col]), float(frame.values[rows[k], col]), len(hits))
    return sorted(found.values(), key=lambda f: f.feature), compared


def recursive(fs: ResolvedFeatureSet, history: History, factor: int = 3, tolerance: float = 1e-9) -> tuple[list[Finding], int]:
    """Features whose values with ``factor`` × W history differ from those with W by more than
    ``tolerance``, and the number of rows published in both that were compared."""
    longer = ResolvedFeatureSet(fs.params.with_history(fs.history * factor), fs.instruments, fs.timeframes, extra=fs.extra)
    short, long_ = _frames(fs, history), _frames(longer, history)
    found: dict[str, Finding] = {}
    compared = 0
    for stream, frame in long_.items():
        ref = short[stream]
        rows = np.flatnonzero(frame.complete)
        if not len(rows):
            continue
        pos = np.searchsorted(ref.ts, frame.ts[rows])
        ok = ref.complete[pos]
        rows, pos = rows[ok], pos[ok]
        compared += int((ref.valid[pos] & frame.valid[rows]).sum())
        a, b = ref.values[pos], frame.values[rows]
        with np.errstate(invalid="ignore"):
            gap = np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
        bad = (gap > tolerance) | (np.isnan(a) != np.isnan(b))
        for col in np.flatnonzero(bad.any(axis=0)):
            name = frame.names[col]
            hits = np.flatnonzero(bad[:, col])
            worst = int(hits[np.argmax(np.nan_to_num(gap[hits, col], nan=np.inf))])
            finding = Finding(name, stream, int(frame.ts[rows[worst]]), None, float(a[worst, col]), float(b[worst, col]), len(hits))
            old = found.get(name)
            if old is None or abs(finding.before - finding.after) > abs(old.before - old.after):
                finding.rows += old.rows if old else 0
                found[name] = finding
            else:
                old.rows += len(hits)
    return sorted(found.values(), key=lambda f: f.feature), compared
