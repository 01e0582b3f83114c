"""A NATS outage delays and loses ticks; each still ends up in its bar (revisions, gaps refilled from the archive).

nats-server is SIGKILLed while a collector-like publisher archives each tick and then
publishes it; the publisher's client buffers during the outage and delivers late after the
restart, and what the dead server held is lost. The tick aggregator (the real service, on
real NATS, on a wall clock paced 30x) revises the bars the late ticks belong to and has the
runtime replay the lost ones from the archive; every bar it wrote, at its latest revision,
equals the batch aggregation of all the ticks that were archived.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd

from framework.testing import load, make_runtime, query_df
from framework.topology.model import NatsConfig
from framework.transport.inprocess import InProcessLog
from framework.transport.nats import NatsPubSub
from nodes.marketdata.bars import aggregate_frame

ORIGIN = "2026-11-02T10:00:00Z"
SPEED = 30.0
PAIRS = ("EURUSD", "XAUUSD")


async def aggregator_and_collector(tmp_path: Path, url: str) -> tuple[Any, NatsPubSub, InProcessLog, NatsPubSub]:
    """tick-aggregator on a paced wall clock over ``url`` (its archive in-process), started, with its NATS connection;
    a collector's connection."""
    config = NatsConfig(servers=[url])
    loaded = load(
        tmp_path, f"pairs=[{','.join(PAIRS)}]", "only=[tick-aggregator]", "topology.runtime.clock=wall",
        f"++topology.runtime.clock_speed={SPEED}", f"++topology.runtime.clock_origin={ORIGIN}",
        "++topology.runtime.persist_log=false",
    )  # fmt: skip
    log = InProcessLog()
    bus = NatsPubSub(config, name="fxflow-aggregator", service="tick-aggregator")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, log_transport=log)
    publisher = NatsPubSub(config, name="fxflow-collector", service="collector")
    await rt.start()
    await publisher.connect()
    return rt, bus, log, publisher


