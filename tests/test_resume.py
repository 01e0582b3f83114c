"""A run restarted in the same data_dir resumes where the last one stopped (no republished window, no split bars)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pandas as pd

from framework.testing import load, make_runtime, query, recording_bus
from nodes.marketdata.bars import aggregate_frame

TIMEOUT = 60.0
T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z
MINUTE = 60_000
LIVE = "polygon-live-collector"


def _live(tmp_path: Path, duration: str) -> Any:
    return load(tmp_path, "pairs=[EURUSD,XAUUSD]", f"topology.services.{LIVE}.params.simulation.duration={duration}")


async def _run_live(tmp_path: Path, duration: str) -> int:
    rt = make_runtime(_live(tmp_path, duration), tmp_path, only=[LIVE])
    await asyncio.wait_for(rt.run(), TIMEOUT)
    return {m["service"]: m for m in rt.metrics()}[LIVE]["out"]


async def _ticks(tmp_path: Path) -> list[tuple[Any, ...]]:
    rows = await query(tmp_path, "SELECT symbol, ts, bid, ask FROM live_ticks ORDER BY symbol, ts, bid, ask")
    return [(r["symbol"], r["ts"], r["bid"], r["ask"]) for r in rows]


async def test_the_simulated_feed_continues_after_the_last_quote_of_the_previous_run(tmp_path: Path) -> None:
    resumed, fresh = tmp_path / "resumed", tmp_path / "fresh"
    first = await _run_live(resumed, "20m")
    second = await _run_live(resumed, "40m")  # same window start and seed, longer: only the new part is sent
    whole = await _run_live(fresh, "40m")
    assert first > 0 and second > 0
    assert first + second == whole  # nothing published twice, nothing skipped
    assert await _ticks(resumed) == await _ticks(fresh)

    assert await _run_live(resumed, "40m") == 0  # the window is complete: a rerun sends nothing


async def test_a_changed_window_starts_over(tmp_path: Path) -> None:
    first = await _run_live(tmp_path, "20m")
    rt = make_runtime(
        load(tmp_path, "pairs=[EURUSD,XAUUSD]", f"topology.services.{LIVE}.params.simulation.duration=20m", f"topology.services.{LIVE}.params.simulation.seed=8"),
        tmp_path,
        only=[LIVE],
    )
    await asyncio.wait_for(rt.run(), TIMEOUT)
    assert {m["service"]: m for m in rt.metrics()}[LIVE]["out"] > 0.5 * first  # another seed is another feed


def _random_ticks(n_minutes: int, seed: int = 3) -> pd.DataFrame:
    rng = random.Random(seed)
    rows, ts, bid = [], T0, 1.1
    while ts < T0 + n_minutes * MINUTE:
        bid = round(bid + rng.uniform(-0.0003, 0.0003), 5)
        rows.append(("EURUSD", ts, bid, round(bid + 0.0001, 5)))
        ts += rng.randint(2_000, 20_000)
    return pd.DataFrame(rows, columns=["symbol", "ts", "bid", "ask"])


async def _aggregate(tmp_path: Path, ticks: pd.DataFrame, *, complete: bool) -> list[dict[str, Any]]:
    bus, bars = await recording_bus("bars.>")
    rt = make_runtime(load(tmp_path, "pairs=[EURUSD]"), tmp_path, pubsub=bus, only=["tick-aggregator"])
    await rt.start()
    try:
        for tick in ticks.itertuples(index=False):
            await rt.clock.wait_until(int(tick.ts))
            await bus.publish("ticks.EURUSD", {"symbol": tick.symbol, "ts": int(tick.ts), "bid": tick.bid, "ask": tick.ask, "source": "test"})
        rt.hosts["tick-aggregator"].ctx.input_complete = complete
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    return [bar for _, bar in bars]


async def test_open_buckets_survive_a_stop_so_bars_spanning_a_restart_are_whole(tmp_path: Path) -> None:
    ticks = _random_ticks(5 * 60)
    cut = T0 + 150 * MINUTE + 7_000  # inside an open 1h, 4h and 1d bucket
    before = await _aggregate(tmp_path, ticks[ticks.ts < cut], complete=False)
    assert (tmp_path / "services" / "tick-aggregator" / "state.json").exists()
    after = await _aggregate(tmp_path, ticks[ticks.ts >= cut], complete=True)
    assert not (tmp_path / "services" / "tick-aggregator" / "state.json").exists()

    published = pd.DataFrame(before + after)
    assert not published.duplicated(["timeframe", "ts"]).any()  # no bucket was published twice
    expected = aggregate_frame(ticks, ["1m", "5m", "15m", "30m", "1h", "4h", "1d"])
    got = published.set_index(["timeframe", "ts"]).sort_index()
    want = expected.set_index(["timeframe", "ts"]).sort_index()
    assert list(got.index) == list(want.index)
    for column in ("open", "high", "low", "close", "spread_mean"):
        assert (got[column] - want[column]).abs().max() < 1e-9, column
    assert list(got["tick_count"]) == list(want["tick_count"])


async def test_a_feed_that_starts_over_discards_the_resumed_buckets(tmp_path: Path) -> None:
    ticks = _random_ticks(90)
    await _aggregate(tmp_path, ticks[ticks.ts < T0 + 70 * MINUTE], complete=False)
    again = await _aggregate(tmp_path, ticks, complete=True)  # a replay from the start, not a continuation
    got = pd.DataFrame(again).set_index(["timeframe", "ts"]).sort_index()
    want = aggregate_frame(ticks, ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]).set_index(["timeframe", "ts"]).sort_index()
    assert list(got.index) == list(want.index)
    assert list(got["tick_count"]) == list(want["tick_count"])
    assert not (tmp_path / "deadletter" / "tick-aggregator.jsonl").exists()


async def test_a_rerun_of_a_finished_window_still_gives_pollers_their_time(tmp_path: Path) -> None:
    """The feed has nothing left, but its time still reaches the clock, so a poller that
    waits for the first event time runs (and the run ends instead of waiting forever)."""
    services = [LIVE, "external-data-collector"]
    for attempt in range(2):
        rt = make_runtime(_live(tmp_path, "20m"), tmp_path, only=services)
        await asyncio.wait_for(rt.run(), TIMEOUT)
        m = {s["service"]: s for s in rt.metrics()}
        assert m["external-data-collector"]["state"] == "stopped" and m["external-data-collector"]["errors"] == 0
        assert (m[LIVE]["out"] > 0) == (attempt == 0)
    assert rt.clock.now_ms() >= T0 + 20 * MINUTE - 10_000
