"""The Dukascopy downloader node through the real runtime on the demo profile (in-process bus,
embedded ClickHouse): rows in historical_ticks equal the simulator's quotes; bad hours and records
are dead-lettered while the rest goes on; a restarted run skips done hours; schedule mode catches up.
"""

from __future__ import annotations

import asyncio
import io
import logging
import lzma
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from framework.clock import SimulatedClock
from framework.contracts import ContractRegistry
from framework.errors import UserError
from framework.metrics import ServiceMetrics
from framework.registry import Registry
from framework.runtime import Runtime
from framework.stores.clickhouse import ClickHouseStore
from framework.topology.load import load_run
from nodes.dukascopy_historical.bi5 import compress, pack_ticks
from nodes.dukascopy_historical import node as node_module
from nodes.dukascopy_historical.node import DukascopyDownloader
from nodes.dukascopy_historical.progress import Done, Progress
from nodes.dukascopy_historical.reporting import DownloadStats, Reporter
from nodes.dukascopy_historical.simulator import DukascopySimulator
from nodes.dukascopy_historical.spec import DukascopyParams
from nodes.marketdata.synthetic import SyntheticQuotes

PROJECT = Path(__file__).resolve().parents[1]
CONTRACTS = ContractRegistry.load(PROJECT / "contracts")
SVC = "dukascopy-historical-downloader"
PAIRS = ["EURUSD", "USDJPY", "XAUUSD"]
TIMEOUT = 30.0
HOUR = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def hours(start: str, end: str) -> list[int]:
    return list(range(ms(start), ms(end), HOUR))


async def run_service(data_dir: Path, pairs: list[str] = PAIRS, **params: Any) -> Runtime:
    """One run of the service alone (``only``), as ``fxrun topology=demo only=[…]`` with params overrides."""
    overrides = ["topology=demo", f"data_dir={data_dir}", f"topology.services.{SVC}.enabled=true", f"~topology.services.{SVC}.params"]
    overrides += [f"++topology.services.{SVC}.params.{key}={value}" for key, value in params.items()]
    loaded = load_run(overrides, PROJECT)
    rt = Runtime(loaded.topology, Registry.discover(), CONTRACTS, pairs=pairs, only=[SVC], data_dir=data_dir)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    return rt


async def table_rows(data_dir: Path, where: str = "1") -> list[tuple[Any, ...]]:
    store = ClickHouseStore("check", f"chdb://{data_dir}/clickhouse")
    await store.connect()
    try:
        rows = await store.query(
            f"SELECT symbol, ts, bid, ask, bid_size, ask_size, source FROM historical_ticks FINAL WHERE {where} ORDER BY symbol, ts"
        )
    finally:
        await store.close()
    return [tuple(r.values()) for r in rows]


def expected_rows(sim: DukascopySimulator, symbols: list[str], hour_list: list[int], skip: dict[tuple[str, int], set[int]] | None = None) -> list[tuple[Any, ...]]:
    """What the simulator serves, as historical_ticks rows; ``skip`` leaves out records (by index) of some hours."""
    rows = []
    for symbol in symbols:
        for hour in hour_list:
            t = sim.hour_ticks(symbol, hour)
            left_out = (skip or {}).get((symbol, hour), set())
            for i, row in enumerate(zip(t.ts.tolist(), t.bid.tolist(), t.ask.tolist(), t.bid_volume.tolist(), t.ask_volume.tolist())):
                if i not in left_out:
                    rows.append((symbol, *row, "dukascopy"))
    return rows


