"""Batched insert throughput into ClickHouse (embedded chdb) and PostgreSQL (COPY), each with a
baseline measured in the same run, so the figures read as ratios on any machine.

    .venv/bin/python bench/bench_stores.py              # 200,000 rows per batched measurement
    .venv/bin/python bench/bench_stores.py -n 50000     # quicker

Prints, in one run (best of 3 repeats, rows of the tick.v1 shape):
1. ClickHouse (chdb): ``store.insert`` in batches of ``--batch`` rows, the same rows through a
   ``BatchWriter`` (add → written), and the baseline of one insert per row;
2. PostgreSQL, started with ``framework.infra.servers.PostgresServer`` in a temporary directory,
   on a daily-partitioned table: ``store.insert`` (binary COPY) in batches, through a
   ``BatchWriter``, and the baseline of asyncpg ``executemany`` INSERT of the same batches;
   then the same batches into a table with a unique ``key`` (as ``live_ticks``), once new (a
   plain COPY) and once again (every row a repeat, as a retried batch: the COPY fails, the batch
   goes through a staging table and ``INSERT … ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.stores.base import Store  # noqa: E402
from framework.stores.batch import BatchWriter  # noqa: E402
from framework.stores.clickhouse import ClickHouseStore  # noqa: E402
from framework.stores.postgres import DAY_MS, PostgresStore  # noqa: E402
from framework.topology.model import Table  # noqa: E402

COLUMNS = {"symbol": "str", "ts": "timestamp_ms", "bid": "float", "ask": "float", "seq": "int?", "source": "str"}
KEY = ["symbol", "ts", "source", "seq", "bid", "ask"]
REPEATS = 3
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"]


def ticks(n: int, start_ms: int) -> list[dict[str, Any]]:
    """``n`` ticks spread over the last two days (so PostgreSQL writes two daily partitions)."""
    step = max(2 * DAY_MS // max(n, 1), 1)
    return [
        {"symbol": SYMBOLS[i % 4], "ts": start_ms + i * step, "bid": 1.1 + (i % 100) * 1e-5, "ask": 1.1002, "seq": i, "source": "bench"}
        for i in range(n)
    ]


def chunks(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def best_rate(n: int, run: Callable[[int], Awaitable[None]]) -> float:
    """Rows per second of the fastest of REPEATS runs (the least disturbed by the machine)."""
    times = []
    for repeat in range(REPEATS):
        start = time.perf_counter()
        await run(repeat)
        times.append(time.perf_counter() - start)
    return n / min(times)


async def through_writer(store: Store, table: str, rows: list[dict[str, Any]], batch: int) -> None:
    writer = BatchWriter(store, table, batch_size=batch, interval=0.05, max_buffer=4 * batch)
    for row in rows:
        await writer.add(row)
    await writer.close()
    assert writer.written == len(rows), writer.stats


def line(label: str, rate: float, base: float | None = None) -> None:
    ratio = f"  ({rate / base:6.1f}x baseline)" if base else ""
    print(f"  {label:<46} {rate:>12,.0f} rows/s{ratio}")


async def bench_clickhouse(n: int, batch: int, single: int, workdir: Path) -> None:
    store = ClickHouseStore("bench", f"chdb://{workdir}/clickhouse")
    await store.connect()
    table = Table(store="bench", engine="MergeTree", order_by=["symbol", "ts"])
    start = int(time.time() * 1000) - 2 * DAY_MS
    rows, few = ticks(n, start), ticks(single, start)
    try:
        names = [f"ch_{i}" for i in range(3 * REPEATS)]
        for name in names:
            await store.ensure_table(name, table, COLUMNS, "ts")

        async def per_row(repeat: int) -> None:
            for row in few:
                await store.insert(names[repeat], [row])

        async def batched(repeat: int) -> None:
            for part in chunks(rows, batch):
                await store.insert(names[REPEATS + repeat], part)

        async def writer(repeat: int) -> None:
            await through_writer(store, names[2 * REPEATS + repeat], rows, batch)

        base = await best_rate(single, per_row)
        print(f"ClickHouse (chdb), {n:,} rows, batches of {batch:,}:")
        line(f"one insert per row ({single:,} rows, baseline)", base)
        line("store.insert, batched", await best_rate(n, batched), base)
        line("BatchWriter (add → written)", await best_rate(n, writer), base)
        counted = (await store.query(f"SELECT count() AS c FROM {names[REPEATS]}"))[0]["c"]
        assert counted == n, counted
    finally:
        await store.close()


async def bench_postgres(n: int, batch: int, workdir: Path) -> None:
    from framework.infra.servers import PostgresServer

    server = PostgresServer(workdir / "postgres")
    server.start()
    try:
        store = PostgresStore("bench", server.url, options={"pool_max": 2})
        await store.connect()
        table = Table(store="bench", engine="hypertable", order_by=["symbol", "ts"], retention="7d")
        start = int(time.time() * 1000) - 2 * DAY_MS
        rows = ticks(n, start)
        names = [f"pg_{uuid.uuid4().hex[:6]}_{i}" for i in range(4 * REPEATS)]
        keyed = table.model_copy(update={"key": KEY})
        try:
            for i, name in enumerate(names):
                await store.ensure_table(name, keyed if i >= 3 * REPEATS else table, COLUMNS, "ts")
            for name in names:  # partitions exist before timing: the figures are about rows
                await store.insert(name, [rows[0], rows[-1]])
                await store.execute(f"TRUNCATE {name}")
            columns = list(COLUMNS)

            async def executemany(repeat: int) -> None:
                sql = f"INSERT INTO {names[repeat]} ({', '.join(columns)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})"
                for part in chunks(rows, batch):
                    records = [tuple(r.get(c) for c in columns) for r in part]
                    await store._run(lambda conn, recs=records: conn.executemany(sql, recs), idempotent=False)

            async def copy(repeat: int) -> None:
                for part in chunks(rows, batch):
                    await store.insert(names[REPEATS + repeat], part)

            async def writer(repeat: int) -> None:
                await through_writer(store, names[2 * REPEATS + repeat], rows, batch)

            async def keyed_copy(repeat: int) -> None:
                for part in chunks(rows, batch):
                    await store.insert(names[3 * REPEATS + repeat], part)

            base = await best_rate(n, executemany)
            mode = store.table_mode(names[0])
            print(f"PostgreSQL ({mode} table, timescaledb {'present' if store.timescale_available else 'absent'}), {n:,} rows, batches of {batch:,}:")
            line("executemany INSERT (baseline)", base)
            line("store.insert (binary COPY)", await best_rate(n, copy), base)
            line("BatchWriter (add → written, COPY)", await best_rate(n, writer), base)
            line("store.insert, keyed table (new rows)", await best_rate(n, keyed_copy), base)
            line("store.insert, keyed table (every row a repeat)", await best_rate(n, keyed_copy), base)
            counts = [r["c"] for r in await store.query(f"SELECT count(*) AS c FROM {names[REPEATS]}")]
            assert counts == [n], counts
            counts = [r["c"] for r in await store.query(f"SELECT count(*) AS c FROM {names[3 * REPEATS]}")]
            assert counts == [n], counts
        finally:
            await store.close()
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200_000, help="rows per batched measurement")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per batch")
    parser.add_argument("--single", type=int, default=300, help="rows for the one-insert-per-row ClickHouse baseline")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fxflow-bench-") as tmp:
        await bench_clickhouse(args.n, args.batch, args.single, Path(tmp))
        if not args.skip_postgres:
            await bench_postgres(args.n, args.batch, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
