"""Batched insert throughput into ClickHouse (embedded chdb) and PostgreSQL (COPY), each with a
baseline measured in the same run, so the figures read as ratios on any machine.

    .venv/bin/python bench/bench_stores.py              # 200,000 rows per batched measurement
    .venv/bin/python bench/bench_stores.py -n 50000     # quicker

Prints, in one run (best of 3 repeats, rows of the tick.v1 shape):
0. the row → column conversion ``ClickHouseStore.insert`` does before handing a batch to the
   client (``column_data``), on ``--converted`` rows shaped as the backtest writes them:
   risk_decisions (two JSON columns, traced, a quantity only when approved), portfolio_value
   (all numbers) and historical_aggregates (bars whose version column ``revision`` is mostly
   absent: its default fills in), against the one comprehension per column it replaced (best
   of 7, conversion only, nothing inserted); ``--conversion-only`` stops there;
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.stores.base import Store  # noqa: E402
from framework.stores.batch import BatchWriter  # noqa: E402
from framework.stores.clickhouse import ClickHouseStore, column_data, column_names  # noqa: E402
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


def row_by_row(rows: Sequence[Mapping[str, Any]], columns: list[str], json_columns: set[str], defaults: dict[str, Any]) -> list[list[Any]]:
    """The conversion ``column_data`` replaced: the baseline of the conversion figures."""

    def _or(value: Any, default: Any) -> Any:
        return default if value is None else value

    return [
        [orjson.dumps(row.get(c)).decode() for row in rows]
        if c in json_columns
        else [_or(row.get(c), defaults[c]) for row in rows]
        if c in defaults
        else [row.get(c) for row in rows]
        for c in columns
    ]


def checks(i: int) -> dict[str, Any]:
    """The ``checks`` of a risk decision: every check the gate ran and what it saw."""
    equity = 100_000.0 + (i % 977) * 3.5
    return {
        "reconciled": {"ok": True},
        "stale": {"ok": True, "age_ms": i % 7, "ttl_ms": 60000},
        "throttle": {"ok": True, "recent": i % 5, "limit": 1000, "window_ms": 60000},
        "position": {"ok": True, "net": float(i % 3 - 1), "filled": 0.0, "close": 0.0, "open": i % 2 == 0},
        "trading_state": {"ok": True, "state": "active"},
        "prices": {"ok": True, "age_ms": 0, "max_age_ms": 120000},
        "spread": {"ok": True, "spread_pips": 1.028 + (i % 11) * 0.01, "limit_pips": 1000000.0},
        "calendar": {"ok": True, "currencies": ["EUR", "USD"]},
        "confidence": {"ok": True, "confidence": 1.0, "min": 0.0},
        "sizing": {"ok": True, "equity": equity, "atr_timeframe": "1m", "atr": 0.00024123416097007687 + i * 1e-9, "stop_distance": None,
                   "take_profit_distance": None, "lots": 1.0, "raw_lots": 1.0, "risk": 0.0, "loss_per_lot": 0.0, "capped": False},
        "symbol_exposure": {"ok": True, "before": 0.0, "after": 108125.14 + i, "limit": 1000000000000.0},
        "currency_exposure": {"ok": True, "after": {"EUR": 108125.14 + i, "USD": -108125.14 - i}, "limit": 1000000000000.0},
        "open_positions": {"ok": True, "before": i % 2, "after": 1, "limit": 6},
        "leverage": {"ok": True, "before": 0.0, "after": 1.081251, "limit": 1000.0, "equity": equity},
        "daily_loss": {"ok": True, "loss": 0.0, "limit": 0.99, "day_start_equity": 100000.0, "equity": equity},
        "drawdown": {"ok": True, "drawdown": 0.0, "limit": 0.99, "peak": 100000.0, "equity": equity},
    }


def decision_rows(n: int, start_ms: int) -> list[dict[str, Any]]:
    """risk_decisions rows as the gate writes them: traced (msg_id, cause_id), a quantity only when approved."""
    rows = []
    for i in range(n):
        ts = start_ms + i * 60_000
        approved = i % 4 != 0
        row = {"decision_id": f"rd-{i:024x}", "signal_id": f"sma-10-30-dcc16af2-EURUSD-1m-{ts}", "symbol": "EURUSD", "ts": ts,
               "decision": "approved" if approved else "rejected", "reasons": [] if approved else ["throttle"], "checks": checks(i)}
        if approved:
            row["quantity"] = 1.0
        rows.append({**row, "msg_id": f"risk-management-sim-{i}", "cause_id": f"inference-service-sim-{i}"})
    return rows


def equity_rows(n: int, start_ms: int) -> list[dict[str, Any]]:
    return [
        {"ts": start_ms + i * 60_000, "equity": 100_000.0 + i * 0.5, "balance": 100_000.0, "margin_used": 1081.25,
         "unrealized": i * 0.5, "drawdown": (i % 50) * 1e-4, "open_positions": i % 2}
        for i in range(n)
    ]


def bar_rows(n: int, start_ms: int) -> list[dict[str, Any]]:
    """bar.v1 rows; one in ten revises an earlier bar (``revision``), the others leave it to the column's default."""
    rows = []
    for i in range(n):
        price = 1.08 + (i % 100) * 1e-5
        row = {"symbol": "EURUSD", "timeframe": "1m", "ts": start_ms + i * 60_000, "ts_close": start_ms + (i + 1) * 60_000,
               "open": price, "high": price + 2e-4, "low": price - 1e-4, "close": price + 1e-4, "volume": 0.0,
               "tick_count": 40 + i % 9, "spread_mean": 1.2e-4, "spread_min": 1e-4, "spread_max": None, "source": "dukascopy",
               "complete": True, "seq": i}
        if i % 10 == 0:
            row["revision"] = 1
        rows.append(row)
    return rows