def dead_letters(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "deadletter" / f"{SVC}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def service_metrics(rt: Runtime) -> dict[str, Any]:
    return {m["service"]: m for m in rt.metrics()}[SVC]


@pytest.fixture
async def sim() -> AsyncIterator[DukascopySimulator]:
    async with DukascopySimulator(PAIRS, seed=5, mean_interval_ms=8000) as server:
        yield server


# --------------------------------------------------------------------------- through the runtime


async def test_simulated_run_writes_the_simulators_quotes_into_historical_ticks(tmp_path: Path) -> None:
    rt = await run_service(
        tmp_path,
        simulate="true",
        start="2019-02-01T20:00Z",  # Friday evening, over the weekend, into Monday
        end="2019-02-04T02:00Z",
        **{"simulator.seed": 3, "simulator.mean_interval_ms": 6000},
    )
    span = hours("2019-02-01T20:00Z", "2019-02-04T02:00Z")
    quotes = SyntheticQuotes(PAIRS, seed=3, mean_interval_ms=6000)
    expected_quotes = [(q.symbol, q.ts, q.bid, q.ask) for s in PAIRS for h in span for q in quotes.hour(s, h)]
    rows = await table_rows(tmp_path)
    assert len(rows) > 1000
    assert [r[:4] for r in rows] == expected_quotes
    assert rows == expected_rows(DukascopySimulator(PAIRS, seed=3, mean_interval_ms=6000), PAIRS, span)  # volumes too
    assert not any(ms("2019-02-01T22:00Z") <= r[1] < ms("2019-02-03T22:00Z") for r in rows)  # the weekend is empty

    m = service_metrics(rt)
    assert (m["state"], m["out"], m["dead_lettered"], m["errors"]) == ("stopped", len(rows), 0, 0)
    progress = (tmp_path / "services" / SVC / "progress-simulated.jsonl").read_bytes().splitlines()
    assert len(progress) == len(span) * len(PAIRS)


async def test_faults_go_to_the_dead_letters_and_the_rest_goes_on_then_a_rerun_fetches_only_what_failed(
    tmp_path: Path, sim: DukascopySimulator
) -> None:
    sun_22, sun_23, mon_00, mon_01 = hours("2019-02-03T22:00Z", "2019-02-04T02:00Z")
    sim.fail("EURUSD", mon_00, times=2, status=503)
    sim.corrupt("USDJPY", mon_01)
    sim.truncate("XAUUSD", sun_22)
    sim.break_records("EURUSD", sun_23, [1, 2])
    sim.missing("XAUUSD", mon_01)
    params = {"base_url": sim.base_url, "start": "2019-02-03T21:00Z", "end": "2019-02-04T02:00Z", "retry_delay": "1ms", "concurrency": 3}
    span = hours("2019-02-03T21:00Z", "2019-02-04T02:00Z")

    rt = await run_service(tmp_path, **params)
    assert sim.hits["EURUSD/2019/01/04/00h_ticks.bi5"] == 3  # two 503s, then the file
    letters = dead_letters(tmp_path)
    by_reason = sorted(letter["reason"] for letter in letters)
    assert len(letters) == 4 and service_metrics(rt)["dead_lettered"] == 4
    assert "EURUSD 2019-02-03T23:00Z: record 1: crossed quote" in by_reason[0]
    assert "EURUSD 2019-02-03T23:00Z: record 2: crossed quote" in by_reason[1]
    assert by_reason[2].startswith("USDJPY 2019-02-04T01:00Z: ") and "corrupt LZMA stream" in by_reason[2]
    assert by_reason[3].startswith("XAUUSD 2019-02-03T22:00Z: ") and "truncated LZMA stream" in by_reason[3]
    failed = {letter["payload"]["url"].rsplit("/datafeed/", 1)[1] for letter in letters if "LZMA" in letter["reason"]}
    assert failed == {"USDJPY/2019/01/04/01h_ticks.bi5", "XAUUSD/2019/01/03/22h_ticks.bi5"}

    expected = [
        r
        for r in expected_rows(sim, PAIRS, span, skip={("EURUSD", sun_23): {1, 2}})
        if (r[0], r[1] - r[1] % HOUR) not in {("USDJPY", mon_01), ("XAUUSD", sun_22), ("XAUUSD", mon_01)}
    ]
    assert await table_rows(tmp_path) == expected

    sim.clear_faults()
    sim.requests.clear()
    rt = await run_service(tmp_path, **params)
    assert sorted(sim.requests) == sorted(failed)  # done hours (the 404 one too) are not fetched again
    assert service_metrics(rt)["dead_lettered"] == 0
    expected = [r for r in expected_rows(sim, PAIRS, span, skip={("EURUSD", sun_23): {1, 2}}) if (r[0], r[1] - r[1] % HOUR) != ("XAUUSD", mon_01)]
    assert await table_rows(tmp_path) == expected

    sim.requests.clear()
    await run_service(tmp_path, **{**params, "end": "2019-02-04T04:00Z"})
    assert sorted(sim.requests) == sorted(f"{s}/2019/01/04/{h}h_ticks.bi5" for s in PAIRS for h in ("02", "03"))


async def test_an_hour_of_bad_records_only_is_done_with_its_records_dead_lettered(
    tmp_path: Path, sim: DukascopySimulator, caplog: pytest.LogCaptureFixture
) -> None:
    mon_00, mon_01 = span = hours("2019-02-04T00:00Z", "2019-02-04T02:00Z")
    sim.serve("EURUSD", mon_00, lzma.compress(bytes(120), format=lzma.FORMAT_ALONE))  # six records of zeros
    sim.serve("USDJPY", mon_01, compress(pack_ticks([994], [114_540], [114_543], [1.0], [1.0])))  # one crossed quote
    params = {"base_url": sim.base_url, "start": "2019-02-04T00:00Z", "end": "2019-02-04T02:00Z", "retry_delay": "1ms"}
    with caplog.at_level(logging.INFO, logger=f"fxflow.{SVC}"):
        rt = await run_service(tmp_path, **params)

    letters = dead_letters(tmp_path)
    assert sorted(letter["payload"]["symbol"] for letter in letters) == ["EURUSD"] * 6 + ["USDJPY"]
    assert all(": record " in letter["reason"] for letter in letters)
    m = service_metrics(rt)
    assert (m["dead_lettered"], m["errors"]) == (7, 0)
    assert "EURUSD 2019-02-04T00:00Z: 0 good ticks, 6 bad (dead-lettered)" in caplog.text
    assert "USDJPY 2019-02-04T01:00Z: 0 good ticks, 1 bad (dead-lettered)" in caplog.text
    [done_line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done in ")]
    assert "6/6 hours" in done_line and "7 bad records" in done_line and "failed" not in done_line
    progress = [orjson.loads(line) for line in (tmp_path / "services" / SVC / "progress.jsonl").read_bytes().splitlines()]
    assert {(p["symbol"], p["hour"]): p["ticks"] for p in progress if p["ticks"] == 0} == {("EURUSD", mon_00): 0, ("USDJPY", mon_01): 0}
    skipped = {("EURUSD", mon_00), ("USDJPY", mon_01)}
    assert await table_rows(tmp_path) == [r for r in expected_rows(sim, PAIRS, span) if (r[0], r[1] - r[1] % HOUR) not in skipped]

    sim.requests.clear()
    await run_service(tmp_path, **params)
    assert sim.requests == []  # done: not fetched again


async def test_done_hours_missing_from_the_table_are_fetched_again(tmp_path: Path, sim: DukascopySimulator) -> None:
    params = {"base_url": sim.base_url, "start": "2019-02-03T20:00Z", "end": "2019-02-04T01:00Z"}
    span = hours("2019-02-03T20:00Z", "2019-02-04T01:00Z")
    await run_service(tmp_path, **params)
    complete = await table_rows(tmp_path)
    assert complete == expected_rows(sim, PAIRS, span)

    store = ClickHouseStore("check", f"chdb://{tmp_path}/clickhouse")  # as if the process died before the writer flushed
    await store.connect()
    try:
        await store.command(f"ALTER TABLE historical_ticks DELETE WHERE symbol = 'USDJPY' AND ts >= {ms('2019-02-03T23:00Z')} SETTINGS mutations_sync = 1")
    finally:
        await store.close()
    assert len(await table_rows(tmp_path)) < len(complete)

    sim.requests.clear()
    await run_service(tmp_path, **params)
    assert sorted(sim.requests) == ["USDJPY/2019/01/03/23h_ticks.bi5", "USDJPY/2019/01/04/00h_ticks.bi5"]
    assert await table_rows(tmp_path) == complete


# --------------------------------------------------------------------------- the node on its own


class FakeContext:
    """The part of NodeContext the downloader uses."""

    def __init__(self, data_dir: Path, clock: SimulatedClock, pairs: list[str]) -> None:
        self.service = "dukascopy-test"
        self.clock = clock
        self.pairs = pairs
        self.data_dir = data_dir
        self.log = logging.getLogger("fxflow.dukascopy-test")
        self.metrics = ServiceMetrics(self.service)
        self.published: list[dict[str, Any]] = []
        self.dead: list[tuple[str, Any, str]] = []

    async def publish(self, port: str, message: dict[str, Any]) -> bool:
        assert port == "ticks"
        assert CONTRACTS.resolve("tick.v1").validate(message) is None
        self.published.append(message)
        return True

    async def publish_many(self, port: str, messages: list[dict[str, Any]]) -> int:
        for message in messages:
            await self.publish(port, message)
        return len(messages)

    async def dead_letter(self, reason: str, payload: Any, origin: str, contract: str | None = None) -> None:
        self.dead.append((reason, payload, origin))

    def table(self, name: str) -> Any:
        raise KeyError(name)


class FullWriterContext(FakeContext):
    """A table writer whose buffer is full: a publish counts its ticks, then waits for room.

    As ``NodeContext.publish_many`` with a ``BatchWriter``: published is counted before the
    hand-over, and rows whose wait a stop cancels are kept by the writer all the same."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.room = asyncio.Event()
        self.waiting = asyncio.Event()

    async def publish_many(self, port: str, messages: list[dict[str, Any]]) -> int:
        self.metrics.published += len(messages)
        self.waiting.set()
        try:
            await self.room.wait()
        finally:
            self.published.extend(messages)
        return len(messages)


async def test_a_stop_while_the_table_writer_is_full_reports_the_hour_it_cut_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while a publish waits for room: the last line counts every tick published."""
    hour = ms("2019-02-04T08:00Z")
    async with DukascopySimulator(["EURUSD"], seed=5, mean_interval_ms=1000) as busy:
        total = len(busy.hour_ticks("EURUSD", hour))
        ctx = FullWriterContext(tmp_path, SimulatedClock(), ["EURUSD"])
        params = DukascopyParams(base_url=busy.base_url, start="2019-02-04T08:00Z", end="2019-02-04T09:00Z", table=None)
        node = DukascopyDownloader(ctx, params)  # type: ignore[arg-type]
        await node.on_start()
        task = asyncio.create_task(node.run())
        await asyncio.wait_for(ctx.waiting.wait(), TIMEOUT)
        task.cancel()
        with caplog.at_level(logging.WARNING, logger=ctx.log.name), pytest.raises(asyncio.CancelledError):
            await task
        await node.on_stop()
    assert total > node_module.YIELD_EVERY
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped after ")]
    assert len(ctx.published) == ctx.metrics.published == node_module.YIELD_EVERY
    assert "0 ticks of finished hours published, EURUSD 2019-02-04T08:00Z was cut short: " in line
    assert f"cut short: 2,000 of its {total:,} ticks published; the hour is not marked done" in line
    assert Progress(tmp_path / "progress.jsonl").get("EURUSD", hour) is None


async def eventually(predicate: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_schedule_catches_up_complete_hours_and_asks_recent_empty_ones_again(tmp_path: Path, sim: DukascopySimulator) -> None:
    clock = SimulatedClock(ms("2019-02-04T05:30Z"))
    ctx = FakeContext(tmp_path, clock, ["EURUSD"])
    params = DukascopyParams(
        base_url=sim.base_url, start="2019-02-04T00:00Z", run="schedule", every="1h", recheck_empty="3h", retry_delay="1ms", table=None
    )
    sim.missing("EURUSD", ms("2019-02-04T00:00Z"))  # old enough: an empty hour for good
    sim.missing("EURUSD", ms("2019-02-04T03:00Z"))  # recent: maybe not published yet
    node = DukascopyDownloader(ctx, params)  # type: ignore[arg-type]
    await node.on_start()
    task = asyncio.create_task(node.run())
    try:
        first = [f"EURUSD/2019/01/04/0{h}h_ticks.bi5" for h in range(4)]  # up to now - 1h = 04:30 → hours 00..03
        await eventually(lambda: sorted(sim.requests) == first and clock.pending == 1, "the first catch-up")
        published = len(ctx.published)
        assert published == sum(len(sim.hour_ticks("EURUSD", h)) for h in hours("2019-02-04T01:00Z", "2019-02-04T03:00Z"))

        sim.clear_faults()
        await clock.advance_to(ms("2019-02-04T06:30Z"))
        await eventually(lambda: len(sim.requests) == 6 and clock.pending == 1, "the second catch-up")
        assert sim.requests[4:] == sorted(sim.requests[4:]) == ["EURUSD/2019/01/04/03h_ticks.bi5", "EURUSD/2019/01/04/04h_ticks.bi5"]
        assert len(ctx.published) == published + sum(len(sim.hour_ticks("EURUSD", h)) for h in hours("2019-02-04T03:00Z", "2019-02-04T05:00Z"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await node.on_stop()
    assert {t["source"] for t in ctx.published} == {"dukascopy"} and not ctx.dead


async def test_a_catch_up_stops_when_hour_after_hour_fails_and_the_next_run_resumes(tmp_path: Path, sim: DukascopySimulator) -> None:
    span = hours("2019-02-04T00:00Z", "2019-02-04T10:00Z")
    for hour in span:
        sim.fail("EURUSD", hour, times=99, status=503)
    params = DukascopyParams(
        base_url=sim.base_url, start="2019-02-04T00:00Z", end="2019-02-04T10:00Z", concurrency=1, attempts=1, max_failures_in_a_row=3, table=None
    )
    ctx = FakeContext(tmp_path, SimulatedClock(), ["EURUSD"])
    node = DukascopyDownloader(ctx, params)  # type: ignore[arg-type]
    await node.on_start()
    await asyncio.wait_for(node.run(), TIMEOUT)
    await node.on_stop()
    assert len(sim.requests) == 3 and len(ctx.dead) == 3
    assert ctx.metrics.errors == 1 and "3 hour files failed in a row" in (ctx.metrics.last_error or "")
    assert "7 hour(s) left for the next run" in (ctx.metrics.last_error or "")

    sim.clear_faults()
    sim.requests.clear()
    again = DukascopyDownloader(FakeContext(tmp_path, SimulatedClock(), ["EURUSD"]), params)  # type: ignore[arg-type]
    await again.on_start()
    await asyncio.wait_for(again.run(), TIMEOUT)
    await again.on_stop()
    assert sorted(sim.requests) == [DukascopySimulator.path("EURUSD", h) for h in span]
    assert len(again.ctx.published) == sum(len(sim.hour_ticks("EURUSD", h)) for h in span)  # type: ignore[attr-defined]


async def test_default_end_needs_a_started_clock(tmp_path: Path, sim: DukascopySimulator, caplog: pytest.LogCaptureFixture) -> None:
    ctx = FakeContext(tmp_path, SimulatedClock(), ["EURUSD"])
    node = DukascopyDownloader(ctx, DukascopyParams(base_url=sim.base_url, start="2019-02-04T00:00Z"))  # type: ignore[arg-type]
    await node.on_start()
    with caplog.at_level(logging.ERROR, logger="fxflow.dukascopy-test"):
        await asyncio.wait_for(node.run(), TIMEOUT)
    await node.on_stop()
    assert "params.end is required on a simulated clock" in caplog.text
    assert sim.requests == []


async def test_a_pair_without_a_decimal_factor_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    node = DukascopyDownloader(FakeContext(tmp_path, SimulatedClock(), ["EURUSD", "USA500IDXUSD"]), DukascopyParams())  # type: ignore[arg-type]
    with pytest.raises(UserError, match="no Dukascopy decimal factor for 'USA500IDXUSD'.*decimal_factors"):
        await node.on_start()
    await node.on_stop()
    ok = DukascopyDownloader(FakeContext(tmp_path, SimulatedClock(), ["USA500IDXUSD"]), DukascopyParams(decimal_factors={"USA500IDXUSD": 1000}))  # type: ignore[arg-type]
    await ok.on_start()
    assert ok.factors == {"USA500IDXUSD": 1000}
    await ok.on_stop()


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2019-02-05", "end": "2019-02-04"}, "must be before end"),
        ({"start": "last tuesday"}, "not an ISO date"),
        ({"symbols": ["EURUSD", "SPX500"]}, "no Dukascopy decimal factor for SPX500"),
        ({"concurrency": 0}, "greater than or equal to 1"),
        ({"decimal_factors": {"SPX500": 0}}, "factors must be positive: SPX500"),
        ({"base_url": "ftp://datafeed"}, "http:// or https://"),
        ({"run": "hourly"}, "'once' or 'schedule'"),
        ({"every": "0s"}, "positive duration"),
        ({"simulator": {"seed": 1, "speed": 2}}, "Extra inputs are not permitted"),
        ({"retries": 3}, "Extra inputs are not permitted"),
    ],
)
def test_bad_params_are_rejected_with_a_reason(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DukascopyParams.model_validate(params)


def test_params_normalise_symbols_and_urls() -> None:
    p = DukascopyParams.model_validate({"symbols": ["eurusd", "spx500"], "decimal_factors": {"spx500": 100}, "base_url": "http://x/datafeed/"})
    assert (p.symbols, p.decimal_factors, p.base_url) == (["EURUSD", "SPX500"], {"SPX500": 100}, "http://x/datafeed")


# --------------------------------------------------------------------------- progress file and display


def test_progress_file_survives_a_torn_last_line_and_later_lines_win(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "progress.jsonl"
    progress = Progress(path)
    progress.mark("EURUSD", 0, 10, 9)
    progress.mark("EURUSD", HOUR, 0, 0)
    progress.mark("EURUSD", 0, 12, 12)  # fetched again after the table check
    progress.close()
    with open(path, "ab") as handle:
        handle.write(b'{"symbol": "USDJPY", "hour": 72')  # the process died mid-line
    with caplog.at_level(logging.WARNING):
        again = Progress(path)
    assert dict(again.items()) == {("EURUSD", 0): Done(12, 12), ("EURUSD", HOUR): Done(0, 0)}
    assert ("USDJPY", 7_200_000) not in again and "progress.jsonl:4: unreadable progress line" in caplog.text
    again.forget("EURUSD", 0)
    assert ("EURUSD", 0) not in again and len(again) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reporter_draws_a_bar_on_a_terminal_and_logs_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    stats = DownloadStats(total=4, done=1, empty=1, ticks=5000, bytes=2_000_000)
    screen = Terminal()
    bar = Reporter(logging.getLogger("test.bar"), "dukascopy", every=10.0, stream=screen)
    stats.done = 3
    bar.update(stats)  # the last hour: drawn whatever the time since the last draw
    bar.close()
    assert screen.getvalue().startswith("\rdukascopy [" + "#" * 24 + "] 4/4 hours (100%), 5,000 ticks, ")
    assert screen.getvalue().endswith("\n")

    log = Reporter(logging.getLogger("test.log"), "dukascopy", every=0.0, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="test.log"):
        log.update(DownloadStats(total=8, done=2, failed=1, ticks=100))
    assert "dukascopy: 3/8 hours (38%), 100 ticks," in caplog.text and "1 failed" in caplog.text
