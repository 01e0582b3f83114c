"""The replay source: recorded ticks from CSV, Parquet or a ClickHouse table, in time order on the clock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from framework.runtime import Runtime
from framework.stores.clickhouse import ClickHouseStore
from framework.testing import contracts, load, make_runtime, query_df, recording_bus
from nodes.marketdata.bars import aggregate_frame
from nodes.marketdata.synthetic import SyntheticQuotes
from nodes.replay.spec import ReplayParams

T0 = 1_793_577_600_000  # 2026-11-02 00:00 UTC
SERVICE = "tick-replay"

CONTRACTS = contracts()


def recorded() -> pd.DataFrame:
    quotes = SyntheticQuotes(["EURUSD", "XAUUSD"], seed=3, mean_interval_ms=1000).between(T0, T0 + 45 * 60_000)
    frame = pd.DataFrame([q._asdict() for q in quotes])
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)  # files need not be sorted


async def run_replay(tmp_path: Path, *params: str) -> tuple[Runtime, list[dict[str, Any]]]:
    loaded = load(
        tmp_path, "pairs=[EURUSD,XAUUSD]", f"topology.services.{SERVICE}.enabled=true",
        "topology.services.synthetic-ticks.enabled=false", "topology.services.tick-aggregator.enabled=true", *params,
        profile="backtest",
    )  # fmt: skip
    bus, got = await recording_bus("ticks.>")
    rt = make_runtime(loaded, tmp_path, only=[SERVICE, "tick-aggregator"], pubsub=bus)
    await asyncio.wait_for(rt.run(), 60)
    return rt, [payload for _, payload in got]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
async def test_file_replay_is_in_time_order_and_feeds_the_aggregator(tmp_path: Path, kind: str) -> None:
    frame = recorded()
    bad = pd.DataFrame([{"symbol": "EURUSD", "ts": T0 + 5, "bid": 1.2, "ask": 1.1}])  # crossed
    data = pd.concat([frame, bad], ignore_index=True)
    path = tmp_path / f"ticks.{kind}"
    data.to_csv(path, index=False) if kind == "csv" else data.to_parquet(path)
    rt, got = await run_replay(tmp_path / "run", f"topology.services.{SERVICE}.params.source={kind}",
                               f"+topology.services.{SERVICE}.params.path={path}")  # fmt: skip
    assert [t["ts"] for t in got] == sorted(frame["ts"].tolist())
    assert len(got) == len(frame) and {t["source"] for t in got} == {"replay"}
    letters = [json.loads(line) for line in (tmp_path / "run" / "deadletter" / f"{SERVICE}.jsonl").read_text().splitlines()]
    assert len(letters) == 1 and "crossed quote" in letters[0]["reason"]
    bars = await query_df(tmp_path / "run", "SELECT symbol, timeframe, ts, open, close, tick_count FROM historical_aggregates FINAL")
    expected = aggregate_frame(frame, rt.topology.timeframes)
    key = ["symbol", "timeframe", "ts"]
    assert bars.sort_values(key)[["open", "close", "tick_count"]].values.tolist() == (
        expected.sort_values(key)[["open", "close", "tick_count"]].values.tolist()
    )


async def test_table_replay_reads_a_window_of_the_table(tmp_path: Path) -> None:
    frame = recorded().assign(source="dukascopy")
    store = ClickHouseStore("seed", f"chdb://{tmp_path}/clickhouse")
    await store.connect()
    loaded = load(tmp_path, profile="backtest")
    from framework.stores.columns import columns_from_contract

    contract = CONTRACTS.resolve("tick.v1")
    await store.ensure_table("historical_ticks", loaded.topology.tables["historical_ticks"], columns_from_contract(contract), "ts")
    await store.insert("historical_ticks", frame.to_dict("records"))
    await store.close()
    _, got = await run_replay(
        tmp_path,
        f"+topology.services.{SERVICE}.params.start=2026-11-02T00:10:00Z",
        f"+topology.services.{SERVICE}.params.end=2026-11-02T00:20:00Z",
        f"+topology.services.{SERVICE}.params.chunk=3m",
    )
    window = frame[(frame["ts"] >= T0 + 10 * 60_000) & (frame["ts"] < T0 + 20 * 60_000)]
    assert sorted(t["ts"] for t in got) == sorted(window["ts"].tolist())
    assert [t["ts"] for t in got] == sorted(t["ts"] for t in got)
    assert {t["source"] for t in got} == {"dukascopy"}


def test_file_sources_need_a_path() -> None:
    with pytest.raises(ValidationError, match="needs a path"):
        ReplayParams.model_validate({"source": "csv"})


class _FakeTime:
    """Stands in for the wall clock's pacing: records each wait and advances monotonic time by it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


