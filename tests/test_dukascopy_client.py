"""The Dukascopy client against the local datafeed simulator: real HTTP, real .bi5 files, injected faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
import pytest

from nodes.dukascopy_historical.client import Bi5Source, HourResult, download
from nodes.dukascopy_historical.instruments import DECIMAL_FACTORS
from nodes.dukascopy_historical.simulator import DukascopySimulator
from nodes.marketdata.http import RetryPolicy
from nodes.marketdata.synthetic import SyntheticQuotes

SYMBOLS = ["EURUSD", "USDJPY", "XAUUSD"]
FACTORS = {s: DECIMAL_FACTORS[s] for s in SYMBOLS}
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


MON_8 = ms("2019-02-04T08:00:00Z")  # Monday 4 Feb 2019, 08:00 UTC
SATURDAY = ms("2019-02-02T12:00:00Z")


@pytest.fixture
async def sim() -> AsyncIterator[DukascopySimulator]:
    async with DukascopySimulator(SYMBOLS, seed=11, mean_interval_ms=3000) as server:
        yield server


@pytest.fixture
async def source(sim: DukascopySimulator) -> AsyncIterator[Bi5Source]:
    client = Bi5Source(FACTORS, base_url=sim.base_url, timeout=5.0, retry=FAST_RETRY)
    yield client
    await client.close()


async def test_an_hour_reads_back_as_the_synthetic_quotes(sim: DukascopySimulator, source: Bi5Source) -> None:
    for symbol in SYMBOLS:
        result = await source.hour(symbol, MON_8)
        quotes = SyntheticQuotes(SYMBOLS, seed=11, mean_interval_ms=3000).hour(symbol, MON_8)
        assert result.status == "ok" and result.error is None and result.size > 0
        assert len(quotes) > 100
        assert result.ticks.ts.tolist() == [q.ts for q in quotes]
        assert result.ticks.bid.tolist() == [q.bid for q in quotes]
        assert result.ticks.ask.tolist() == [q.ask for q in quotes]
        served = sim.hour_ticks(symbol, MON_8)
        assert result.ticks.bid_volume.tolist() == served.bid_volume.tolist()
        assert result.ticks.ask_volume.tolist() == served.ask_volume.tolist()
    assert sim.requests == ["EURUSD/2019/01/04/08h_ticks.bi5", "USDJPY/2019/01/04/08h_ticks.bi5", "XAUUSD/2019/01/04/08h_ticks.bi5"]


async def test_weekend_hours_are_zero_byte_bodies_and_empty(sim: DukascopySimulator, source: Bi5Source) -> None:
    async with aiohttp.ClientSession() as session, session.get(source.url("EURUSD", SATURDAY)) as response:
        assert response.status == 200 and await response.read() == b""
    result = await source.hour("EURUSD", SATURDAY)
    assert result.status == "empty" and len(result.ticks) == 0 and result.error is None


async def test_404_is_an_empty_hour(sim: DukascopySimulator, source: Bi5Source) -> None:
    sim.missing("EURUSD", MON_8)
    result = await source.hour("EURUSD", MON_8)
    assert result.status == "empty"
    assert sim.hits["EURUSD/2019/01/04/08h_ticks.bi5"] == 1  # a 404 is an answer, not retried


async def test_503s_are_retried_until_the_file_comes(sim: DukascopySimulator, source: Bi5Source) -> None:
    sim.fail("USDJPY", MON_8, times=2, status=503)
    result = await source.hour("USDJPY", MON_8)
    assert result.status == "ok" and len(result.ticks) == len(sim.hour_ticks("USDJPY", MON_8))
    assert sim.hits["USDJPY/2019/01/04/08h_ticks.bi5"] == 3
    assert source.http.retries == 2


async def test_503_beyond_the_attempts_fails_the_hour(sim: DukascopySimulator, source: Bi5Source) -> None:
    sim.fail("EURUSD", MON_8, times=10, status=503)
    result = await source.hour("EURUSD", MON_8)
    assert result.status == "failed"
    assert "HTTP 503" in (result.error or "") and "after 4 attempts" in (result.error or "")
    assert result.where.endswith("EURUSD/2019/01/04/08h_ticks.bi5")
    assert sim.hits["EURUSD/2019/01/04/08h_ticks.bi5"] == 4


async def test_timeouts_are_retried_then_fail(sim: DukascopySimulator) -> None:
    sim.stall("EURUSD", MON_8, 0.5)
    client = Bi5Source(FACTORS, base_url=sim.base_url, timeout=0.1, retry=RetryPolicy(attempts=2, base_delay=0.001))
    try:
        result = await client.hour("EURUSD", MON_8)
    finally:
        await client.close()
    assert result.status == "failed" and "TimeoutError" in (result.error or "")
    assert sim.hits["EURUSD/2019/01/04/08h_ticks.bi5"] == 2


async def test_corrupt_and_truncated_files_fail_with_the_reason(sim: DukascopySimulator, source: Bi5Source) -> None:
    sim.corrupt("EURUSD", MON_8)
    sim.truncate("XAUUSD", MON_8)
    corrupt, truncated, fine = await asyncio.gather(
        source.hour("EURUSD", MON_8), source.hour("XAUUSD", MON_8), source.hour("USDJPY", MON_8)
    )
    assert corrupt.status == "failed" and "corrupt LZMA stream" in (corrupt.error or "")
    assert truncated.status == "failed" and "truncated LZMA stream" in (truncated.error or "")
    assert "XAUUSD/2019/01/04/08h_ticks.bi5" in (truncated.error or "")
    assert fine.status == "ok"


async def test_broken_records_are_set_aside_and_the_rest_kept(sim: DukascopySimulator, source: Bi5Source) -> None:
    sim.break_records("EURUSD", MON_8, [0, 5])
    result = await source.hour("EURUSD", MON_8)
    served = sim.hour_ticks("EURUSD", MON_8)
    assert result.status == "ok"
    assert [b.index for b in result.ticks.bad] == [0, 5]
    assert all("crossed quote" in b.reason for b in result.ticks.bad)
    kept = [t for i, t in enumerate(served.ts.tolist()) if i not in (0, 5)]
    assert result.ticks.ts.tolist() == kept


async def test_unknown_paths_are_404(sim: DukascopySimulator) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("GBPUSD/2019/01/04/08h_ticks.bi5", "EURUSD/2019/12/04/08h_ticks.bi5", "EURUSD/2019/01/04/BID_candles_min_1.bi5"):
            async with session.get(f"{sim.base_url}/{path}") as response:
                assert response.status == 404, path


# --------------------------------------------------------------------------- the downloader


class CountingSource:
    """An HourSource that records how many hours are in flight at once."""

    name = "counting"

    def __init__(self, fail_on: set[tuple[str, int]] | None = None) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_on = fail_on or set()

    async def hour(self, symbol: str, hour_ms: int) -> HourResult:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001 * (hour_ms % 3))
            if (symbol, hour_ms) in self.fail_on:
                raise RuntimeError("source bug")
            return HourResult(symbol, hour_ms, "empty")
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


async def test_download_bounds_parallelism_and_returns_every_hour_once() -> None:
    jobs = [(s, h) for h in range(40) for s in ("A", "B")]
    source = CountingSource(fail_on={("B", 7)})
    results = [r async for r in download(source, iter(jobs), concurrency=5)]
    assert sorted((r.symbol, r.hour_ms) for r in results) == sorted(jobs)
    assert source.max_in_flight == 5
    failed = [r for r in results if r.status == "failed"]
    assert [(r.symbol, r.hour_ms, r.error) for r in failed] == [("B", 7, "RuntimeError: source bug")]


async def test_closing_the_download_early_cancels_what_is_in_flight() -> None:
    source = CountingSource()
    results = download(source, [("A", h) for h in range(100)], concurrency=4)
    async for _ in results:
        break
    await results.aclose()
    await asyncio.sleep(0)
    assert source.in_flight == 0


async def test_download_against_the_simulator_with_zero_based_months(sim: DukascopySimulator, source: Bi5Source) -> None:
    dec31_22 = ms("2018-12-31T22:00:00Z")  # Monday 31 Dec 2018 (1 Jan is a holiday: empty)
    jobs = [("EURUSD", dec31_22 + i * 3_600_000) for i in range(4)]
    results = {r.hour_ms: r async for r in download(source, jobs, concurrency=2)}
    assert sorted(sim.requests) == [
        "EURUSD/2018/11/31/22h_ticks.bi5",
        "EURUSD/2018/11/31/23h_ticks.bi5",
        "EURUSD/2019/00/01/00h_ticks.bi5",
        "EURUSD/2019/00/01/01h_ticks.bi5",
    ]
    assert [results[h].status for h in sorted(results)] == ["ok", "ok", "empty", "empty"]
