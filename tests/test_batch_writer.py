"""BatchWriter against real stores: batching by size and time, shutdown flushes, and a server
killed in the middle of writes (function-scoped servers from conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from framework.stores.base import StoreError, StoreUnavailable
from framework.stores.batch import BatchWriter
from framework.stores.clickhouse import ClickHouseStore
from framework.stores.postgres import PostgresStore
from framework.stores.redis import RedisStore
from framework.topology.model import Table

COLUMNS = {"seq": "int", "ts": "timestamp_ms", "symbol": "str", "bid": "float"}


def row(seq: int) -> dict[str, Any]:
    return {"seq": seq, "ts": int(time.time() * 1000), "symbol": "EURUSD", "bid": 1.1}


async def wait_until(predicate: Any, timeout: float = 30.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


def outage_logs(caplog: pytest.LogCaptureFixture, table: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "framework.stores.batch" and r.levelno == logging.ERROR and f"table {table} are failing" in r.getMessage()
    ]


def processes() -> dict[int, tuple[str, int]]:
    """pid → (state, parent pid), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (fields[0], int(fields[1]))
            except (OSError, IndexError, ValueError):
                continue
    return found


def crash(server: Any) -> None:
    """SIGKILL the PostgreSQL server and its backends, as a crash would. The backends run in their
    own process groups (PostgreSQL calls setsid for each child), so killing the postmaster's group
    leaves them alive for a moment, long enough to commit a COPY whose client then sees an error."""
    children = [pid for pid, (_, ppid) in processes().items() if ppid == server.pid]
    server.kill()
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(processes().get(pid, ("Z", 0))[0] != "Z" for pid in children):
        if time.monotonic() > deadline:
            raise AssertionError("postgres backends outlived the crash")
        time.sleep(0.02)


async def make_commits_durable(store: PostgresStore) -> None:
    """The test servers run with ``synchronous_commit=off``: a commit is acknowledged before its
    WAL is flushed, so a SIGKILL loses the last ~0.6 s of acknowledged commits. One synchronous
    commit flushes the WAL up to itself, and with it every commit before it, so the kill that
    follows tests the writer, not that setting."""
    await store.execute("BEGIN; SET LOCAL synchronous_commit TO on; SELECT txid_current(); COMMIT;")


@pytest.fixture
async def chdb(tmp_path: Path) -> AsyncIterator[ClickHouseStore]:
    store = ClickHouseStore("ch", f"chdb://{tmp_path}/clickhouse")
    await store.connect()
    await store.ensure_table("rows", Table(store="ch", order_by=["seq"]), COLUMNS, "ts")
    try:
        yield store
    finally:
        await store.close()


async def count(store: ClickHouseStore) -> int:
    return (await store.query("SELECT count() AS n FROM rows"))[0]["n"]


async def test_writes_when_a_batch_is_full(chdb: ClickHouseStore) -> None:
    writer = BatchWriter(chdb, "rows", batch_size=10, interval=3600)
    for i in range(25):
        await writer.add(row(i))
    await wait_until(lambda: writer.written == 20)
    await asyncio.sleep(0.3)
    assert writer.written == 20 and writer.pending == 5  # a partial batch waits for the interval
    await writer.close()
    assert writer.written == 25 and await count(chdb) == 25


async def test_writes_a_partial_batch_every_interval(chdb: ClickHouseStore) -> None:
    writer = BatchWriter(chdb, "rows", batch_size=10_000, interval=0.1)
    writer.start()
    for i in range(3):
        await writer.add(row(i))
    await wait_until(lambda: writer.written == 3)
    assert await count(chdb) == 3
    await writer.close()


async def test_close_flushes_and_then_refuses_rows(chdb: ClickHouseStore) -> None:
    writer = BatchWriter(chdb, "rows", batch_size=100_000, interval=3600)
    for i in range(1234):
        await writer.add(row(i))
    assert writer.written == 0
    await writer.close()
    assert writer.written == 1234 and await count(chdb) == 1234
    assert await chdb.query("SELECT count(DISTINCT seq) AS n FROM rows") == [{"n": 1234}]
    with pytest.raises(StoreError, match="closed"):
        await writer.add(row(0))


async def test_add_many_respects_the_buffer_bound_and_writes_every_row_once(chdb: ClickHouseStore) -> None:
    writer = BatchWriter(chdb, "rows", batch_size=100, interval=3600, max_buffer=250)
    await writer.add_many([row(i) for i in range(1000)])  # four times the buffer: waits for room as it goes
    assert writer.pending <= 250
    await writer.close()
    assert writer.written == 1000
    assert await chdb.query("SELECT count() AS n, count(DISTINCT seq) AS d FROM rows") == [{"n": 1000, "d": 1000}]
    with pytest.raises(StoreError, match="closed"):
        await writer.add_many([row(0)])


# --------------------------------------------------------------------------- a server down during writes


