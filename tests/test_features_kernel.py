"""The batch kernel's shortcuts give the bits of the definition: every row computed over its own window.

A batch computes many blocks per call and takes shortcuts that only hold for some indicators
(a value computed once for all rows, one indicator derived from another's output, one TA-Lib
call shared by two groups, a cheap finiteness test before the exact one). Each is held here to
the bit against the definition (the kernel over the row's anchored window alone, as a streaming
update computes it) or against TA-Lib itself, including the inputs where a shortcut must not be
taken.
"""

from __future__ import annotations

import numpy as np
import pytest
import talib

from nodes.features.bars import Bars
from nodes.features.engine import Batch, History
from nodes.features.featureset import FeatureSetParams
from nodes.features.kernel import kernel
from nodes.features.momentum import exact_totals
from nodes.features.numeric import safe_div
from nodes.features import windows
from nodes.features.windows import block_bounds
from tests.test_features_support import resolved
from tests.test_features_talib import random_walk

KERNEL = {"returns": {}, "volatility": {}, "trend": {}, "momentum": {}, "bands": {}, "activity": {}}


def bits(a: np.ndarray) -> np.ndarray:
    """The values' bits, every NaN alike."""
    return np.where(np.isnan(a), np.nan, a).view(np.int64)


def rows_by_their_own_window(fs, bars: Bars, stream: tuple[str, str], picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch's kernel values of rows ``picks`` (several chunks), and each computed over its own window alone."""
    frames = list(Batch(fs, History({stream: bars})).frames(rows=3 * fs.block, streams=[stream]))
    assert len(frames) > 2  # chunks of several blocks each
    names = frames[0].names
    width = len(fs.kernel_names)
    assert names[:width] == fs.kernel_names
    batch = np.concatenate([f.values for f in frames])[:, :width]
    starts, _ = block_bounds(bars.ts, fs.block, 60_000)
    zeros = np.zeros(len(bars))
    alone = np.empty((len(picks), width))
    for k, r in enumerate(picks.tolist()):
        start = int(starts[np.searchsorted(starts, r, side="right") - 1]) - fs.history
        assert start >= 0
        alone[k] = kernel(fs, bars.slice(start, r + 1), zeros[start : r + 1], zeros[start : r + 1], last=1)[0]
    return batch[picks], alone


def assert_same_bits(fs, got: np.ndarray, expected: np.ndarray) -> None:
    differ = np.flatnonzero((bits(got) != bits(expected)).any(axis=0))
    assert not len(differ), [(fs.kernel_names[j], int((bits(got[:, j]) != bits(expected[:, j])).sum())) for j in differ[:5]]


@pytest.mark.parametrize("history, block", [(512, 1024), (64, 32)])
def test_every_batch_row_has_the_bits_of_its_own_window(history: int, block: int) -> None:
    fs = resolved(FeatureSetParams(history=max(history, 210), block=block, groups=KERNEL), symbols=["EURUSD", "XAUUSD"])
    bars = random_walk(n=7 * fs.block + fs.history + 100, seed=5)
    starts, ends = block_bounds(bars.ts, fs.block, 60_000)
    complete = starts >= fs.history
    edges = np.r_[starts[complete], ends[complete] - 1, starts[complete] + 1]  # a block's first rows and its last
    picks = np.unique(np.r_[edges, np.random.default_rng(3).choice(np.arange(int(starts[complete][0]), len(bars)), 60, replace=False)])
    got, alone = rows_by_their_own_window(fs, bars, ("EURUSD", "1m"), picks)
    assert np.isfinite(got).all()
    assert_same_bits(fs, got, alone)


def wide_bars(n: int, seed: int = 1) -> Bars:
    """Bars whose ranges are about their prices: the running sums of ULTOSC round."""
    rng = np.random.default_rng(seed)
    ts = 1_790_000_000_000 // 60_000 * 60_000 + 60_000 * np.arange(n, dtype=np.int64)
    close = np.exp(rng.normal(0.0, 0.9, n)) * 3.0
    open_ = np.r_[3.0, close[:-1]]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.5, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.5, n)))
    spread = np.full(n, 1e-3)
    return Bars(ts, ts + 60_000, open_, high, low, close, np.full(n, 10.0), spread, spread, spread)


