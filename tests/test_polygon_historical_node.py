"""The polygon-historical-downloader service through the real runtime on the demo profile
(in-process bus, embedded ClickHouse, simulated clock) against the Polygon simulator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from framework.contracts import ContractRegistry
from framework.errors import UserError
from framework.registry import Registry
from framework.runtime import Runtime
from framework.stores.clickhouse import ClickHouseStore
from framework.stores.columns import columns_from_contract
from framework.topology.load import LoadedRun, load_run
from nodes.marketdata.bars import bar_messages
from nodes.marketdata.timeframes import Buckets
from nodes.polygon_historical.gaps import expected_starts
from nodes.polygon_historical.simulator import PolygonSimulator

PROJECT = Path(__file__).resolve().parents[1]
CONTRACTS = ContractRegistry.load(PROJECT / "contracts")
SERVICE = "polygon-historical-downloader"
KEY = "sk-node-test-41c2d9"
TIMEOUT = 60.0
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
TABLE = "historical_aggregates"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp() * 1000)


def run_config(tmp_path: Path, **params: Any) -> LoadedRun:
    """The demo profile with the downloader on, writing and reading historical_aggregates too."""
    prefix = f"topology.services.{SERVICE}"
    overrides = [
        "topology=demo",
        f"data_dir={tmp_path}",
        f"{prefix}.enabled=true",
        f"~{prefix}.params",  # the profile's own params (demo backfill window) would mix with the test's
        f"{prefix}.reads=[live_aggregates,{TABLE}]",
        f"{prefix}.outputs.bars.tables=[live_aggregates,{TABLE}]",
    ]
    for name, value in params.items():
        if isinstance(value, list):
            value = "[" + ",".join(map(str, value)) + "]"
        elif isinstance(value, bool):
            value = str(value).lower()
        overrides.append(f"++{prefix}.params.{name}={value}")
    return load_run(overrides, PROJECT)


async def run_service(tmp_path: Path, pairs: list[str], **params: Any) -> Runtime:
    loaded = run_config(tmp_path, **params)
    rt = Runtime(loaded.topology, Registry.discover(), CONTRACTS, pairs=pairs, only=[SERVICE], data_dir=tmp_path)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    return rt


def metrics(rt: Runtime) -> dict[str, Any]:
    return {s["service"]: s for s in rt.metrics()}[SERVICE]


class Store:
    """The run's embedded ClickHouse, opened after the run has stopped."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = ClickHouseStore("check", f"chdb://{tmp_path}/clickhouse")

    async def __aenter__(self) -> ClickHouseStore:
        await self.store.connect()
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()


