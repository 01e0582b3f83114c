"""`fxrun topology=live` on real servers: the data foundation runs against the feed simulators
(``simulate_feeds=true``); ticks flow over NATS, archive to Kafka, land in PostgreSQL and (once,
through data-bridge and Redis dedup) in ClickHouse, and bars are aggregated from them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import clickhouse_connect
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]


def test_live_profile_runs_the_built_pipeline_on_real_servers(
    tmp_path: Path, nats_server, kafka_server, postgres_server, redis_server
) -> None:
    bootstrap = kafka_server.url.removeprefix("kafka://")
    env = dict(
        os.environ,
        FXFLOW_NATS_URL=nats_server.url,
        FXFLOW_KAFKA_BOOTSTRAP=bootstrap,
        FXFLOW_POSTGRES_URL=postgres_server.url,
        FXFLOW_REDIS_URL=redis_server.url,
    )
    data_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "framework.cli", "topology=live", f"data_dir={data_dir}", "pairs=[EURUSD,XAUUSD]",
        "simulate_feeds=true",
        # fixed windows, not the wall clock's: a feed from now is silent over the FX weekend and on 25 December and
        # 1 January (the quotes of an open hour are replayed at real pace, stamped live), and two days before a
        # holiday's weekend hold no bar
        "+topology.services.polygon-live-collector.params.simulation={seed: 5, start: '2026-11-02T17:00:00Z', duration: 4s, "
        "mean_interval_ms: 25}",
        "topology.services.polygon-historical-downloader.params.run=once",
        "topology.services.polygon-historical-downloader.params.lookback=2d",
        "++topology.services.polygon-historical-downloader.params.end=2026-11-02T18:00:00Z",
        "topology.services.polygon-historical-downloader.params.requests_per_minute=null",
        "+topology.services.external-data-collector.params.polls=1",
        "topology.services.dukascopy-historical-downloader.params.run=once",
        "topology.services.dukascopy-historical-downloader.params.start=2026-10-30T18:00Z",
        "++topology.services.dukascopy-historical-downloader.params.end=2026-10-30T20:00Z",
        "topology.nats.auth=null", "topology.runtime.metrics_port=null", "duration=90s",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert postgres_server.url.split("@")[0].split(":")[-1] not in result.stderr  # no password in logs

    snapshot = json.loads((data_dir / "metrics.json").read_text())
    assert snapshot["pubsub"]["disconnects"] == 0 and snapshot["pubsub"]["publish_errors"] == 0
    metrics = {s["service"]: s for s in snapshot["services"]}
    produced = metrics["polygon-live-collector"]["out"]
    assert produced > 20
    assert metrics["spread-watch"]["in"] == produced  # delivered over NATS
    assert all(s["dead_lettered"] == 0 and s["errors"] == 0 for s in metrics.values())

    async def pg_ids() -> list[str]:
        conn = await asyncpg.connect(postgres_server.url)
        try:
            rows = await conn.fetch("SELECT msg_id FROM live_ticks WHERE symbol = ANY($1::text[])", ["EURUSD", "XAUUSD"])
            return [r["msg_id"] for r in rows]
        finally:
            await conn.close()

    async def kafka_ids() -> list[str]:
        consumer = AIOKafkaConsumer("tick_archive", bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        ids: list[str] = []
        try:
            for _ in range(20):
                batch = await consumer.getmany(timeout_ms=500)
                got = [dict(r.headers).get("fxflow-id", b"").decode() for records in batch.values() for r in records]
                ids += got
                if not got and len(ids) >= produced:
                    break
        finally:
            await consumer.stop()
        return ids

    tick_ids = asyncio.run(pg_ids())
    archived_ids = asyncio.run(kafka_ids())
    assert len(tick_ids) >= produced and len(archived_ids) >= produced
    # causation: each tick's id travels in its Kafka headers and its NATS headers (data-bridge, tick-aggregator)
    assert all(i.startswith("polygon-live-collector-") for i in tick_ids) and set(archived_ids) == set(tick_ids)
    client = clickhouse_connect.get_client(dsn=f"chdb://{data_dir.resolve()}/clickhouse")
    ticks_in_stats = client.query("SELECT sum(ticks) FROM tick_stats").result_rows[0][0]
    archived = client.query("SELECT count() FROM historical_ticks WHERE source = 'polygon'").result_rows[0][0]
    downloaded = client.query("SELECT count() FROM historical_ticks WHERE source = 'dukascopy'").result_rows[0][0]
    bars = dict(client.query("SELECT timeframe, count() FROM historical_aggregates WHERE source = 'aggregator' GROUP BY timeframe").result_rows)
    backfilled = client.query("SELECT count() FROM historical_aggregates WHERE source = 'polygon'").result_rows[0][0]
    bridged_causes = {r[0] for r in client.query("SELECT cause_id FROM historical_ticks WHERE source = 'polygon'").result_rows}
    bar_causes = {r[0] for r in client.query("SELECT cause_id FROM live_aggregates").result_rows}
    external = {
        t: client.query(f"SELECT count() FROM {t}").result_rows[0][0]
        for t in ("external_economic_calendar", "external_fred_indicators", "external_commodity_prices")
    }
    client.close()
    assert ticks_in_stats == produced
    assert archived == produced  # each tick once, without FINAL
    assert bridged_causes == set(tick_ids)  # data-bridge names the tick it archived
    assert bar_causes <= set(tick_ids) | {None}  # a bar the clock closed has no cause
    # the feed runs 4 s: no whole minute, and a live aggregator publishes only buckets it saw from their
    # start (tests/test_chaos.py checks its bars on real servers); here it got every tick over NATS
    assert metrics["tick-aggregator"]["in"] == produced and set(bars) <= {"1m", "5m", "15m", "30m", "1h", "4h", "1d"}
    assert downloaded > 0
    assert backfilled > 0 and all(n > 0 for n in external.values()), (backfilled, external)
