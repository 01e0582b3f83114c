"""`fxrun topology=live` on real servers: ticks flow over NATS, archive to Kafka, land in PostgreSQL and ClickHouse."""

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
        "topology.services.synthetic-ticks.enabled=true",
        "+topology.services.synthetic-ticks.params={seed: 5, duration: 3s, mean_interval_ms: 25}",
        "topology.nats.auth=null", "topology.runtime.metrics_port=null", "duration=60s",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert postgres_server.url.split("@")[0].split(":")[-1] not in result.stderr  # no password in logs

    snapshot = json.loads((data_dir / "metrics.json").read_text())
    assert snapshot["pubsub"]["disconnects"] == 0 and snapshot["pubsub"]["publish_errors"] == 0
    metrics = {s["service"]: s for s in snapshot["services"]}
    produced = metrics["synthetic-ticks"]["out"]
    assert produced > 20
    assert metrics["spread-watch"]["in"] == produced  # delivered over NATS
    assert all(s["dead_lettered"] == 0 and s["errors"] == 0 for s in metrics.values())

    async def pg_count() -> int:
        conn = await asyncpg.connect(postgres_server.url)
        try:
            return await conn.fetchval("SELECT count(*) FROM live_ticks WHERE symbol = ANY($1::text[])", ["EURUSD", "XAUUSD"])
        finally:
            await conn.close()

    async def kafka_count() -> int:
        consumer = AIOKafkaConsumer("tick_archive", bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        seen = 0
        try:
            for _ in range(20):
                batch = await consumer.getmany(timeout_ms=500)
                got = sum(len(v) for v in batch.values())
                seen += got
                if not got and seen >= produced:
                    break
        finally:
            await consumer.stop()
        return seen

    assert asyncio.run(pg_count()) >= produced
    assert asyncio.run(kafka_count()) >= produced
    client = clickhouse_connect.get_client(dsn=f"chdb://{data_dir.resolve()}/clickhouse")
    ticks_in_stats = client.query("SELECT sum(ticks) FROM tick_stats").result_rows[0][0]
    client.close()
    assert ticks_in_stats == produced