async def test_ticks_delayed_or_lost_by_a_nats_outage_end_up_in_their_bars(tmp_path: Path, nats_server_fn) -> None:
    rt, bus, log, publisher = await aggregator_and_collector(tmp_path, nats_server_fn.url)
    archived: list[dict[str, Any]] = []
    seqs = dict.fromkeys(PAIRS, 0)

    async def publish(seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        price = 1.1
        while loop.time() < end:
            for symbol in PAIRS:
                seqs[symbol] += 1
                price += 0.00001 * ((seqs[symbol] * 7919) % 13 - 6)
                bid = round(price if symbol == "EURUSD" else price * 2400, 5)
                t = {"symbol": symbol, "ts": rt.clock.now_ms(), "bid": bid, "ask": round(bid + 0.0002, 5),
                     "source": "polygon", "seq": seqs[symbol]}  # fmt: skip
                await log.produce("tick_archive", t, key=symbol, timestamp_ms=t["ts"])  # archived first
                archived.append(t)
                await publisher.publish(f"ticks.{symbol}", t)
            await asyncio.sleep(0.02)

    try:
        await publish(3.0)
        nats_server_fn.kill()
        await publish(1.5)  # into the client's reconnect buffer, or lost
        await asyncio.to_thread(nats_server_fn.start)
        await publish(4.0)
        await asyncio.sleep(2.5)  # 75 s of clock time: the last full minutes close
        sequenced = rt.hosts["tick-aggregator"].sequenced[0]
        await asyncio.wait_for(sequenced.drain(), 30)
    finally:
        await publisher.close()
        await asyncio.wait_for(rt.stop(), 60)

    bars = await query_df(
        tmp_path,
        "SELECT symbol, timeframe, ts, open, high, low, close, tick_count, revision FROM historical_aggregates FINAL",
    )
    ticks = pd.DataFrame(archived)
    expected = aggregate_frame(ticks, rt.topology.timeframes).set_index(["symbol", "timeframe", "ts"])
    got = bars.set_index(["symbol", "timeframe", "ts"])
    assert len(got) >= 8
    for column in ("open", "high", "low", "close", "tick_count"):
        assert (got[column] == expected.loc[got.index, column]).all(), column
    one_minute = got.xs("1m", level="timeframe")
    last = ticks["ts"].max()
    complete = expected.xs("1m", level="timeframe")
    starts = complete.index.get_level_values("ts")
    complete = complete[(starts >= ticks["ts"].min()) & (starts + 60_000 + 3_000 <= last)]
    assert len(complete) >= 4 and set(complete.index) <= set(one_minute.index)  # each whole minute seen has its bar
    metrics = {s["service"]: s for s in rt.metrics()}["tick-aggregator"]
    assert metrics["dead_lettered"] == 0
    # the outage did bite: some ticks came late (revisions) or never came over NATS (refilled)
    assert bars["revision"].max() > 0 or sequenced.recovered > 0, (sequenced.stats, bars["revision"].max())


async def test_ticks_a_restarted_collector_archived_around_a_nats_outage_end_up_in_their_bars(
    tmp_path: Path, nats_server_fn
) -> None:
    """The chaos run's interleaving, made deterministic: the collector is SIGKILLed after archiving a
    tick and before publishing it, restarts above its reserved block of numbers, and its first ticks
    (XAUUSD's first ever) go out while nats-server is down; their buffered copies reach the server
    before the aggregator has subscribed again (archived here, never delivered). The aggregator's
    outage replay is the first to bring them: the gap it reveals (the killed collector's last tick,
    before the outage) and the stream it had not seen must still end up in the bars."""
    rt, bus, log, publisher = await aggregator_and_collector(tmp_path, nats_server_fn.url)
    archived: list[dict[str, Any]] = []
    seqs = {"EURUSD": 0, "XAUUSD": 0}

    async def send(symbol: str, *, live: bool) -> None:
        seqs[symbol] += 1
        n = seqs[symbol]
        bid = round((1.1 if symbol == "EURUSD" else 2640.0) * (1 + 0.0001 * ((n * 7919) % 13 - 6)), 5)
        t = {"symbol": symbol, "ts": rt.clock.now_ms(), "bid": bid, "ask": round(bid + 0.0002, 5), "source": "polygon", "seq": n}
        await log.produce("tick_archive", t, key=symbol, timestamp_ms=t["ts"])
        archived.append(t)
        if live:
            await publisher.publish(f"ticks.{symbol}", t)

    async def flow(seconds: float, symbols: tuple[str, ...], *, live: bool) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            for symbol in symbols:
                await send(symbol, live=live)
            await asyncio.sleep(0.02)

    sequenced = rt.hosts["tick-aggregator"].sequenced[0]
    try:
        await flow(2.0, ("EURUSD",), live=True)
        await send("EURUSD", live=False)  # archived, then the collector is SIGKILLed before publishing it
        await asyncio.sleep(0.3)  # 9 s of clock time: before the outage's span and its margin
        seqs["EURUSD"] += 1000 - seqs["EURUSD"] % 1000  # the restarted collector resumes above its reserved block
        nats_server_fn.kill()
        await flow(0.5, PAIRS, live=False)  # the live copies reach the server before the aggregator subscribes again
        await asyncio.to_thread(nats_server_fn.start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while bus.reconnects == 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert bus.reconnects > 0
        await asyncio.sleep(0.1)
        await asyncio.wait_for(sequenced.drain(), 30)  # the outage replay first, then live ticks again
        await flow(4.0, PAIRS, live=True)
        await asyncio.sleep(2.5)  # 75 s of clock time: the last full minutes close
        await asyncio.wait_for(sequenced.drain(), 30)
    finally:
        await publisher.close()
        await asyncio.wait_for(rt.stop(), 60)

    bars = await query_df(tmp_path, "SELECT symbol, timeframe, ts, open, high, low, close, tick_count FROM historical_aggregates FINAL")
    ticks = pd.DataFrame(archived)
    expected = aggregate_frame(ticks, rt.topology.timeframes).set_index(["symbol", "timeframe", "ts"])
    got = bars.set_index(["symbol", "timeframe", "ts"])
    assert set(got.index.get_level_values("symbol")) == set(PAIRS)
    for column in ("open", "high", "low", "close", "tick_count"):
        wrong = got[column] != expected.loc[got.index, column]
        assert not wrong.any(), (column, got[wrong].index.tolist(), sequenced.stats)
    metrics = {s["service"]: s for s in rt.metrics()}["tick-aggregator"]
    assert metrics["dead_lettered"] == 0