async def table_bars(tmp_path: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    async with Store(tmp_path) as store:
        rows = await store.query(f"SELECT * FROM {TABLE} FINAL ORDER BY symbol, timeframe, ts")
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for row in rows:
        out.setdefault((row["symbol"], row["timeframe"]), {})[row["ts"]] = row
    return out


def served(sim: PolygonSimulator, symbol: str, tf: str, start: int, now: int) -> dict[int, tuple[float, ...]]:
    """What a complete table holds: every bar the simulator has in the window's completed, open-market buckets."""
    buckets = Buckets(tf)
    expected = set(expected_starts(buckets, start, buckets.start(now)))
    bars = sim.bars(symbol, tf, start, now)
    return {
        int(t): (float(o), float(h), float(lo), float(c), int(n))
        for t, o, h, lo, c, n in zip(bars.ts, bars.open, bars.high, bars.low, bars.close, bars.tick_count)
        if int(t) in expected
    }


def ohlc(row: dict[str, Any]) -> tuple[float, ...]:
    return (row["open"], row["high"], row["low"], row["close"], row["tick_count"])


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "deadletter" / f"{SERVICE}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PolygonSimulator]:
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    async with PolygonSimulator(api_key=KEY, page_size=400) as server:
        yield server


# --------------------------------------------------------------------------- fill, then fill only the holes

PAIRS = ["EURUSD", "XAUUSD"]
TFS = ["1m", "1h", "4h", "1d"]
END1 = ms("2026-11-02T02:00:00Z")  # a Monday, two hours after the open
END2 = END1 + 2 * HOUR
START1 = END1 - 5 * DAY  # Wednesday 02:00


def first_pages(sim: PolygonSimulator) -> set[tuple[str, str, int, int]]:
    return set(sim.fetched())


async def test_first_run_fills_the_table_then_a_rerun_requests_only_the_missing_bars(
    sim: PolygonSimulator, tmp_path: Path
) -> None:
    params = dict(base_url=sim.url, run="once", lookback="5d", timeframes=TFS)
    rt = await run_service(tmp_path, PAIRS, end="2026-11-02T02:00:00Z", **params)

    m = metrics(rt)
    assert (m["state"], m["errors"], m["dead_lettered"]) == ("stopped", 0, 0)
    wed, thu, sun = ms("2026-10-28T00:00:00Z"), ms("2026-10-29T00:00:00Z"), ms("2026-11-01T00:00:00Z")
    assert first_pages(sim) == {
        request
        for symbol in PAIRS
        for request in (
            (symbol, "1/minute", START1, END1 - 1),  # one request per pair and timeframe for an empty table
            (symbol, "1/hour", START1, END1 - 1),
            (symbol, "4/hour", wed + 4 * HOUR, sun + DAY - 1),  # whole 4h buckets; Monday 00:00-04:00 is still open
            (symbol, "1/day", thu, sun + DAY - 1),  # Thursday to Sunday (Saturday has no bar); Monday is open
        )
    }
    assert len(sim.requests) > len(first_pages(sim))  # the 1m answers came in pages
    table = await table_bars(tmp_path)
    for symbol in PAIRS:
        for tf in TFS:
            want = served(sim, symbol, tf, START1, END1)
            assert want and {t: ohlc(r) for t, r in table[(symbol, tf)].items()} == want, (symbol, tf)
    assert m["out"] == sum(len(v) for v in table.values())
    assert all(r["source"] == "polygon" and r["spread_mean"] is None and r["complete"] for v in table.values() for r in v.values())
    assert all(r["ts_close"] == Buckets(r["timeframe"]).end(r["ts"]) for v in table.values() for r in v.values())

    fri = ms("2026-10-30T00:00:00Z")
    async with Store(tmp_path) as store:
        await store.command(
            f"ALTER TABLE {TABLE} DELETE WHERE (symbol = 'EURUSD' AND timeframe = '1m' AND ts >= {fri + 10 * HOUR} "
            f"AND ts < {fri + 10 * HOUR + 30 * MIN}) OR (symbol = 'EURUSD' AND timeframe = '1h' AND ts = {thu + 15 * HOUR}) "
            f"OR (symbol = 'XAUUSD' AND timeframe = '1d' AND ts = {sun}) SETTINGS mutations_sync = 2"
        )
        bar_v1 = CONTRACTS.resolve("bar.v1")
        await store.ensure_table(TABLE, rt.topology.tables[TABLE], columns_from_contract(bar_v1), bar_v1.time_field)
        pre = sim.bars("EURUSD", "1m", END1, END1 + HOUR - 1)  # what tick-aggregator would have written
        await store.insert(TABLE, bar_messages(pre, "EURUSD", "1m", "test"))
    sim.requests.clear()

    rt = await run_service(tmp_path, PAIRS, end="2026-11-02T04:00:00Z", **params)

    assert metrics(rt)["errors"] == 0
    assert first_pages(sim) == {
        ("EURUSD", "1/minute", fri + 10 * HOUR, fri + 10 * HOUR + 30 * MIN - 1),
        ("EURUSD", "1/minute", END1 + HOUR, END2 - 1),  # 02:00-03:00 was there already
        ("XAUUSD", "1/minute", END1, END2 - 1),
        ("EURUSD", "1/hour", thu + 15 * HOUR, thu + 16 * HOUR - 1),
        ("EURUSD", "1/hour", END1, END2 - 1),
        ("XAUUSD", "1/hour", END1, END2 - 1),
        ("EURUSD", "4/hour", sun + DAY, END2 - 1),  # Monday 00:00-04:00 has closed
        ("XAUUSD", "4/hour", sun + DAY, END2 - 1),
        ("XAUUSD", "1/day", sun, sun + DAY - 1),
    }
    table = await table_bars(tmp_path)
    for symbol in PAIRS:
        for tf in TFS:
            want = served(sim, symbol, tf, START1, END2)
            assert {t: ohlc(r) for t, r in table[(symbol, tf)].items()} == want, (symbol, tf)
    assert {r["source"] for t, r in table[("EURUSD", "1m")].items() if END1 <= t < END1 + HOUR} == {"test"}


# --------------------------------------------------------------------------- bad rows and failed requests


async def test_bad_aggregates_are_dead_lettered_and_a_refused_timeframe_does_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    fri = ms("2026-10-30T00:00:00Z")
    caplog.set_level(logging.INFO)
    async with PolygonSimulator(api_key=KEY, forbidden={"day"}) as sim:
        sim.corrupt("EURUSD", fri + 3 * HOUR, h=1.0, l=2.0)
        sim.corrupt("XAUUSD", fri + 5 * HOUR, c=None)
        rt = await run_service(
            tmp_path, PAIRS, base_url=sim.url, run="once", lookback="2d", timeframes=["1h", "1d"], end="2026-10-30T12:00:00Z"
        )
        want = {s: served(sim, s, "1h", fri - 36 * HOUR, fri + 12 * HOUR) for s in PAIRS}

    m = metrics(rt)
    assert m["errors"] == 2 and m["state"] == "stopped"  # the 1d request of each pair was refused (403)
    letters = dead_letters(tmp_path)
    rows = {(d["payload"]["symbol"], d["reason"]) for d in letters if "result" in d["payload"]}
    refused = [d["reason"] for d in letters if "result" not in d["payload"]]
    assert len(letters) == 4 == m["dead_lettered"]
    assert rows == {("EURUSD", "high 1.0 < low 2.0"), ("XAUUSD", "aggregate lacks c")}
    assert len(refused) == 2 and all("not entitled" in r and "HTTP 403" in r and KEY not in r for r in refused)
    assert {d["payload"]["timeframe"] for d in letters if "HTTP 403" in d["reason"]} == {"1d"}
    table = await table_bars(tmp_path)
    assert ("EURUSD", "1d") not in table and ("XAUUSD", "1d") not in table
    for symbol, bad in (("EURUSD", fri + 3 * HOUR), ("XAUUSD", fri + 5 * HOUR)):
        assert {t: ohlc(r) for t, r in table[(symbol, "1h")].items()} == {t: v for t, v in want[symbol].items() if t != bad}
    assert any("EURUSD: 49 bars missing" in r.getMessage() and "2 requests (1 pages); 47 written; 1 dead-lettered" in r.getMessage()
               and "1d: Polygon: the plan" in r.getMessage() for r in caplog.records)


async def test_a_rejected_key_stops_the_scan_without_showing_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-typo-0b9e77"
    monkeypatch.setenv("POLYGON_API_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    async with PolygonSimulator(api_key=KEY) as sim:
        rt = await run_service(
            tmp_path, PAIRS, base_url=sim.url, run="once", lookback="1d", timeframes=["1h", "1d"], end="2026-10-30T12:00:00Z",
            concurrency=1,
        )
    assert [r.status for r in sim.requests] == [401]  # no retry, no other pair or timeframe tried
    assert metrics(rt)["errors"] == 1
    assert any("POLYGON_API_KEY" in r.getMessage() and "Unknown API Key" in r.getMessage() for r in caplog.records)
    assert wrong not in caplog.text and wrong not in (tmp_path / "deadletter" / f"{SERVICE}.jsonl").read_text()


async def test_a_missing_key_is_one_clear_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("POLYGON_TEST_KEY", raising=False)
    with pytest.raises(UserError, match="environment variable POLYGON_TEST_KEY is not set"):
        await run_service(tmp_path, PAIRS, api_key_env="POLYGON_TEST_KEY", run="once", end="2026-10-30T12:00:00Z")


async def test_a_window_end_is_needed_on_the_simulated_clock(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="params.end is needed on a simulated clock"):
        await run_service(tmp_path, PAIRS, simulate=True, run="once")


# --------------------------------------------------------------------------- simulate: true


async def test_simulate_runs_the_real_client_against_the_in_process_simulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)  # with simulate: true any key works, none too
    params = dict(simulate=True, run="once", lookback="4d", timeframes=["1h", "1d"], end="2026-11-02T06:00:00Z")
    rt = await run_service(tmp_path, ["EURUSD"], **params, **{"simulator.page_size": 10})
    first = metrics(rt)
    table = await table_bars(tmp_path)
    # hourly: Thursday from 06:00, Friday to the close, Sunday from 22:00, Monday to 06:00; daily: Friday and Sunday
    assert {tf: len(v) for (_, tf), v in table.items()} == {"1h": 18 + 22 + 2 + 6, "1d": 2}
    assert first["out"] == 50 and first["errors"] == 0

    rt = await run_service(tmp_path, ["EURUSD"], **params)
    assert metrics(rt)["out"] == 0  # nothing missing any more


# --------------------------------------------------------------------------- schedule


async def test_scheduled_scans_follow_the_clock(sim: PolygonSimulator, tmp_path: Path) -> None:
    loaded = run_config(
        tmp_path,
        base_url=sim.url,
        run="schedule",
        timeframes=["1h", "1d"],
        settle="2m",
        **{"schedule": "[{every: 1h, timeframes: intraday, lookback: 6h}, {every: 1d, timeframes: daily, lookback: 4d}]"},
    )
    rt = Runtime(loaded.topology, Registry.discover(), CONTRACTS, pairs=["EURUSD"], only=[SERVICE], data_dir=tmp_path)
    await rt.start()
    try:
        node = rt.hosts[SERVICE].node

        async def scans(n: int) -> None:
            while len(node.reports) < n or node.reports[n - 1].jobs == []:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)

        mon = ms("2026-11-02T00:00:00Z")
        await rt.clock.advance_to(mon + 5 * HOUR + 30 * MIN)  # the clock starts: the first scan runs every entry
        await asyncio.wait_for(scans(1), TIMEOUT)
        assert first_pages(sim) == {
            ("EURUSD", "1/hour", mon, mon + 5 * HOUR - 1),  # 6h back from 05:30: the whole hours since 00:00
            ("EURUSD", "1/day", ms("2026-10-30T00:00:00Z"), mon - 1),  # Friday and Sunday (a weekend between)
        }
        sim.requests.clear()
        await rt.clock.advance_to(mon + 6 * HOUR + MIN)  # before 06:02 (period plus settle): nothing runs
        await asyncio.sleep(0.05)
        assert sim.requests == [] and len(node.reports) == 1  # type: ignore[union-attr]
        await rt.clock.advance_to(mon + 6 * HOUR + 2 * MIN)  # the hourly entry is due, the daily one is not
        await asyncio.wait_for(scans(2), TIMEOUT)
        assert first_pages(sim) == {("EURUSD", "1/hour", mon + 5 * HOUR, mon + 6 * HOUR - 1)}
        assert node.reports[1].lookbacks == {"1h": 6 * HOUR}  # type: ignore[union-attr]
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)