async def test_postgres_down_during_writes_blocks_retries_and_loses_nothing(
    postgres_server_fn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="framework.stores.batch")
    store = PostgresStore("timescale", postgres_server_fn.url, options={"connect_timeout": 2})
    await store.connect()
    name = f"rows_{uuid.uuid4().hex[:8]}"
    await store.ensure_table(name, Table(store="timescale", order_by=["seq"], retention="7d"), COLUMNS, "ts")
    writer = BatchWriter(store, name, batch_size=100, interval=0.05, max_buffer=500, backoff_initial=0.05, backoff_max=0.5)
    try:
        for i in range(150):
            await writer.add(row(i))
        await wait_until(lambda: writer.written == 100)  # the full batch; 50 wait for the interval
        await wait_until(lambda: writer.written == 150)

        await make_commits_durable(store)
        crash(postgres_server_fn)
        for i in range(150, 650):
            await writer.add(row(i))  # 500 rows: the buffer is now full
        await wait_until(lambda: writer.failures >= 3)
        assert writer.failing and writer.outages == 1 and writer.written == 150
        assert writer.pending == 500
        assert "unreachable" in (writer.last_error or "") and "fxrun infra up" in (writer.last_error or "")

        blocked = asyncio.create_task(writer.add(row(650)))
        await asyncio.sleep(1.0)
        assert not blocked.done()  # back-pressure: no room until the store takes rows again
        assert writer.pending == 500 and writer.waits == 1
        assert len(outage_logs(caplog, name)) == 1  # one error for the outage, not one per retry
        with pytest.raises(StoreUnavailable):
            await store.query(f"SELECT count(*) FROM {name}")

        postgres_server_fn.restart()
        await asyncio.wait_for(blocked, timeout=60)
        await wait_until(lambda: writer.pending == 0, timeout=60)
        assert not writer.failing and writer.written == 651
        assert any("recovered" in r.getMessage() for r in caplog.records)
        assert await store.query(f"SELECT count(*) AS n, count(DISTINCT seq) AS d, max(seq) AS top FROM {name}") == [
            {"n": 651, "d": 651, "top": 650}
        ]
    finally:
        await writer.close(timeout=5)
        await store.close()


async def test_postgres_down_at_shutdown_spills_every_unwritten_row(postgres_server_fn: Any, tmp_path: Path) -> None:
    store = PostgresStore("timescale", postgres_server_fn.url, options={"connect_timeout": 1})
    await store.connect()
    name = f"rows_{uuid.uuid4().hex[:8]}"
    await store.ensure_table(name, Table(store="timescale", order_by=["seq"]), COLUMNS, "ts")
    spill = tmp_path / "spill"
    writer = BatchWriter(store, name, batch_size=50, interval=0.05, backoff_initial=0.05, backoff_max=0.2, spill_dir=spill)
    try:
        for i in range(50):
            await writer.add(row(i))
        await wait_until(lambda: writer.written == 50)
        await make_commits_durable(store)
        crash(postgres_server_fn)
        for i in range(50, 120):
            await writer.add(row(i))
        await writer.close(timeout=1.0)
        assert writer.spilled == 70 and writer.pending == 0
        spilled = [orjson.loads(line)["seq"] for line in (spill / f"{name}.jsonl").read_bytes().splitlines()]
        assert spilled == list(range(50, 120))

        postgres_server_fn.restart()
        got = await store.query(f"SELECT count(*) AS n, max(seq) AS top FROM {name}")
        assert got == [{"n": 50, "top": 49}], (got, writer.stats, postgres_server_fn.log_path.read_text()[-6000:])
    finally:
        await store.close()


async def test_redis_down_during_writes_and_claims(redis_server_fn: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="framework.stores.batch")
    store = RedisStore("dragonfly", redis_server_fn.url, options={"connect_timeout": 1, "timeout": 2})
    await store.connect()
    table = Table(store="dragonfly", engine="kv", columns={"key": "str"}, retention="1h")
    await store.ensure_table("latest", table, {"key": "str", "bid": "float"})
    await store.ensure_table("dedup", table, {"key": "str"})
    writer = BatchWriter(store, "latest", batch_size=20, interval=0.05, max_buffer=100, backoff_initial=0.05, backoff_max=0.5)
    try:
        assert await store.claim("dedup", ["a", "b"]) == [True, True]
        redis_server_fn.kill()
        with pytest.raises(StoreUnavailable, match="fxrun infra up"):
            await store.claim("dedup", ["c"])
        for i in range(100):
            await writer.add({"key": f"k{i}", "bid": float(i)})
        await wait_until(lambda: writer.failures >= 2)
        blocked = asyncio.create_task(writer.add({"key": "k100", "bid": 100.0}))
        await asyncio.sleep(0.5)
        assert not blocked.done() and writer.pending == 100 and writer.written == 0
        assert len(outage_logs(caplog, "latest")) == 1

        redis_server_fn.restart()
        await asyncio.wait_for(blocked, timeout=60)
        await wait_until(lambda: writer.pending == 0, timeout=60)
        assert writer.written == 101
        assert [await store.get_latest("latest", f"k{i}") for i in (0, 57, 100)] == [
            {"key": "k0", "bid": 0.0}, {"key": "k57", "bid": 57.0}, {"key": "k100", "bid": 100.0}
        ]
        assert await store.claim("dedup", ["c", "d"]) == [True, True]
    finally:
        await writer.close(timeout=5)
        await store.close()


async def test_rows_of_a_producer_cancelled_while_it_waits_for_room_are_kept() -> None:
    """A stop cancels a producer waiting on a full buffer: the rows it counted as published still get written."""
    class Slow:
        name = "slow"
        kind = "test"

        def __init__(self) -> None:
            self.rows: list = []
            self.gate = asyncio.Event()

        async def insert(self, table, rows):  # type: ignore[no-untyped-def]
            await self.gate.wait()
            self.rows.extend(rows)

    store = Slow()
    writer = BatchWriter(store, "t", batch_size=2, interval=0.01, max_buffer=4)  # type: ignore[arg-type]
    producer = asyncio.ensure_future(writer.add_many([{"i": i} for i in range(10)]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not producer.done() and writer.pending == 4  # full: the producer waits for room
    producer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await producer
    assert writer.pending == 10 and writer.added == 10  # every row it handed over is buffered
    store.gate.set()
    await writer.close()
    assert sorted(r["i"] for r in store.rows) == list(range(10))