def test_ultosc_is_computed_once_for_many_blocks_only_when_its_running_sums_are_exact() -> None:
    wide = wide_bars(4000)
    h, lo, c = wide.high, wide.low, wide.close
    whole = talib.ULTOSC(h, lo, c, 7, 14, 28)
    later = talib.ULTOSC(h[100:], lo[100:], c[100:], 7, 14, 28)
    assert (bits(whole[200:]) != bits(later[100:])).any()  # here the value depends on where the run started
    assert not exact_totals(h, lo, c, 28)
    narrow = random_walk(n=4000, seed=2)
    assert exact_totals(narrow.high, narrow.low, narrow.close, 28)
    assert np.array_equal(bits(talib.ULTOSC(narrow.high, narrow.low, narrow.close, 7, 14, 28)[200:]),
                          bits(talib.ULTOSC(narrow.high[100:], narrow.low[100:], narrow.close[100:], 7, 14, 28)[100:]))  # fmt: skip
    bad = narrow.close.copy()
    bad[1000] = np.nan
    assert not exact_totals(narrow.high, narrow.low, bad, 28)
    bad[1000] = 0.0
    assert not exact_totals(narrow.high, narrow.low, bad, 28)

    fs = resolved(FeatureSetParams(history=64, block=32, groups={"momentum": {}}), symbols=["EURUSD", "XAUUSD"])
    for bars in (wide, narrow):
        picks = np.arange(fs.history + 3 * fs.block, len(bars), 7)
        got, alone = rows_by_their_own_window(fs, bars, ("EURUSD", "1m"), picks)
        assert_same_bits(fs, got, alone)


def tied_bars(n: int = 3000, seed: int = 4) -> Bars:
    """Coarse prices with flat runs: many equal highs and lows, where the tie rules of AROON matter."""
    rng = np.random.default_rng(seed)
    close = np.round(100 + np.cumsum(rng.choice([-1.0, 0.0, 0.0, 1.0], n)), 0)
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) + rng.choice([0.0, 0.0, 1.0], n)
    low = np.minimum(open_, close) - rng.choice([0.0, 0.0, 1.0], n)
    ts = 1_790_000_000_000 // 60_000 * 60_000 + 60_000 * np.arange(n, dtype=np.int64)
    ones = np.ones(n)
    return Bars(ts, ts + 60_000, open_, high, low, close, ones, ones, ones, ones)


@pytest.mark.parametrize("period", [2, 7, 25, 50])
def test_the_aroon_oscillator_taken_from_aroon_is_talibs_to_the_bit(period: int) -> None:
    for bars in (tied_bars(), random_walk(n=3000, seed=9)):
        only = {"sma": [], "ema": [], "crosses": [], "macd": None, "adx": None, "aroon": period, "linreg": None}
        fs = resolved(FeatureSetParams(history=64, groups={"trend": only}), symbols=["EURUSD", "XAUUSD"])
        got = kernel(fs, bars, np.zeros(len(bars)), np.zeros(len(bars)))[:, fs.kernel_index[f"aroon_osc_{period}"]]
        expected = talib.AROONOSC(bars.high, bars.low, period) / 100.0
        assert np.array_equal(bits(got), bits(expected))


def test_the_sma_of_a_bollinger_period_is_talibs_sma_to_the_bit() -> None:
    """The trend group takes the SMA of a period the bands group also uses from its BBANDS call (the middle band)."""
    bars = random_walk(n=3000, seed=8)
    fs = resolved(FeatureSetParams(groups={"trend": {}, "bands": {"bbands": [[20, 2.0], [50, 1.5]]}}), symbols=["EURUSD", "XAUUSD"])
    frame = kernel(fs, bars, np.zeros(len(bars)), np.zeros(len(bars)))  # one window, from the first bar: TA-Lib's run
    c = bars.close
    sma = {n: talib.SMA(c, n) for n in (10, 20, 50, 100, 200)}
    for n, ma in sma.items():
        earlier = np.r_[np.full(5, np.nan), ma[:-5]]
        rows = ~np.isnan(frame[:, fs.kernel_index[f"sma_slope_{n}"]])
        assert rows.sum() > 2000
        assert np.array_equal(bits(frame[rows, fs.kernel_index[f"sma_dist_{n}"]]), bits((c / ma - 1)[rows]))
        assert np.array_equal(bits(frame[rows, fs.kernel_index[f"sma_slope_{n}"]]), bits((ma / earlier - 1)[rows]))
    rows = ~np.isnan(frame[:, fs.kernel_index["sma_cross_50_200"]])
    assert np.array_equal(bits(frame[rows, fs.kernel_index["sma_cross_20_50"]]), bits((sma[20] / sma[50] - 1)[rows]))
    upper, middle, lower = talib.BBANDS(c, 50, 1.5, 1.5, 0)
    assert np.array_equal(bits(frame[rows, fs.kernel_index["bb_width_50_1p5"]]), bits(((upper - lower) / middle)[rows]))