BAR_COLUMNS = ["symbol", "timeframe", "ts", "ts_close", "open", "high", "low", "close", "volume", "tick_count",
               "spread_mean", "spread_min", "spread_max", "source", "complete", "seq", "revision"]  # fmt: skip
CONVERSIONS: dict[str, tuple[list[str], set[str], dict[str, Any], Callable[[int, int], list[dict[str, Any]]]]] = {
    "risk_decisions": (
        ["checks", "decision", "decision_id", "quantity", "reasons", "signal_id", "symbol", "ts", "msg_id", "cause_id"],
        {"checks", "reasons"},
        {},
        decision_rows,
    ),
    "portfolio_value": (["ts", "equity", "balance", "margin_used", "unrealized", "drawdown", "open_positions"], set(), {}, equity_rows),
    "historical_aggregates": (BAR_COLUMNS, set(), {"revision": 0}, bar_rows),
}


def as_declared(names: list[str]) -> list[str]:
    """Column names as a topology file gives them: equal to the rows' keys (literals, which Python
    interns), but other objects."""
    return [name.encode().decode() for name in names]


def bench_conversion(n: int, repeats: int = 7) -> None:
    """Before: the comprehensions on the names as declared (what ``ensure_table`` kept); after:
    ``column_data`` on ``column_names`` (what it keeps now), and on the declared names, to show
    what each change gives. The three run in turn within each repeat, so a slow spell of the
    machine hits them all; each figure is the best of ``repeats``."""
    start = int(time.time() * 1000) - 2 * DAY_MS
    print(f"Row → column conversion before a ClickHouse insert, {n:,} rows (ms per batch, best of {repeats}):")
    for table, (names, json_columns, defaults, make) in CONVERSIONS.items():
        rows, declared = make(n, start), as_declared(names)
        interned = column_names(declared)
        runs: dict[str, Callable[[], list[list[Any]]]] = {
            "before": lambda: row_by_row(rows, declared, json_columns, defaults),
            "after": lambda: column_data(rows, interned, json_columns, defaults),
            "declared": lambda: column_data(rows, declared, json_columns, defaults),
        }
        assert runs["before"]() == runs["after"]() == runs["declared"]()
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(repeats):
            for label, run in runs.items():
                began = time.perf_counter()
                run()
                best[label] = min(best[label], time.perf_counter() - began)
        before, after, declared_only = best["before"] * 1e3, best["after"] * 1e3, best["declared"] * 1e3
        print(f"  {table:<22} before {before:7.2f}  after {after:7.2f}  ({before / after:4.2f}x faster; "
              f"{before / declared_only:4.2f}x without interned names)")


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
    parser.add_argument("--converted", type=int, default=10_000, help="rows per batch of the conversion figures")
    parser.add_argument("--conversion-only", action="store_true", help="only the row → column conversion (no engine)")
    args = parser.parse_args()
    bench_conversion(args.converted)
    if args.conversion_only:
        return
    with tempfile.TemporaryDirectory(prefix="fxflow-bench-") as tmp:
        await bench_clickhouse(args.n, args.batch, args.single, Path(tmp))
        if not args.skip_postgres:
            await bench_postgres(args.n, args.batch, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
