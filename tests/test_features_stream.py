"""Streaming equals batch, row for row and bit for bit: across block boundaries, whatever the
arrival order of bars closing at the same instant, after revisions and late bars; context only
from strictly earlier bars; nothing non-finite ever leaves."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.features.bars import Bars
from nodes.features.engine import Batch, History, StreamingEngine
from nodes.features.windows import block_bounds
from tests.test_features_support import bar_values, resolved, small_params, stream, world

SYMBOLS = ["EURUSD", "USDJPY", "XAUUSD"]


@pytest.fixture(scope="module")
def setup():
    fs = resolved(small_params(), symbols=SYMBOLS)
    w = world(fs, SYMBOLS, 900)
    g = fs.params.groups
    full = w.history(g.events, g.macro)
    batch = {(f.symbol, f.timeframe): f for f in Batch(fs, full).frames(rows=1 << 40)}
    return fs, w, full, batch


def primed(fs, w, at: int) -> StreamingEngine:
    g = fs.params.groups
    known = w.history(g.events, g.macro, at)
    engine = StreamingEngine(fs, known.calendar, known.macro)
    engine.prime(known)
    return engine


def assert_equal_to_batch(got: dict, batch: dict, after: int) -> int:
    compared = 0
    for (symbol, tf), frame in batch.items():
        for i in np.flatnonzero(frame.ts_close > after):
            key = (symbol, tf, int(frame.ts[i]))
            if frame.valid[i]:
                assert key in got, f"{key}: batch has a row, the stream none"
                diff = np.flatnonzero(got[key].view(np.int64) != frame.values[i].view(np.int64))
                assert not len(diff), f"{key}: {[(frame.names[j], got[key][j], frame.values[i][j]) for j in diff[:3]]}"
                compared += 1
            else:
                assert key not in got, f"{key}: the stream published a row the batch withholds"
    return compared


@pytest.mark.parametrize("seed", [1, 2])
def test_streaming_rows_are_the_batch_rows_bit_for_bit(setup, seed: int) -> None:
    fs, w, full, batch = setup
    start = int(full.bars[("EURUSD", "1m")].ts_close[-700])  # 1m bars cross many 32-bar blocks after this
    engine = primed(fs, w, start)
    got = stream(engine, w, full, start, seed=seed)
    compared = assert_equal_to_batch(got, batch, start)
    one_minute = full.bars[("EURUSD", "1m")]
    starts, _ = block_bounds(one_minute.ts[one_minute.ts_close > start], fs.block, 60_000)
    assert len(starts) >= 10 and compared > 1500
    assert engine.counters.nonfinite == 0


def test_a_revision_or_a_late_bar_recomputes_the_rows_after_it_as_a_batch_of_the_revised_history(setup) -> None:
    fs, w, full, _ = setup
    start = int(full.bars[("EURUSD", "1m")].ts_close[-300])
    engine = primed(fs, w, start)
    got = stream(engine, w, full, start)
    bars = dict(full.bars)
    b = bars[("EURUSD", "1m")]
    revised: list[tuple[str, int]] = []
    for back in (3, 40):  # in the current block, and in the previous one
        i = len(b) - back
        values = list(bar_values(b, i))
        values[1] *= 1.001  # the high
        values[3] = min(values[3] * 1.0005, values[1])  # the close
        rows = engine.on_bar("EURUSD", "1m", int(b.ts[i]), int(b.ts_close[i]), values)
        assert rows and all(r.revised for r in rows) and rows[0].ts == int(b.ts[i]) and rows[-1].ts == int(b.ts[-1])
        for r in rows:
            got[(r.symbol, r.timeframe, r.ts)] = r.values
        hi, cl = b.high.copy(), b.close.copy()
        hi[i], cl[i] = values[1], values[3]
        b = Bars(b.ts, b.ts_close, b.open, hi, b.low, cl, b.ticks, b.spread, b.spread_min, b.spread_max)
        revised.append(("EURUSD", i))
    # a late bar: a missing minute arrives after the rows following it
    missing = len(b) - 10
    kept = np.r_[0:missing, missing + 1 : len(b)]
    late_engine = primed(fs, w, start)
    history_without = History({**full.bars, ("EURUSD", "1m"): b.take(kept)}, full.calendar, full.macro)
    late_got = stream(late_engine, w, history_without, start)
    for r in late_engine.on_bar("EURUSD", "1m", int(b.ts[missing]), int(b.ts_close[missing]), bar_values(b, missing)):
        late_got[(r.symbol, r.timeframe, r.ts)] = r.values
    bars[("EURUSD", "1m")] = b
    expected = Batch(fs, History(bars, full.calendar, full.macro)).frame(("EURUSD", "1m"))
    for source in (got, late_got):
        rows = {k[2]: v for k, v in source.items() if k[:2] == ("EURUSD", "1m")}
        for i in np.flatnonzero(expected.valid & (expected.ts_close > start)):
            assert rows[int(expected.ts[i])].tobytes() == expected.values[i].tobytes()
    assert engine.counters.revised == 2 and late_engine.counters.revised == 1


def test_context_comes_from_the_last_higher_bar_closed_strictly_before_the_row(setup) -> None:
    fs, w, full, batch = setup
    low, high = batch[("EURUSD", "1m")], batch[("EURUSD", "15m")]
    feature = fs.params.groups.context.features[1]
    col_low = low.names.index(f"htf1_{feature}")
    col_high = high.names.index(feature)
    rows = np.flatnonzero(low.valid)
    checked = aligned = 0
    for i in rows:
        close = low.ts_close[i]
        j = np.searchsorted(high.ts_close, close, side="left") - 1  # strictly before
        assert low.values[i, col_low] == high.values[j, col_high]
        checked += 1
        if high.ts_close[j + 1] == close if j + 1 < len(high.ts_close) else False:
            aligned += 1  # the 15m bar closing at the same instant was not used
            assert high.ts_close[j] < close
    assert checked > 300 and aligned > 20


def test_bars_closing_at_the_same_instant_give_the_same_rows_in_any_order(setup) -> None:
    fs, w, full, _ = setup
    start = int(full.bars[("EURUSD", "1m")].ts_close[-200])
    results = [stream(primed(fs, w, start), w, full, start, seed=seed) for seed in (5, 6, 7)]
    assert results[0].keys() == results[1].keys() == results[2].keys()
    for key in results[0]:
        assert results[0][key].tobytes() == results[1][key].tobytes() == results[2][key].tobytes()


def test_a_row_with_a_nan_or_an_infinite_value_is_never_published() -> None:
    def sometimes_infinite(b: Bars) -> np.ndarray:
        out = np.zeros(len(b))
        out[(b.ts // 60_000) % 7 == 0] = np.inf
        out[(b.ts // 60_000) % 11 == 0] = np.nan
        return out

    fs = resolved(small_params(groups={"returns": {}, "trend": {"sma": [10, 20], "crosses": [[10, 20]]}}), symbols=["EURUSD", "XAUUSD"], poison=sometimes_infinite)
    w = world(fs, ["EURUSD", "XAUUSD"], 400)
    full = w.history(None, None)
    batch = Batch(fs, full)
    frame = batch.frame(("EURUSD", "1m"))
    poisoned = frame.complete & (((frame.ts // 60_000) % 7 == 0) | ((frame.ts // 60_000) % 11 == 0))
    assert poisoned.sum() > 20 and not frame.valid[poisoned].any() and frame.valid[frame.complete & ~poisoned].all()
    messages = frame.messages(fs.version)
    assert len(messages) == frame.valid.sum()
    assert all(np.isfinite(v) for m in messages for v in m["values"].values())
    start = int(full.bars[("EURUSD", "1m")].ts_close[-150])
    engine = StreamingEngine(fs)
    engine.prime(w.history(None, None, start))
    got = stream(engine, w, full, start)
    assert got and all(np.isfinite(v).all() for v in got.values())
    assert engine.counters.nonfinite > 0