def test_roc_and_mom_are_talibs_rocr_and_mom_to_the_bit_a_zero_price_included() -> None:
    bars = random_walk(n=2000, seed=6)
    bars.close[700] = 0.0  # ROCR gives 0 over a zero price
    fs = resolved(FeatureSetParams(history=64, groups={"momentum": {}}), symbols=["EURUSD", "XAUUSD"])
    zeros = np.zeros(len(bars))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = kernel(fs, bars, zeros, zeros)
        c = bars.close
        for n in (5, 10, 20):
            assert np.array_equal(bits(values[:, fs.kernel_index[f"roc_{n}"]]), bits(talib.ROCR(c, n) - 1.0))
            assert values[700 + n, fs.kernel_index[f"roc_{n}"]] == -1.0
        assert np.array_equal(bits(values[:, fs.kernel_index["mom_10"]]), bits(talib.MOM(c, 10) / c))


def test_a_row_of_finite_values_whose_sum_overflows_is_still_published() -> None:
    """The finiteness of a group's columns is first tested on their sum; an overflow must only send it to the exact test."""
    huge = {f"huge_{i}": (lambda b: np.full(len(b), 1e308)) for i in range(3)}
    fs = resolved(FeatureSetParams(history=64, block=32, groups={"returns": {}}), symbols=["EURUSD", "XAUUSD"], **huge)
    bars = random_walk(n=600, seed=3)
    frame = Batch(fs, History({("EURUSD", "1m"): bars})).frame(("EURUSD", "1m"))
    assert frame.valid.sum() == frame.complete.sum() > 400
    marked = (bars.ts // 60_000) % 50 == 0
    broken = {**huge, "inf": lambda b: np.where((b.ts // 60_000) % 50 == 0, np.inf, 1.0)}
    fs = resolved(FeatureSetParams(history=64, block=32, groups={"returns": {}}), symbols=["EURUSD", "XAUUSD"], **broken)
    frame = Batch(fs, History({("EURUSD", "1m"): bars})).frame(("EURUSD", "1m"))
    withheld = frame.complete & ~frame.valid
    assert marked[frame.complete].any() and np.array_equal(withheld, frame.complete & marked)


@pytest.mark.filterwarnings("ignore:divide by zero", "ignore:invalid value")
def test_safe_div_gives_the_default_over_zero_and_keeps_nan() -> None:
    a = np.array([1.0, np.nan, 2.0, np.inf, -3.0, np.nan, 0.0])
    b = np.array([2.0, 0.0, 0.0, 0.0, np.nan, 1.0, 0.0])
    expected = np.array([0.5, np.nan, 7.0, 7.0, np.nan, np.nan, 7.0])
    assert np.array_equal(safe_div(a, b, 7.0), expected, equal_nan=True)
    for out in ("a", "b"):
        x, y = a.copy(), b.copy()
        got = safe_div(x, y, 7.0, out=x if out == "a" else y)
        assert np.array_equal(got, expected, equal_nan=True)
    positive = np.array([1.0, 4.0])
    assert np.array_equal(safe_div(np.array([2.0, np.nan]), positive, 7.0), [2.0, np.nan], equal_nan=True)


def test_a_wide_matrix_is_computed_in_smaller_runs_except_when_one_frame_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = resolved(FeatureSetParams(history=210, block=32, groups=KERNEL), symbols=["EURUSD", "XAUUSD"])
    bars = random_walk(n=3000, seed=12)
    stream = ("EURUSD", "1m")
    whole = Batch(fs, History({stream: bars})).frame(stream)
    monkeypatch.setattr(windows, "MATRIX_BYTES", 8 * len(fs.kernel_names) * 200)  # about 200 rows per run
    parts = list(Batch(fs, History({stream: bars})).frames(streams=[stream]))
    assert len(parts) > 10 and all(len(p.ts) <= 200 for p in parts)
    assert np.array_equal(bits(np.concatenate([p.values for p in parts])), bits(whole.values))
    assert np.array_equal(np.concatenate([p.valid for p in parts]), whole.valid)
    one = Batch(fs, History({stream: bars})).frame(stream)  # Batch.frame and the checks ask for one run
    assert len(one.ts) == len(bars) and np.array_equal(bits(one.values), bits(whole.values))
