"""Targets on hand-made series (dead zone; which barrier is hit first; timeouts) and the training set built on them."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.ml import targets
from nodes.ml.dataset import TrainingDataError, build
from nodes.supervised_training.synthetic import bars_and_features

M = 60_000
T0 = 1_793_577_600_000


def bars(close: list[float], high: list[float] | None = None, low: list[float] | None = None, ts: list[int] | None = None) -> targets.Bars:
    start = np.array(ts if ts is not None else [T0 + i * M for i in range(len(close))], dtype=np.int64)
    c = np.array(close, dtype=float)
    return targets.Bars(start, start + M, c, np.array(high if high else close, dtype=float), np.array(low if low else close, dtype=float))


def test_direction_labels_the_forward_return_outside_the_dead_zone() -> None:
    b = bars([100.0, 100.05, 100.3, 99.0, 99.0, 99.02])
    t = b.ts
    labels = targets.direction(b, t, 2 * M, dead_zone=0.001, cut=int(b.ts_close[-1]))
    # bar 0 closes at 100; two minutes after its close is bar 2's close, 100.3: +0.3% > 0.1%
    assert labels.y.tolist()[:4] == [1, -1, -1, 0]  # bar 3: 99.0 -> 99.02 is +0.02%, inside the dead zone
    assert labels.ret[0] == pytest.approx(0.003)
    assert labels.end.tolist()[:4] == [T0 + 3 * M, T0 + 4 * M, T0 + 5 * M, T0 + 6 * M]
    assert labels.valid.tolist() == [True, True, True, True, False, False]  # their windows end after the last close
    assert labels.y[4:].tolist() == [0, 0]


def test_direction_takes_prices_as_of_a_time_across_a_gap() -> None:
    b = bars([1.0, 1.1, 1.3], ts=[T0, T0 + M, T0 + 10 * M])  # nothing traded from minute 2 to 9
    labels = targets.direction(b, np.array([T0]), 5 * M, 0.0, cut=T0 + 11 * M)
    assert labels.ret[0] == pytest.approx(0.1)  # as of minute 6 the last close is minute 1's (1.1), not a later one
    assert labels.valid[0]
    cut_short = targets.direction(b, np.array([T0]), 5 * M, 0.0, cut=T0 + 5 * M)
    assert not cut_short.valid[0]  # the window ends at minute 6: not complete by the cut


def test_triple_barrier_labels_the_first_barrier_touched() -> None:
    b = bars(
        close=[100.0, 100.5, 101.0, 99.0, 99.5, 99.5, 99.5, 99.5],
        high=[100.0, 100.6, 101.5, 99.5, 99.6, 99.6, 99.6, 99.6],
        low=[100.0, 99.9, 100.2, 98.5, 99.4, 99.4, 99.4, 99.4],
    )
    cut = int(b.ts_close[-1])
    labels = targets.triple_barrier(b, b.ts[:4], 3 * M, cut, upper=0.01, lower=0.01)
    # bar 0 (entry 100): bar 2's high 101.5 touches 101 before bar 3's low 98.5 touches 99
    assert labels.y[0] == 1 and labels.end[0] == b.ts_close[2] and labels.ret[0] == pytest.approx(0.01)
    # bar 1 (entry 100.5): upper 101.505 not touched by bar 2 (101.5), lower 99.495 touched by bar 3
    assert labels.y[1] == -1 and labels.end[1] == b.ts_close[3] and labels.ret[1] == pytest.approx(-0.01)
    # bar 3 (entry 99): 99.99/98.01 never touched within three bars: a timeout, flat, ending at the vertical barrier
    assert labels.y[3] == 0 and labels.end[3] == b.ts_close[3] + 3 * M and labels.valid[3]
    assert labels.ret[3] == pytest.approx(99.5 / 99.0 - 1)


def test_triple_barrier_timeout_by_sign_and_a_bar_touching_both() -> None:
    b = bars(close=[100.0, 100.2, 100.4, 100.3], high=[100.0, 100.2, 100.4, 100.3], low=[100.0, 100.2, 100.4, 100.3])
    labels = targets.triple_barrier(b, b.ts[:1], 3 * M, int(b.ts_close[-1]), upper=0.01, lower=0.01, timeout="sign")
    assert labels.y[0] == 1 and labels.ret[0] == pytest.approx(0.003)
    wide = bars(close=[100.0, 100.0], high=[100.0, 102.0], low=[100.0, 98.0])
    both = targets.triple_barrier(wide, wide.ts[:1], 5 * M, int(wide.ts_close[-1]), upper=0.01, lower=0.01)
    assert both.y[0] == 0 and both.valid[0] and both.end[0] == wide.ts_close[1]  # which came first is unknowable


def test_triple_barrier_decided_early_is_valid_before_the_horizon_ends() -> None:
    b = bars(close=[100.0, 102.0, 100.0], high=[100.0, 102.0, 100.0], low=[100.0, 100.0, 100.0])
    labels = targets.triple_barrier(b, b.ts[:1], 60 * M, int(b.ts_close[-1]), upper=0.01, lower=0.01)
    assert labels.y[0] == 1 and labels.valid[0]  # touched at minute 2; the hour need not be over
    undecided = targets.triple_barrier(b, b.ts[1:2], 60 * M, int(b.ts_close[-1]), upper=0.05, lower=0.05)
    assert not undecided.valid[0]


def test_volatility_barriers_use_past_returns_only() -> None:
    close = [100.0 * (1.001 ** (i % 2)) for i in range(30)]
    b = bars(close)
    vol = targets.rolling_volatility(b.close, 5)
    assert np.isnan(vol[:5]).all() and np.all(vol[5:] > 0)
    changed = b.close.copy()
    changed[20:] *= 1.5  # a later shock leaves the volatility before it unchanged
    assert np.array_equal(targets.rolling_volatility(changed, 5)[:20], vol[:20], equal_nan=True)


# ---------------------------------------------------------------- the training set


def direction(horizon: str = "2m") -> dict:
    return {"kind": "direction", "horizon": horizon, "dead_zone": 0.0}


def test_training_set_drops_warm_up_rows_and_uses_nothing_after_the_cut() -> None:
    bar_rows, rows = bars_and_features(["EURUSD", "XAUUSD"], start_ms=T0, n=60, warmup=10)
    cut = T0 + 40 * M
    data = build(rows, bar_rows, target=direction(), timeframe="1m", cut=cut)
    assert data.features == ("r1", "r3", "r6", "vol10") and data.feature_set == "synthetic-v1"
    assert np.isfinite(data.X).all()
    assert data.start.min() == T0 + 10 * M  # the ten warm-up rows per symbol are gone
    assert data.end.max() <= cut and (data.start + M).max() <= cut
    assert data.dropped["incomplete"] == 20
    later = [dict(r) for r in bar_rows]
    for r in later:
        if r["ts"] >= cut:
            r["close"] *= 3.0
    again = build(rows, later, target=direction(), timeframe="1m", cut=cut)
    assert np.array_equal(again.y, data.y) and np.array_equal(again.ret, data.ret)  # prices after the cut never count


def test_a_training_set_of_mixed_feature_set_versions_is_refused() -> None:
    bar_rows, rows = bars_and_features(["EURUSD"], start_ms=T0, n=40)
    for r in rows[25:]:
        r["feature_set"] = "synthetic-v2"
    with pytest.raises(TrainingDataError, match=r"mixes feature sets synthetic-v1 \(25 rows.*synthetic-v2 \(15 rows"):
        build(rows, bar_rows, target=direction(), timeframe="1m", cut=T0 + 40 * M, model="m")
    pinned = build(rows, bar_rows, target=direction(), timeframe="1m", cut=T0 + 40 * M, feature_set="synthetic-v2")
    assert pinned.feature_set == "synthetic-v2" and len(pinned) > 0


def test_a_target_horizon_longer_than_the_data_is_a_clear_error() -> None:
    bar_rows, rows = bars_and_features(["EURUSD"], start_ms=T0, n=40)
    with pytest.raises(TrainingDataError, match=r"target horizon 1d is longer than the data \(EURUSD 1m bars span 40m"):
        build(rows, bar_rows, target=direction("1d"), timeframe="1m", cut=T0 + 40 * M, model="m")


def test_trading_costs_come_from_the_bars_spreads() -> None:
    bar_rows, rows = bars_and_features(["EURUSD"], start_ms=T0, n=40)
    data = build(rows, bar_rows, target=direction(), timeframe="1m", cut=T0 + 40 * M)
    by_ts = {b["ts"]: b for b in bar_rows}
    expected = [by_ts[int(t)]["spread_mean"] / by_ts[int(t)]["close"] for t in data.start]
    assert data.cost == pytest.approx(expected)
