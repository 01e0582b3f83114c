"""The feature-engineering service through the real runtime on the demo profile (in-process bus,
embedded ClickHouse, simulated clock): bars in, the batch's rows out on features.* and in
ml_features; a backfill of stored history at start; bad bars dead-lettered; a set the library
cannot compute refused before anything starts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from framework.testing import load, make_runtime, query, recording_bus
from nodes.feature_engineering.spec import FeatureEngineeringParams
from nodes.features.engine import Batch, History
from nodes.features.featureset import ResolvedFeatureSet
from nodes.features.synthetic import SyntheticWorld

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "feature-engineering-service"
PAIRS = ["EURUSD", "XAUUSD"]
TIMEOUT = 120.0
NO_MACRO = f"topology.services.{SERVICE}.params.feature_set.groups.macro=null"


def feature_set(loaded: Any) -> ResolvedFeatureSet:
    params = FeatureEngineeringParams.model_validate(loaded.topology.services[SERVICE].params)
    return ResolvedFeatureSet(params.feature_set, loaded.topology.instruments, loaded.topology.timeframes)


def bar_message(symbol: str, tf: str, b: Any, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "symbol": symbol, "timeframe": tf, "ts": int(b.ts[i]), "ts_close": int(b.ts_close[i]), "open": float(b.open[i]),
        "high": float(b.high[i]), "low": float(b.low[i]), "close": float(b.close[i]), "volume": float(b.ticks[i]),
        "tick_count": int(b.ticks[i]), "spread_mean": float(b.spread[i]), "spread_min": float(b.spread_min[i]),
        "spread_max": float(b.spread_max[i]), "source": "test", "complete": True, **extra,
    }  # fmt: skip


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "deadletter" / f"{SERVICE}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def test_bars_in_give_the_batch_rows_on_features_and_in_ml_features(tmp_path: Path) -> None:
    loaded = load(tmp_path, f"pairs=[{','.join(PAIRS)}]")
    fs = feature_set(loaded)
    g = fs.params.groups
    world = SyntheticWorld(PAIRS, ["1m", "5m"], 90, seed=3, fred_series=list(g.macro.series))
    bus, got = await recording_bus("features.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    try:
        first = min(int(b.ts_close[0]) for b in world.bars.values())
        await rt.clock.wait_until(first - 60_000)
        for known in world.fred:
            if known.known_at <= first:
                await bus.publish("market.external.fred_indicators", known.event)
        for known in world.calendar:  # the week's schedule, without the actuals still to come
            if known.known_at <= first:
                late = known.actual_at is not None and known.actual_at > first
                await bus.publish("market.external.economic_calendar", {**known.event, **({"actual": None, "value": None} if late else {})})
        order = sorted((int(b.ts_close[i]), tf, s, i) for (s, tf), b in world.bars.items() for i in range(len(b)))
        for close, tf, symbol, i in order:
            await rt.clock.wait_until(close)
            await bus.publish(f"bars.{symbol}.{tf}", bar_message(symbol, tf, world.bars[(symbol, tf)], i))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    history = world.history(g.events, g.macro, first)
    expected = {(f.symbol, f.timeframe): f for f in Batch(fs, History(world.bars, history.calendar, history.macro)).frames()}
    published = {(m["symbol"], m["timeframe"], m["ts"]): m for _, m in got}
    count = 0
    for (symbol, tf), frame in expected.items():
        for i in np.flatnonzero(frame.valid):
            message = published.pop((symbol, tf, int(frame.ts[i])))
            assert message["feature_set"] == fs.version and list(message["values"]) == frame.names
            assert np.array(list(message["values"].values())).tobytes() == frame.values[i].tobytes()
            count += 1
    assert not published and count >= 100
    assert {subject for subject, _ in got} == {f"features.{p}.{tf}" for p in PAIRS for tf in ("1m", "5m")}
    rows = await query(tmp_path, "SELECT symbol, timeframe, ts, feature_set, values FROM ml_features FINAL")
    assert len(rows) == count and {r["feature_set"] for r in rows} == {fs.version}
    m = {s["service"]: s for s in rt.metrics()}[SERVICE]
    assert (m["errors"], m["dead_lettered"]) == (0, 0)


async def test_at_start_the_stored_history_is_backfilled_once_then_the_stream_goes_on(tmp_path: Path) -> None:
    downloader: list[str] = []  # the demo's 3 days of Polygon bars
    loaded = load(tmp_path, f"pairs=[{','.join(PAIRS)}]", NO_MACRO, *downloader)
    fs = feature_set(loaded)
    first = make_runtime(loaded, tmp_path, only=["polygon-historical-downloader"])
    await asyncio.wait_for(first.run(), TIMEOUT)
    stored = await query(tmp_path, "SELECT count() AS n FROM historical_aggregates")
    assert stored[0]["n"] > 2000

    async def run_service() -> tuple[list[tuple[str, dict[str, Any]]], Any]:
        bus, got = await recording_bus("features.>")
        rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
        await rt.start()
        await asyncio.wait_for(rt.stop(), TIMEOUT)
        return got, rt

    got, rt = await run_service()
    assert got == []  # a backfill goes to the table only: no model acts on a past bar
    rows = await query(tmp_path, "SELECT symbol, timeframe, ts, values FROM ml_features FINAL")
    frame_rows = await query(tmp_path, "SELECT * FROM historical_aggregates FINAL ORDER BY symbol, timeframe, ts")
    from nodes.features.bars import Bars

    bars: dict[tuple[str, str], Any] = {}
    for key in sorted({(r["symbol"], r["timeframe"]) for r in frame_rows}):
        bars[key] = Bars.from_rows([r for r in frame_rows if (r["symbol"], r["timeframe"]) == key])
    expected = Batch(fs, History(bars, *_externals(fs)))
    valid = sum(int(f.valid.sum()) for f in expected.frames())
    assert len(rows) == valid > 1000
    assert {s["service"]: s for s in rt.metrics()}[SERVICE]["out"] == valid
    again, rt2 = await run_service()
    assert again == [] and {s["service"]: s for s in rt2.metrics()}[SERVICE]["out"] == 0  # what is stored is not written twice
    assert len(await query(tmp_path, "SELECT ts FROM ml_features")) == valid


def _externals(fs: ResolvedFeatureSet) -> tuple[Any, Any]:
    from nodes.features.events import Calendar

    g = fs.params.groups
    return (Calendar(g.events) if g.events is not None else None), None


async def test_a_malformed_bar_is_dead_lettered_with_its_field_and_the_rest_goes_on(tmp_path: Path) -> None:
    loaded = load(tmp_path, "pairs=[EURUSD,XAUUSD]", NO_MACRO)
    world = SyntheticWorld(PAIRS, ["1m"], 60, seed=4)
    b = world.bars[("EURUSD", "1m")]
    bus, got = await recording_bus("features.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    try:
        await rt.clock.wait_until(int(b.ts_close[0]))
        inverted = bar_message("EURUSD", "1m", b, 0, high=float(b.low[0]) * 0.99)
        await bus.publish("bars.EURUSD.1m", inverted)
        no_close = bar_message("EURUSD", "1m", b, 0)
        del no_close["close"]
        await bus.publish("bars.EURUSD.1m", no_close)
        await bus.publish("bars.EURUSD.1m", bar_message("EURUSD", "1m", b, 0, complete=False))  # still forming: skipped
        for i in range(len(b)):
            await rt.clock.wait_until(int(b.ts_close[i]))
            await bus.publish("bars.EURUSD.1m", bar_message("EURUSD", "1m", b, i))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    letters = dead_letters(tmp_path)
    reasons = [letter["reason"] for letter in letters]
    assert len(letters) == 2, reasons
    assert any("fields open/high/low/close" in r and "EURUSD 1m" in r for r in reasons), reasons
    assert any("close" in r for r in reasons if "open/high/low/close" not in r), reasons
    assert all("\n" not in r for r in reasons)
    assert len(got) >= 20  # the good bars that followed made rows


def test_a_feature_the_library_does_not_know_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "framework.cli", "topology=demo", f"data_dir={tmp_path}",
         f"++topology.services.{SERVICE}.params.feature_set.drop=[rsi_99]"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "FX102" in line]
    assert len(errors) == 1, done.stderr
    assert "topology/demo.yaml:" in errors[0] and "drop: unknown feature 'rsi_99'" in errors[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "clickhouse").exists()