# --------------------------------------------------------------------------- minutes without quotes


async def test_buckets_empty_at_the_source_are_asked_for_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    mon = ms("2026-11-02T00:00:00Z")
    async with PolygonSimulator(api_key=KEY, mean_interval_ms=60_000) as sim:  # about a third of the minutes are empty
        minutes = set(served(sim, "EURUSD", "1m", mon, mon + 3 * HOUR))
        # an empty minute that ends 30 s before the run (inside the 2-minute settle time) after one with a bar
        late = next(t for t in range(mon + 2 * HOUR, mon, -MIN) if t not in minutes and t - MIN in minutes)
        end = iso_z(late + MIN + 30_000)
        params = dict(base_url=sim.url, run="once", lookback="2h", timeframes=["1m"], end=end, settle="2m")
        rt = await run_service(tmp_path, ["EURUSD"], **params)
        start = late + MIN + 30_000 - 2 * HOUR
        want = {t for t in minutes if start <= t < late + MIN}
        assert 30 < len(want) < 110 and metrics(rt)["out"] == len(want)
        assert set(sim.fetched()) == {("EURUSD", "1/minute", start + 30_000, late + MIN - 1)}
        sim.requests.clear()

        await run_service(tmp_path, ["EURUSD"], **params)
        # the older empty minutes are remembered; the one that had just closed is asked for again
        assert set(sim.fetched()) == {("EURUSD", "1/minute", late, late + MIN - 1)}
    table = await table_bars(tmp_path)
    assert set(table[("EURUSD", "1m")]) == want


def iso_z(ms_: int) -> str:
    return datetime.fromtimestamp(ms_ / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
