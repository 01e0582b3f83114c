"""Candle aggregation: batch equals a pandas resample, streaming equals batch, bucket edges and the daily roll."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from nodes.marketdata.bars import (
    LateTickError,
    StreamingAggregator,
    aggregate_frame,
    aggregate_ticks,
    closed_messages,
    frame_of,
    plan,
)
from nodes.marketdata.timeframes import Buckets, DailyRoll, Timeframe

TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]
NY = DailyRoll.parse("17:00 America/New_York")
MIN = 60_000
HOUR = 60 * MIN


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(timezone.utc).timestamp() * 1000)


def random_ticks(seed: int, start: str, hours: float, symbols: tuple[str, ...] = ("EURUSD", "USDJPY")) -> pd.DataFrame:
    """Irregular quotes with bursts, quiet stretches, duplicate timestamps and ticks on exact boundaries."""
    rng = np.random.default_rng(seed)
    t0 = ms(start)
    frames = []
    for i, symbol in enumerate(symbols):
        n = int(hours * 600)
        gaps = rng.exponential(6_000, n).astype(np.int64)
        gaps[rng.random(n) < 0.05] = 0  # same-millisecond ticks
        gaps[rng.random(n) < 0.002] = 3 * HOUR  # quiet stretches: empty buckets of every size
        ts = t0 + np.cumsum(gaps)
        on_edge = rng.random(n) < 0.02
        ts[on_edge] -= ts[on_edge] % MIN  # exactly on a minute boundary
        ts = np.sort(ts)
        level = 1.08 if i == 0 else 150.0
        bid = np.round(level * np.exp(np.cumsum(rng.normal(0, 2e-5, n))), 5 if i == 0 else 3)
        ask = bid + np.round(rng.uniform(0.5, 3.0, n) * (1e-4 if i == 0 else 1e-2), 6)
        frames.append(pd.DataFrame({"symbol": symbol, "ts": ts, "bid": bid, "ask": ask}))
    return pd.concat(frames, ignore_index=True)


def pandas_bars(ticks: pd.DataFrame, labels: pd.Series, tf: str) -> pd.DataFrame:
    """The reference: a plain pandas groupby on an independently computed bucket label."""
    frame = ticks.assign(label=labels.to_numpy(), spread=ticks["ask"] - ticks["bid"])
    g = frame.groupby(["symbol", "label"], sort=True)
    out = pd.DataFrame(
        {
            "open": g["bid"].first(),
            "high": g["bid"].max(),
            "low": g["bid"].min(),
            "close": g["bid"].last(),
            "tick_count": g["bid"].size(),
            "spread_mean": g["spread"].mean(),
            "spread_min": g["spread"].min(),
            "spread_max": g["spread"].max(),
        }
    ).reset_index()
    return out.assign(timeframe=tf)


def resample_reference(ticks: pd.DataFrame, tf: str) -> pd.DataFrame:
    """pandas ``resample`` per symbol (UTC-aligned buckets), empty buckets dropped."""
    rows = []
    for symbol, group in ticks.groupby("symbol"):
        idx = pd.to_datetime(group["ts"], unit="ms", utc=True)
        frame = pd.DataFrame({"bid": group["bid"].to_numpy(), "spread": (group["ask"] - group["bid"]).to_numpy()}, index=idx)
        rule = {"m": "min", "h": "h", "d": "D"}[tf[-1]]
        r = frame.resample(f"{tf[:-1]}{rule}")
        ohlc = r["bid"].ohlc()
        out = ohlc.assign(
            tick_count=r["bid"].count(),
            spread_mean=r["spread"].mean(),
            spread_min=r["spread"].min(),
            spread_max=r["spread"].max(),
        )
        out = out[out["tick_count"] > 0]
        out = out.assign(symbol=symbol, label=out.index.as_unit("ms").asi8.astype(np.int64), timeframe=tf)
        rows.append(out.reset_index(drop=True))
    return pd.concat(rows, ignore_index=True)


def assert_same_bars(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    ours = ours.sort_values(["symbol", "ts"]).reset_index(drop=True)
    ref = ref.sort_values(["symbol", "label"]).reset_index(drop=True)
    assert len(ours) == len(ref)
    assert ours["ts"].tolist() == ref["label"].tolist()
    for column in ("open", "high", "low", "close", "tick_count"):
        assert ours[column].tolist() == ref[column].tolist(), column
    for column in ("spread_mean", "spread_min", "spread_max"):
        np.testing.assert_allclose(ours[column].to_numpy(float), ref[column].to_numpy(float), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tf", TIMEFRAMES)
def test_batch_equals_pandas_resample_for_every_timeframe(tf: str) -> None:
    ticks = random_ticks(1, "2026-03-05T20:00:00+00:00", hours=80)
    ours = aggregate_frame(ticks, TIMEFRAMES)
    assert_same_bars(ours[ours["timeframe"] == tf], resample_reference(ticks, tf))


def ny_day_start(day: datetime) -> int:
    """Start of the trading day named ``day`` under a 17:00 New York roll: 17:00 local the evening before."""
    return int((day - timedelta(hours=7)).replace(tzinfo=ZoneInfo("America/New_York")).timestamp() * 1000)


def test_daily_and_weekly_bars_roll_at_17h_new_york_across_daylight_saving() -> None:
    # spans the US change to daylight saving time (2026-03-08), when the trading day is 23 hours long
    ticks = random_ticks(2, "2026-03-04T12:00:00+00:00", hours=200)
    ours = aggregate_frame(ticks, ["1m", "1h", "1d", "1w"], NY)
    local = pd.to_datetime(ticks["ts"], unit="ms", utc=True).dt.tz_convert("America/New_York").dt.tz_localize(None)
    days = (local + pd.Timedelta(hours=7)).dt.floor("D")
    starts = {d: ny_day_start(d.to_pydatetime()) for d in days.unique()}
    ref = pandas_bars(ticks, days.map(starts), "1d")
    assert_same_bars(ours[ours["timeframe"] == "1d"], ref)
    daily = ours[ours["timeframe"] == "1d"]
    lengths = set((daily["ts_close"] - daily["ts"]).tolist())
    assert lengths == {24 * HOUR, 23 * HOUR}
    weeks = days - pd.to_timedelta(days.dt.day_of_week, unit="D")
    week_starts = {w: ny_day_start(w.to_pydatetime()) for w in weeks.unique()}
    assert_same_bars(ours[ours["timeframe"] == "1w"], pandas_bars(ticks, weeks.map(week_starts), "1w"))


def test_bucket_edges_are_half_open() -> None:
    b = Buckets("1h")
    t = ms("2026-11-02T10:00:00+00:00")
    assert b.bounds(t) == (t, t + HOUR)
    assert b.bounds(t - 1) == (t - HOUR, t)
    bars = aggregate_ticks([t - 1, t, t + HOUR - 1, t + HOUR], [1.0, 2.0, 3.0, 4.0], [1.1, 2.1, 3.1, 4.1], b)
    assert bars.ts.tolist() == [t - HOUR, t, t + HOUR]
    assert bars.tick_count.tolist() == [1, 2, 1]
    assert (bars.open[1], bars.close[1]) == (2.0, 3.0)
    ny = Buckets("1d", NY)
    close = ms("2026-11-02T17:00:00-05:00")
    assert ny.start(close) == close and ny.start(close - 1) == ms("2026-11-01T17:00:00-05:00")


def test_timeframe_and_roll_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="not a timeframe"):
        Timeframe.parse("5x")
    with pytest.raises(ValueError, match="divide a day"):
        Timeframe.parse("7m")
    with pytest.raises(ValueError, match="unknown time zone"):
        DailyRoll.parse("17:00 Mars/Olympus")
    with pytest.raises(ValueError, match="not a daily roll"):
        DailyRoll.parse("5pm")


def test_plan_merges_each_timeframe_from_one_it_nests_in() -> None:
    steps = {s.timeframe: s.source for s in plan(TIMEFRAMES)}
    assert steps == {"1m": None, "5m": "1m", "15m": "5m", "30m": "15m", "1h": "30m", "4h": "1h", "1d": "4h"}
    ny = {s.timeframe: s.source for s in plan(TIMEFRAMES, NY)}
    assert ny["1d"] == "1h"  # 4h bars (UTC-aligned) straddle a 22:00 UTC roll


def stream(ticks: pd.DataFrame, agg: StreamingAggregator, shuffle_ms: int = 0, seed: int = 3) -> tuple[pd.DataFrame, int]:
    """Feed ticks in arrival order (optionally jittered within ``shuffle_ms``), advancing a clock as we go."""
    rows = list(ticks.sort_values("ts", kind="stable").itertuples(index=False))
    if shuffle_ms:
        rng = random.Random(seed)
        jitter: dict[int, float] = {}
        rows.sort(key=lambda r: r.ts + jitter.setdefault(r.ts, rng.uniform(0, shuffle_ms)))  # ties keep their order
    closed = []
    late = 0
    for i, r in enumerate(rows):
        try:
            closed.extend(agg.add(r.symbol, int(r.ts), float(r.bid), float(r.ask)))
        except LateTickError:
            late += 1
        if i % 97 == 0:
            closed.extend(agg.advance(int(r.ts) - shuffle_ms))  # a clock that lags the feed never closes early
    closed.extend(agg.drain())
    return frame_of(closed), late


@pytest.mark.parametrize("roll", [DailyRoll(), NY], ids=["utc", "new-york"])
def test_streaming_equals_batch(roll: DailyRoll) -> None:
    ticks = random_ticks(4, "2026-11-05T06:00:00+00:00", hours=40, symbols=("EURUSD", "XAUUSD"))
    batch = aggregate_frame(ticks, TIMEFRAMES, roll)
    streamed, late = stream(ticks, StreamingAggregator(TIMEFRAMES, roll, lateness_ms=2_000), shuffle_ms=1_500)
    assert late == 0
    key = ["symbol", "timeframe", "ts"]
    pd.testing.assert_frame_equal(
        streamed.sort_values(key).reset_index(drop=True), batch.sort_values(key).reset_index(drop=True), check_dtype=False
    )


def test_tick_later_than_the_lateness_window_is_refused_and_the_bar_is_unchanged() -> None:
    agg = StreamingAggregator(["1m", "5m"], lateness_ms=1_000)
    t = ms("2026-11-02T10:00:00+00:00")
    assert agg.add("EURUSD", t + 10_000, 1.1, 1.1001) == []
    closed = agg.add("EURUSD", t + MIN + 1_000, 1.2, 1.2001)  # watermark passes end + lateness
    assert [(c.timeframe, c.bars.tick_count.tolist()) for c in closed] == [("1m", [1])]
    with pytest.raises(LateTickError, match="late tick: EURUSD"):
        agg.add("EURUSD", t + 59_000, 1.0, 1.0001)
    assert agg.late == 1
    agg.add("EURUSD", t + MIN + 500, 1.3, 1.3001)  # inside the open bucket, out of order: fine
    closed = agg.advance(t + 5 * MIN + 1_000)
    got = {c.timeframe: c.bars for c in closed}
    assert got["1m"].tick_count.tolist() == [2]
    assert got["1m"].open.tolist() == [1.3] and got["1m"].close.tolist() == [1.2]  # ordered by time, not arrival
    assert got["5m"].tick_count.tolist() == [3] and got["5m"].open.tolist() == [1.1]


def test_quiet_symbol_bars_close_on_the_clock() -> None:
    agg = StreamingAggregator(["1m", "1h"])
    t = ms("2026-11-02T10:00:00+00:00")
    agg.add("EURUSD", t + 5, 1.1, 1.1001)
    assert agg.advance(t + MIN - 1) == []
    closed = agg.advance(t + HOUR)
    assert [(c.timeframe, len(c.bars)) for c in closed] == [("1m", 1), ("1h", 1)]


def test_no_bars_for_empty_intervals_unless_fill_empty() -> None:
    t = ms("2026-11-02T10:00:00+00:00")
    ticks = pd.DataFrame({"symbol": "EURUSD", "ts": [t, t + 3 * MIN + 1], "bid": [1.1, 1.2], "ask": [1.1002, 1.2002]})
    plain = aggregate_frame(ticks, ["1m"])
    assert plain["ts"].tolist() == [t, t + 3 * MIN]
    filled = aggregate_frame(ticks, ["1m", "5m"], fill_empty=True)
    one = filled[filled["timeframe"] == "1m"]
    assert one["ts"].tolist() == [t, t + MIN, t + 2 * MIN, t + 3 * MIN]
    assert one["tick_count"].tolist() == [1, 0, 0, 1]
    flat = one.iloc[1]
    assert flat["open"] == flat["close"] == 1.1 and np.isnan(flat["spread_mean"])
    five = filled[filled["timeframe"] == "5m"].iloc[0]
    assert five["tick_count"] == 2 and five["spread_min"] == pytest.approx(0.0002)
    agg = StreamingAggregator(["1m", "5m"], fill_empty=True)
    streamed, _ = stream(ticks, agg)
    key = ["timeframe", "ts"]
    pd.testing.assert_frame_equal(
        streamed.sort_values(key).reset_index(drop=True), filled.sort_values(key).reset_index(drop=True), check_dtype=False
    )


def numbered(ticks: pd.DataFrame) -> pd.DataFrame:
    """Ticks with a per-symbol sequence number in time order (ties in input order), as a collector numbers them."""
    ordered = ticks.sort_values(["symbol", "ts"], kind="stable").copy()
    ordered["seq"] = ordered.groupby("symbol").cumcount() + 1
    return ordered.sort_values("ts", kind="stable").reset_index(drop=True)


def deliver_late(ticks: pd.DataFrame, agg: StreamingAggregator, share: float, delay_ms: int, seed: int = 9) -> list:
    """Feed ticks in time order, holding ``share`` of them back by up to ``delay_ms`` (a reconnect buffer, a replay)."""
    rng = random.Random(seed)
    rows = list(ticks.itertuples(index=False))
    arrival = [r.ts + (rng.randint(70_000, delay_ms) if rng.random() < share else 0) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (arrival[i], i))
    closed = []
    for n, i in enumerate(order):
        r = rows[i]
        closed.extend(agg.add(r.symbol, int(r.ts), float(r.bid), float(r.ask), int(r.seq)))
        if n % 53 == 0:
            closed.extend(agg.advance(arrival[i]))
    closed.extend(agg.drain())
    return closed


@pytest.mark.parametrize("fill_empty", [False, True], ids=["plain", "fill-empty"])
@pytest.mark.parametrize("roll", [DailyRoll(), NY], ids=["utc", "new-york"])
def test_late_ticks_within_the_horizon_revise_the_bars_to_the_batch_result(roll: DailyRoll, fill_empty: bool) -> None:
    ticks = numbered(random_ticks(11, "2026-11-05T20:00:00+00:00", hours=6, symbols=("EURUSD", "XAUUSD")))
    agg = StreamingAggregator(TIMEFRAMES, roll, lateness_ms=2_000, fill_empty=fill_empty, revision_horizon_ms=HOUR)
    closed = deliver_late(ticks, agg, share=0.08, delay_ms=40 * MIN)
    assert agg.late == 0 and agg.revised > 50
    batch = aggregate_frame(ticks, TIMEFRAMES, roll, fill_empty=fill_empty)
    key = ["symbol", "timeframe", "ts"]
    pd.testing.assert_frame_equal(
        frame_of(closed).sort_values(key).reset_index(drop=True), batch.sort_values(key).reset_index(drop=True), check_dtype=False
    )
    messages = closed_messages(closed, "aggregator")
    revisions: dict[tuple, list[int]] = {}
    for m in messages:
        revisions.setdefault((m["symbol"], m["timeframe"], m["ts"]), []).append(m["revision"])
    assert all(r == list(range(len(r))) for r in revisions.values())  # 0, then 1, 2, … in publication order
    assert any(len(r) > 1 for k, r in revisions.items() if k[1] in ("1h", "4h", "1d"))  # coarse bars are revised too


def test_a_tick_beyond_the_revision_horizon_or_before_the_first_bucket_is_refused() -> None:
    agg = StreamingAggregator(["1m", "5m"], lateness_ms=1_000, revision_horizon_ms=10 * MIN)
    t = ms("2026-11-02T10:00:00+00:00")
    agg.add("EURUSD", t + 10_000, 1.1, 1.1001)
    agg.add("EURUSD", t + 30 * MIN, 1.2, 1.2001)
    revised = agg.add("EURUSD", t + 22 * MIN, 1.15, 1.1501)  # late by 8 minutes: revised in
    assert [(c.timeframe, c.revision.tolist()) for c in revised] == [("1m", [0]), ("5m", [0])]  # buckets that had no bar
    with pytest.raises(LateTickError, match="revision horizon"):
        agg.add("EURUSD", t + 15 * MIN, 1.0, 1.0001)  # 15 minutes behind the watermark
    with pytest.raises(LateTickError, match="before the first bucket"):
        agg.add("GBPUSD", t - MIN, 1.3, 1.3001)


def test_fill_empty_streaming_and_batch_agree_at_the_end_of_the_input() -> None:
    t = ms("2026-11-02T10:00:00+00:00")
    ticks = pd.DataFrame(
        {"symbol": ["EURUSD", "XAUUSD", "XAUUSD"], "ts": [t + 5, t + 10, t + 4 * MIN + 1], "bid": [1.1, 2000.0, 2001.0],
         "ask": [1.1002, 2000.3, 2001.3]}
    )  # fmt: skip
    batch = aggregate_frame(ticks, ["1m", "5m"], fill_empty=True)
    eur = batch[(batch["symbol"] == "EURUSD") & (batch["timeframe"] == "1m")]
    assert eur["ts"].tolist() == [t + i * MIN for i in range(5)]  # flat bars up to the last tick of any symbol
    streamed, _ = stream(ticks, StreamingAggregator(["1m", "5m"], fill_empty=True))
    key = ["symbol", "timeframe", "ts"]
    pd.testing.assert_frame_equal(
        streamed.sort_values(key).reset_index(drop=True), batch.sort_values(key).reset_index(drop=True), check_dtype=False
    )