async def test_wall_clock_replay_is_paced_at_n_times_the_recorded_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import nodes.replay.node as replay_node

    fake = _FakeTime()
    monkeypatch.setattr(replay_node, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    monkeypatch.setattr(replay_node, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    ts = [T0, T0 + 1_000, T0 + 1_000, T0 + 11_000]
    path = tmp_path / "ticks.csv"
    pd.DataFrame({"symbol": "EURUSD", "ts": ts, "bid": 1.1, "ask": 1.1002}).to_csv(path, index=False)
    _, got = await run_replay(
        tmp_path / "run", "topology.runtime.clock=wall", f"topology.services.{SERVICE}.params.source=csv",
        f"+topology.services.{SERVICE}.params.path={path}", f"+topology.services.{SERVICE}.params.speed=10",
    )  # fmt: skip
    assert [t["ts"] for t in got] == ts
    # recorded gaps of 1 s and 10 s, replayed 10x faster: 0.1 s then 1 s of waiting (nothing for the tie)
    assert fake.waits == pytest.approx([0.1, 1.0])


async def test_the_runtime_replay_clock_paces_the_source_and_every_timer_alike(tmp_path: Path) -> None:
    """``runtime.clock_speed`` / ``clock_origin``: one wall clock at N× from a past time, shared
    by the replay and the aggregator's timers, so bars close on replayed time, not on today."""
    frame = recorded()
    frame = frame[frame["ts"] < T0 + 3 * 60_000]
    path = tmp_path / "ticks.csv"
    frame.to_csv(path, index=False)
    rt, got = await run_replay(
        tmp_path / "run", "topology.runtime.clock=wall", "++topology.runtime.clock_speed=100",
        "++topology.runtime.clock_origin=2026-11-02T00:00:00Z", "topology.services.tick-aggregator.params.lateness=30s",
        f"topology.services.{SERVICE}.params.source=csv", f"+topology.services.{SERVICE}.params.path={path}",
    )  # fmt: skip
    assert not rt.clock.live and T0 + 3 * 60_000 <= rt.clock.now_ms() < T0 + 24 * 3_600_000
    assert [t["ts"] for t in got] == sorted(frame["ts"].tolist())
    assert not (tmp_path / "run" / "deadletter" / "tick-aggregator.jsonl").exists()  # nothing closed early
    bars = await query_df(tmp_path / "run", "SELECT symbol, timeframe, ts, open, close, tick_count FROM historical_aggregates FINAL")
    expected = aggregate_frame(frame, rt.topology.timeframes)
    key = ["symbol", "timeframe", "ts"]
    assert bars.sort_values(key)[["open", "close", "tick_count"]].values.tolist() == (
        expected.sort_values(key)[["open", "close", "tick_count"]].values.tolist()
    )


def test_a_bad_clock_origin_is_a_user_error(tmp_path: Path) -> None:
    from framework.errors import UserError

    with pytest.raises(UserError, match="clock_origin"):
        load(tmp_path, "++topology.runtime.clock_origin=yesterday", profile="backtest")
