"""tick-aggregator and data-bridge through the real runtime (demo profile: in-process bus and log, chdb, memory kv)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from framework.runtime import Runtime
from framework.testing import load, make_runtime, query_df
from framework.transport.inprocess import InProcessPubSub
from nodes.marketdata.bars import aggregate_frame
from tests.transport_helpers import eventually

TIMEOUT = 60.0
T0 = 1_793_577_600_000  # 2026-11-02 00:00 UTC, a Monday
MIN = 60_000
TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]


def tick(symbol: str, ts: int, bid: float, seq: int | None = None, source: str = "polygon") -> dict[str, Any]:
    out: dict[str, Any] = {"symbol": symbol, "ts": ts, "bid": bid, "ask": round(bid + 0.0002, 5), "source": source}
    if seq is not None:
        out["seq"] = seq
    return out


def dead_letters(tmp_path: Path, service: str) -> list[dict[str, Any]]:
    path = tmp_path / "deadletter" / f"{service}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_demo_archives_every_tick_once_and_its_bars_equal_the_batch_aggregation(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "pairs=[EURUSD,XAUUSD]",
        "topology.services.synthetic-ticks.enabled=true",
        "only=[synthetic-ticks,tick-aggregator,data-bridge]",
        "topology.services.synthetic-ticks.params.duration=5h",
        "topology.services.synthetic-ticks.params.start=2026-11-02T21:00:00Z",
    )
    rt = make_runtime(loaded, tmp_path)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    m = {s["service"]: s for s in rt.metrics()}
    produced = m["synthetic-ticks"]["out"]
    assert produced > 1000 and m["tick-aggregator"]["dead_lettered"] == 0

    ticks = await query_df(tmp_path, "SELECT symbol, ts, bid, ask, seq FROM historical_ticks FINAL ORDER BY symbol, seq")
    assert len(ticks) == produced
    for _, seqs in ticks.groupby("symbol")["seq"]:
        assert seqs.tolist() == list(range(1, len(seqs) + 1))
    expected = aggregate_frame(ticks, TIMEFRAMES)
    # (live_aggregates gets the same rows, but its 7-day TTL removes bars of 2026-11-02 at once)
    for table in ("historical_aggregates",):
        bars = await query_df(
            tmp_path,
            f"SELECT symbol, timeframe, ts, ts_close, open, high, low, close, tick_count, spread_mean FROM {table} FINAL",
        )
        assert set(bars["timeframe"]) == set(TIMEFRAMES) and set(bars["symbol"]) == {"EURUSD", "XAUUSD"}
        got = bars.sort_values(["symbol", "timeframe", "ts"]).reset_index(drop=True)
        want = expected.sort_values(["symbol", "timeframe", "ts"]).reset_index(drop=True)
        assert len(got) == len(want)
        for column in ("ts", "ts_close", "open", "high", "low", "close", "tick_count"):
            assert got[column].tolist() == want[column].tolist(), (table, column)
        assert got["spread_mean"].to_numpy() == pytest.approx(want["spread_mean"].to_numpy(), abs=1e-10)  # published rounded to 10 digits
    # the 1h bars straddle midnight: one bar per hour that had quotes, daily bars split at 00:00 UTC
    daily = expected[(expected["timeframe"] == "1d") & (expected["symbol"] == "EURUSD")]
    assert daily["ts"].tolist() == [T0, T0 + 24 * 60 * MIN]


async def start_alone(tmp_path: Path, service: str, *overrides: str) -> tuple[Runtime, InProcessPubSub]:
    bus = InProcessPubSub()
    await bus.connect()
    rt = make_runtime(load(tmp_path, *overrides), tmp_path, pubsub=bus, only=[service])
    await rt.start()
    return rt, bus


async def _aggregate(tmp_path: Path, ticks: list[dict[str, Any]], *overrides: str) -> tuple[Runtime, list[dict[str, Any]]]:
    rt, bus = await start_alone(tmp_path, "tick-aggregator", "topology.services.tick-aggregator.params.lateness=1s", *overrides)
    bars: list[dict[str, Any]] = []

    async def record(subject: str, payload: dict[str, Any], headers: Any) -> None:
        bars.append(payload)

    await bus.subscribe("bars.EURUSD.1m", record)
    try:
        for t in ticks:
            await rt.clock.wait_until(max(t["ts"], rt.clock.now_ms()))
            await bus.publish(f"ticks.{t['symbol']}", t)
        await eventually(lambda: len(bars) >= 1, "the first minute's bar")
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    return rt, bars


LATE = [tick("EURUSD", T0 + 5_000, 1.1, 1), tick("EURUSD", T0 + MIN + 2_000, 1.2, 3), tick("EURUSD", T0 + 30_000, 1.0, 2)]


async def test_aggregator_dead_letters_a_tick_beyond_its_revision_horizon(tmp_path: Path) -> None:
    _, bars = await _aggregate(tmp_path, LATE, "topology.services.tick-aggregator.params.revision_horizon=0s")
    assert len(bars) == 1 and bars[0]["ts"] == T0 and bars[0]["tick_count"] == 1 and bars[0]["open"] == 1.1
    letters = dead_letters(tmp_path, "tick-aggregator")
    assert [d["payload"]["ts"] for d in letters] == [T0 + 30_000]
    assert "late tick" in letters[0]["reason"]


async def test_a_late_tick_revises_its_bar_on_the_same_subject_and_the_tables_keep_the_latest(tmp_path: Path) -> None:
    _, bars = await _aggregate(tmp_path, LATE)
    first, revised = bars[0], bars[1]
    assert (first["ts"], first["tick_count"], first["low"], first["revision"]) == (T0, 1, 1.1, 0)
    assert (revised["ts"], revised["tick_count"], revised["low"], revised["close"], revised["revision"]) == (T0, 2, 1.0, 1.0, 1)
    assert dead_letters(tmp_path, "tick-aggregator") == []
    for table in ("historical_aggregates", "live_aggregates"):
        rows = await query_df(tmp_path, f"SELECT tick_count, revision FROM {table} FINAL WHERE timeframe = '1m' AND ts = {T0}")
        assert rows.to_dict("records") == [{"tick_count": 2, "revision": 1}], table


async def test_the_same_tick_through_nats_and_a_kafka_replay_lands_once(tmp_path: Path) -> None:
    rt, bus = await start_alone(tmp_path, "data-bridge", "pairs=[EURUSD]")
    host = rt.hosts["data-bridge"]
    assert rt.log is not None and host.node is not None
    try:
        archived = [tick("EURUSD", T0 + i * 1000, 1.1 + i / 10_000, seq=i) for i in range(1, 7)]
        for t in archived:  # what the collector archived to Kafka
            await rt.log.produce("tick_archive", t, key="EURUSD", timestamp_ms=t["ts"])
        for t in (archived[0], archived[1], archived[1], archived[5]):  # NATS: a duplicate, then seq 3-5 lost
            await bus.publish("ticks.EURUSD", t)
        bar = {"symbol": "EURUSD", "timeframe": "1m", "ts": T0, "ts_close": T0 + MIN, "open": 1.1, "high": 1.2, "low": 1.0,
               "close": 1.15, "volume": 4.0, "tick_count": 4, "spread_mean": 0.0002, "spread_min": 0.0002,
               "spread_max": 0.0002, "source": "aggregator", "complete": True}
        await bus.publish("bars.EURUSD.1m", bar)
        await bus.publish("bars.EURUSD.1m", bar)
        sequenced = next(s for s in host.sequenced if s.port == "ticks")
        await eventually(lambda: sequenced.recovered == 3, "the replay of the seq gap", timeout=TIMEOUT)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert sequenced.stats == {"gaps": 1, "recovered": 3, "given_up": 0, "duplicates": 1}
    rows = await query_df(tmp_path, "SELECT seq, count() AS n FROM historical_ticks GROUP BY seq ORDER BY seq")
    assert rows["seq"].tolist() == [1, 2, 3, 4, 5, 6]
    assert rows["n"].tolist() == [1] * 6  # one row each, without FINAL: the dedup kept every duplicate out
    bars = await query_df(tmp_path, "SELECT count() AS n FROM historical_aggregates")
    assert bars["n"].tolist() == [1]
    assert host.node is None and sequenced.duplicates == 1


async def test_a_gap_marker_is_filled_from_the_archive(tmp_path: Path) -> None:
    rt, bus = await start_alone(tmp_path, "data-bridge", "pairs=[EURUSD]")
    bridge = rt.hosts["data-bridge"].node
    assert rt.log is not None and bridge is not None
    try:
        for i in range(10):
            t = tick("EURUSD", T0 + i * 1000, 1.1, source="dukascopy")
            await rt.log.produce("tick_archive", t, key="EURUSD", timestamp_ms=t["ts"])
        await bus.publish(
            "gaps.ticks.EURUSD",
            {"symbol": "EURUSD", "source": "polygon", "start_ts": T0 + 3000, "end_ts": T0 + 5000, "reason": "reconnect"},
        )
        await eventually(lambda: bridge.replayed >= 1, "the replay of the gap", timeout=TIMEOUT)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    rows = await query_df(tmp_path, "SELECT ts FROM historical_ticks ORDER BY ts")
    # the marked span 3 s..5 s, widened by replay_margin (1 s) on each side, end exclusive
    assert rows["ts"].tolist() == [T0 + i * 1000 for i in range(2, 6)]


def test_bad_aggregator_params_are_refused() -> None:
    from pydantic import ValidationError

    from nodes.tick_aggregator.spec import TickAggregatorParams

    with pytest.raises(ValidationError, match="unknown time zone"):
        TickAggregatorParams.model_validate({"daily_roll": "17:00 New_York"})
    with pytest.raises(ValidationError, match="not a timeframe"):
        TickAggregatorParams.model_validate({"timeframes": ["1m", "2q"]})


async def test_a_gap_still_unfilled_at_stop_is_replayed_on_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nodes.data_bridge.node import DataBridge

    real_replay = DataBridge.replay_span
    stuck = asyncio.Event()

    async def never_done(self, start, end, why):  # type: ignore[no-untyped-def]
        await stuck.wait()  # a replay that has not finished when the bridge stops

    monkeypatch.setattr(DataBridge, "replay_span", never_done)
    rt, bus = await start_alone(tmp_path, "data-bridge", "pairs=[EURUSD]")
    assert rt.log is not None
    for i in range(10):
        t = tick("EURUSD", T0 + i * 1000, 1.1, source="dukascopy")
        await rt.log.produce("tick_archive", t, key="EURUSD", timestamp_ms=t["ts"])
    await bus.publish(
        "gaps.ticks.EURUSD",
        {"symbol": "EURUSD", "source": "polygon", "start_ts": T0 + 3000, "end_ts": T0 + 5000, "reason": "reconnect"},
    )
    with caplog.at_level("WARNING"):
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert any("that gap is not filled yet" in r.getMessage() and "gap marker from polygon" in r.getMessage() for r in caplog.records)
    assert (await query_df(tmp_path, "SELECT count() AS n FROM historical_ticks"))["n"].tolist() == [0]

    monkeypatch.setattr(DataBridge, "replay_span", real_replay)
    rt, bus = await start_alone(tmp_path, "data-bridge", "pairs=[EURUSD]")  # the same data_dir: its state and its log
    bridge = rt.hosts["data-bridge"].node
    assert bridge is not None
    await eventually(lambda: bridge.replayed >= 1 and not bridge._unfilled, "the replay of the kept gap", timeout=TIMEOUT)
    await asyncio.wait_for(rt.stop(), TIMEOUT)
    rows = await query_df(tmp_path, "SELECT ts FROM historical_ticks ORDER BY ts")
    assert rows["ts"].tolist() == [T0 + i * 1000 for i in range(2, 6)]


async def test_the_bridge_claims_a_key_only_once_its_row_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim stands for a row in the table: while the write is pending, nothing is claimed, so a
    bridge killed then leaves the keys free and the catch-up replay writes the rows."""
    from framework.stores.batch import BatchWriter

    writing = asyncio.Event()
    release = asyncio.Event()
    real_flush = BatchWriter.flush

    async def slow_flush(self: BatchWriter, retry: bool = True) -> bool:
        if self.table == "historical_ticks":
            writing.set()
            await release.wait()
        return await real_flush(self, retry)

    monkeypatch.setattr(BatchWriter, "flush", slow_flush)
    rt, bus = await start_alone(tmp_path, "data-bridge", "pairs=[EURUSD]")
    bridge = rt.hosts["data-bridge"].node
    assert bridge is not None
    dedup = bridge.ctx.table("dedup_keys")
    ticks = [tick("EURUSD", T0 + i * 1000, 1.1, seq=i + 1) for i in range(5)]
    try:
        for t in ticks:
            await rt.clock.wait_until(t["ts"])
            await bus.publish("ticks.EURUSD", t)
        flushing = asyncio.ensure_future(rt.clock.wait_until(T0 + 60_000))  # the bridge's flush timer fires
        await asyncio.wait_for(writing.wait(), TIMEOUT)  # the batch is on its way to the table
        from nodes.data_bridge.node import tick_key

        assert await dedup.seen([tick_key(t) for t in ticks]) == [False] * 5  # not claimed before it is written
        release.set()
        await eventually(lambda: bridge.written == 5, "the write and the claims")
        assert await dedup.seen([tick_key(t) for t in ticks]) == [True] * 5
        await flushing
    finally:
        release.set()
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert (await query_df(tmp_path, "SELECT count() AS n FROM historical_ticks"))["n"].tolist() == [5]
