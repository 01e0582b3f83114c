"""The stores against real engines: embedded ClickHouse (chdb), PostgreSQL and Redis servers
started by the fixtures in conftest.py. No mocks."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import re
import sys
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from framework.context import TableHandle
from framework.stores.base import StoreError, StoreUnavailable, open_store, safe_url
from framework.stores.batch import BatchWriter
from framework.stores.clickhouse import ClickHouseStore, column_data, column_names, create_table_sql
from framework.stores.columns import time_column_of
from framework.stores.postgres import DAY_MS, PostgresStore, bind, partition_name
from framework.stores.redis import RedisStore
from framework.topology.model import StoreConfig, Table

TICK_COLUMNS = {
    "symbol": "str",
    "ts": "timestamp_ms",
    "bid": "float",
    "ask": "float",
    "seq": "int?",
    "source": "str",
    "meta": "json?",
    "live": "bool?",
}
SECRET = "s3cret-Hunter2-do-not-print"


def now_ms() -> int:
    return int(time.time() * 1000)


def tick(seq: int, ts: int, symbol: str = "EURUSD") -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": 1.1 + seq * 1e-5, "ask": 1.1002, "seq": seq, "source": "test",
            "meta": {"n": seq}, "live": seq % 2 == 0}


def uniq(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def wait_until(predicate: Any, timeout: float = 30.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


# --------------------------------------------------------------------------- ClickHouse (chdb)


@pytest.fixture
async def chdb(tmp_path: Path) -> AsyncIterator[ClickHouseStore]:
    store = ClickHouseStore("ch", f"chdb://{tmp_path}/clickhouse")
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


def test_clickhouse_ddl_from_table_declaration() -> None:
    table = Table(store="ch", engine="ReplacingMergeTree", order_by=["symbol", "ts"], retention="3d")
    sql = create_table_sql("live_ticks", table, TICK_COLUMNS, "ts")
    assert "ENGINE = ReplacingMergeTree() ORDER BY (`symbol`, `ts`)" in sql
    assert "TTL toDateTime(intDiv(`ts`, 1000)) + INTERVAL 259200 SECOND" in sql
    assert "`seq` Nullable(Int64)" in sql and "`meta` Nullable(String)" in sql and "`live` Nullable(Bool)" in sql
    forever = create_table_sql("t", Table(store="ch", order_by=["ts"], retention="forever"), {"ts": "timestamp_ms"}, None)
    assert "TTL" not in forever and "ENGINE = MergeTree()" in forever
    by_columns = create_table_sql("t", Table(store="ch", retention="90d"), {"id": "str", "at": "timestamp_ms"}, None)
    assert "intDiv(`at`, 1000)" in by_columns and "ORDER BY (tuple())" in by_columns
    assert time_column_of({"id": "str"}, None) is None
    with pytest.raises(StoreError):
        create_table_sql("t; DROP TABLE x", table, TICK_COLUMNS, "ts")
    with pytest.raises(StoreError):
        create_table_sql("t", table, {"a": "Int64; DROP TABLE x"}, None)


async def test_clickhouse_round_trip_dedup_ttl_and_typed_reads(chdb: ClickHouseStore) -> None:
    table = Table(store="ch", engine="ReplacingMergeTree", order_by=["symbol", "ts"], retention="1d")
    await chdb.ensure_table("ticks", table, TICK_COLUMNS, "ts")
    await chdb.ensure_table("ticks", table, TICK_COLUMNS, "ts")
    now = now_ms()
    writer = BatchWriter(chdb, "ticks", batch_size=50, interval=0.05)
    fresh = [tick(i, now - i) for i in range(200)]
    for row in [*fresh, *fresh[:80], *(tick(1000 + i, now - 3 * DAY_MS - i) for i in range(30))]:
        await writer.add(row)
    await writer.close()
    assert writer.written == 310 and writer.pending == 0

    await chdb.command("OPTIMIZE TABLE ticks FINAL")
    counts = await chdb.query("SELECT count() AS n, uniqExact(seq) AS d, max(seq) AS top FROM ticks")
    assert counts == [{"n": 200, "d": 200, "top": 199}]  # 80 duplicates merged away, 30 expired rows gone

    rows = await chdb.query(
        "SELECT seq, ts, meta, live FROM ticks WHERE symbol = {symbol:String} AND seq < {below:Int64} ORDER BY seq",
        {"symbol": "EURUSD", "below": 3},
    )
    assert rows == [{"seq": i, "ts": now - i, "meta": f'{{"n":{i}}}', "live": i % 2 == 0} for i in range(3)]
    assert await chdb.query("SELECT count() AS n FROM ticks WHERE symbol = {s:String}", {"s": "' OR 1=1 --"}) == [{"n": 0}]

    frame = await chdb.query_df("SELECT seq, ts, bid FROM ticks WHERE seq >= {lo:Int64} ORDER BY seq", {"lo": 190})
    assert isinstance(frame, pd.DataFrame) and list(frame["seq"]) == list(range(190, 200))
    assert frame["ts"].dtype.kind == "i" and frame["bid"].dtype.kind == "f"

    arrow = await chdb.query_arrow("SELECT symbol, ts, bid FROM ticks ORDER BY ts")
    assert isinstance(arrow, pa.Table) and arrow.num_rows == 200
    assert arrow.schema.field("ts").type == pa.int64() and arrow.schema.field("bid").type == pa.float64()


async def test_clickhouse_rejected_row_is_set_aside_and_the_rest_written(chdb: ClickHouseStore, tmp_path: Path) -> None:
    await chdb.ensure_table("ticks", Table(store="ch", order_by=["ts"]), TICK_COLUMNS, "ts")
    spill = tmp_path / "spill"
    writer = BatchWriter(chdb, "ticks", batch_size=64, interval=0.05, spill_dir=spill)
    now = now_ms()
    for i in range(64):
        await writer.add(tick(i, now + i) if i != 37 else {**tick(i, now + i), "ts": "not a number"})
    await writer.close()
    assert writer.rejected == 1 and writer.written == 63 and writer.spilled == 0
    assert (await chdb.query("SELECT count() AS n FROM ticks"))[0]["n"] == 63
    rejected = (spill / "ticks.rejected.jsonl").read_text().splitlines()
    assert len(rejected) == 1 and '"seq":37' in rejected[0]


def row_by_row(rows: Sequence[Mapping[str, Any]], columns: list[str], json_columns: set[str], defaults: dict[str, Any]) -> list[list[Any]]:
    """The conversion ``column_data`` replaced, kept as the reference it must match."""
    return [
        [orjson.dumps(row.get(c)).decode() for row in rows]
        if c in json_columns
        else [_or(row.get(c), defaults[c]) for row in rows]
        if c in defaults
        else [row.get(c) for row in rows]
        for c in columns
    ]


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


class GetSays(dict):  # type: ignore[type-arg]
    """A dict whose own ``get`` answers differently from ``dict.get``: it must be asked."""

    def get(self, key: Any, default: Any = None) -> Any:
        return f"own {key}" if key not in self else super().get(key, default)


class Frozen(Mapping[str, Any]):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class Unreadable(Frozen):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError(f"cannot read {key}")


COLUMNS = ["ts", "symbol", "qty", "meta", "reasons", "rev", "note"]
JSON_COLUMNS = {"meta", "reasons"}
DEFAULTS = {"rev": 0, "note": "-"}


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    simple = [None, rng.randrange(-(2**40), 2**40), rng.uniform(-1e6, 1e6), rng.choice(["", "EURUSD", "é ✓ \"q\"", "a\nb"]), rng.random() < 0.5, 0.0]
    if kind < 6:
        return simple[kind]
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["ok", "age_ms", "n", "é"]): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_row(rng: random.Random) -> dict[str, Any]:
    row = {c: random_value(rng) for c in COLUMNS if rng.random() < 0.8}  # a column a row lacks, or holds None
    for extra in ("msg_id", "cause_id", "unknown")[: rng.randrange(4)]:
        row[extra] = random_value(rng)
    return row


def assert_same_columns(rows: Sequence[Mapping[str, Any]], columns: list[str] = COLUMNS) -> None:
    got, want = column_data(rows, columns, JSON_COLUMNS, DEFAULTS), row_by_row(rows, columns, JSON_COLUMNS, DEFAULTS)
    assert type(got) is list and all(type(column) is list for column in got)
    assert [[(type(v), v) for v in column] for column in got] == [[(type(v), v) for v in column] for column in want]


def test_column_data_matches_the_row_by_row_conversion_on_random_rows() -> None:
    rng = random.Random(20260509)
    for _ in range(300):
        rows = [random_row(rng) for _ in range(rng.randrange(1, 40))]
        assert_same_columns(rows)
        assert_same_columns(tuple(rows[:1]))
        assert_same_columns(rows, columns=rng.sample(COLUMNS, rng.randrange(len(COLUMNS) + 1)) + ["absent"])
    shared = random_row(rng)
    assert_same_columns([shared, shared, {}, {"meta": None, "rev": None, "note": 0}])


def test_column_data_asks_rows_that_are_not_plain_dicts_through_their_own_get() -> None:
    rng = random.Random(7)
    wrappers = [GetSays, Frozen, MappingProxyType, OrderedDict, lambda r: defaultdict(lambda: "made up", r)]
    for wrap in wrappers:
        rows = [wrap(random_row(rng)) for _ in range(30)]
        assert_same_columns(rows)
        assert_same_columns([random_row(rng), *rows, random_row(rng)])  # mixed with plain dicts
    odd = GetSays({"ts": 1})
    assert column_data([odd], ["ts", "symbol", "rev"], set(), DEFAULTS) == [[1], ["own symbol"], ["own rev"]]


def test_column_data_fails_on_the_same_value_as_the_row_by_row_conversion() -> None:
    unreadable = Unreadable({})
    for rows in (
        [{"meta": 1}, {"meta": {1.5: "non-str key"}, "reasons": object()}, {"reasons": {2, 3}}],
        [Frozen({"meta": 1}), Frozen({"meta": {1.5: "non-str key"}}), unreadable],  # the bad value comes before the bad row
    ):
        with pytest.raises(TypeError) as want:
            row_by_row(rows, ["meta", *COLUMNS], JSON_COLUMNS, DEFAULTS)
        with pytest.raises(TypeError) as got:
            column_data(rows, ["meta", *COLUMNS], JSON_COLUMNS, DEFAULTS)
        assert type(got.value) is type(want.value) and str(got.value) == str(want.value)
    with pytest.raises(RuntimeError):
        column_data([unreadable], COLUMNS, JSON_COLUMNS, DEFAULTS)


def test_column_names_are_the_interned_strings() -> None:
    declared = [name.encode().decode() for name in ("symbol", "ts", "meta")]  # equal to literals, other objects
    names = column_names(declared)
    assert names == declared and all(n is sys.intern(d) and n is not d for n, d in zip(names, declared))


async def test_clickhouse_insert_reads_missing_none_extra_json_and_default_values(chdb: ClickHouseStore) -> None:
    columns = {name.encode().decode(): kind for name, kind in {"ts": "timestamp_ms", "symbol": "str?", "meta": "json?", "rev": "int"}.items()}
    await chdb.ensure_table("revised", Table(store="ch", engine="ReplacingMergeTree", order_by=["ts"], version="rev"), columns, "ts")
    assert all(name is sys.intern(name) for name in chdb._columns["revised"])
    rows = [
        {"ts": 1, "symbol": "EURUSD", "meta": {"a": [1, None, "é"]}, "rev": 3, "extra": object()},
        {"ts": 2, "symbol": None, "meta": None, "rev": None},
        {"ts": 3},
        MappingProxyType({"ts": 4, "meta": [], "rev": 5}),
    ]
    await chdb.insert("revised", rows)
    got = await chdb.query("SELECT ts, symbol, meta, rev FROM revised ORDER BY ts")
    assert got == [
        {"ts": 1, "symbol": "EURUSD", "meta": '{"a":[1,null,"é"]}', "rev": 3},
        {"ts": 2, "symbol": None, "meta": "null", "rev": 0},
        {"ts": 3, "symbol": None, "meta": "null", "rev": 0},
        {"ts": 4, "symbol": None, "meta": "[]", "rev": 5},
    ]


async def test_clickhouse_server_url_unreachable_is_one_line_without_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FX_TEST_CH_PASSWORD", SECRET)
    config = StoreConfig(kind="clickhouse", url="http://fx@127.0.0.1:9/fxflow", password_env="FX_TEST_CH_PASSWORD")
    store = open_store("clickhouse", config, ".fxrun")
    with pytest.raises(StoreUnavailable) as info:
        await store.connect()
    await store.close()
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    assert "'clickhouse'" in message and "http://fx@127.0.0.1:9/fxflow" in message and "fxrun infra up" in message


def test_safe_url_drops_only_the_password() -> None:
    assert safe_url(f"postgresql://fx:{SECRET}@db.local:5432/fxflow") == "postgresql://fx@db.local:5432/fxflow"
    assert safe_url(f"redis://:{SECRET}@127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert safe_url("chdb:///tmp/x") == "chdb:///tmp/x"


async def test_table_handle_kv_methods_need_a_kv_store(chdb: ClickHouseStore) -> None:
    handle = TableHandle("ticks", chdb, None)
    with pytest.raises(TypeError, match="not key-value"):
        await handle.claim(["a"])
    with pytest.raises(TypeError, match="not key-value"):
        await handle.get_latest("a")


# --------------------------------------------------------------------------- PostgreSQL


def test_bind_rewrites_named_placeholders_to_positional() -> None:
    sql, args = bind("SELECT * FROM t WHERE a = {a:String} AND b > {b} AND c = {a}", {"a": "x", "b": 2})
    assert sql == "SELECT * FROM t WHERE a = $1 AND b > $2 AND c = $1" and args == ["x", 2]
    assert bind("SELECT $1", [5]) == ("SELECT $1", [5])
    assert partition_name("live_ticks", 20_394) == "live_ticks_p20251102"


@pytest.fixture
async def pg(postgres_server: Any) -> AsyncIterator[PostgresStore]:
    store = PostgresStore("timescale", postgres_server.url)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


async def test_postgres_partitioned_table_copy_and_daily_partitions(pg: PostgresStore) -> None:
    name = uniq("ticks")
    table = Table(store="timescale", engine="hypertable", order_by=["symbol", "ts"], retention="30d")
    await pg.ensure_table(name, table, TICK_COLUMNS, "ts")
    assert pg.timescale_available is False
    assert pg.table_mode(name) == "partitioned"
    kind = await pg.query("SELECT relkind::text AS k FROM pg_class WHERE oid = to_regclass($1)", [name])
    assert kind == [{"k": "p"}]
    today = now_ms() // DAY_MS
    assert set(await pg.partitions(name)) >= {today, today + 1, today + 2}  # created ahead

    writer = BatchWriter(pg, name, batch_size=5_000, interval=0.05)
    count = 30_000
    for i in range(count):
        await writer.add(tick(i, (today - 4) * DAY_MS + i * (5 * DAY_MS // count)))
    await writer.close()
    assert writer.written == count
    partitions = await pg.partitions(name)
    assert {today - 4, today - 3, today - 2, today - 1, today} <= set(partitions)
    per_day = await pg.query(
        f"SELECT tableoid::regclass::text AS part, count(*) AS n FROM {name} GROUP BY 1 ORDER BY 1"
    )
    assert len(per_day) == 5 and sum(r["n"] for r in per_day) == count
    assert all(r["part"].startswith(f"{name}_p") for r in per_day)  # none in the default partition

    rows = await pg.query(
        f"SELECT seq, ts, meta, live FROM {name} WHERE symbol = $1 AND seq < $2 ORDER BY seq", ["EURUSD", 2]
    )
    assert rows == [{"seq": 0, "ts": (today - 4) * DAY_MS, "meta": {"n": 0}, "live": True},
                    {"seq": 1, "ts": (today - 4) * DAY_MS + 5 * DAY_MS // count, "meta": {"n": 1}, "live": False}]
    named = await pg.query(f"SELECT count(*) AS n FROM {name} WHERE symbol = {{symbol:String}}", {"symbol": "EURUSD"})
    assert named == [{"n": count}]
    assert await pg.query(f"SELECT count(*) AS n FROM {name} WHERE symbol = $1", ["' OR 1=1 --"]) == [{"n": 0}]

    again = PostgresStore("timescale", pg.url)  # a rerun: same layout, nothing recreated
    await again.connect()
    try:
        await again.ensure_table(name, table, TICK_COLUMNS, "ts")
        assert again.table_mode(name) == "partitioned" and set(await again.partitions(name)) >= set(partitions)
        assert await again.query(f"SELECT count(*) AS n FROM {name}") == [{"n": count}]
    finally:
        await again.close()


async def test_postgres_drop_expired_drops_old_partitions(pg: PostgresStore) -> None:
    name = uniq("ticks")
    await pg.ensure_table(name, Table(store="timescale", order_by=["ts"], retention="3d"), TICK_COLUMNS, "ts")
    today = now_ms() // DAY_MS
    now = now_ms()
    old, recent = [tick(i, (today - 10) * DAY_MS + i) for i in range(10)], [tick(100 + i, now - i) for i in range(10)]
    await pg.insert(name, old + recent)
    assert today - 10 in await pg.partitions(name)

    dropped = await pg.drop_expired()
    assert dropped == [partition_name(name, today - 10)]
    assert today - 10 not in await pg.partitions(name) and today in await pg.partitions(name)
    assert await pg.query(f"SELECT min(seq) AS lo, count(*) AS n FROM {name}") == [{"lo": 100, "n": 10}]
    assert await pg.drop_expired() == []


async def test_postgres_default_partition_catches_rows_and_hands_them_over(postgres_server: Any) -> None:
    store = PostgresStore("timescale", postgres_server.url, options={"max_partitions_per_batch": 1, "partitions_ahead": 0})
    await store.connect()
    try:
        name = uniq("ticks")
        await store.ensure_table(name, Table(store="timescale", order_by=["ts"], retention="30d"), TICK_COLUMNS, "ts")
        today = now_ms() // DAY_MS
        rows = [tick(i, (today - 1 - i % 3) * DAY_MS + i) for i in range(30)]  # three past days, one new partition allowed
        await store.insert(name, rows)
        in_default = await store.query(f"SELECT count(*) AS n FROM {name}_default")
        assert in_default == [{"n": 20}]
        await store.insert(name, [tick(100, (today - 2) * DAY_MS + 5)])  # that day's partition takes its rows along
        await store.insert(name, [tick(101, (today - 3) * DAY_MS + 5)])
        assert await store.query(f"SELECT count(*) AS n FROM {name}_default") == [{"n": 0}]
        assert await store.query(f"SELECT count(*) AS n, count(DISTINCT seq) AS d FROM {name}") == [{"n": 32, "d": 32}]
    finally:
        await store.close()


async def test_postgres_plain_table_and_types(pg: PostgresStore) -> None:
    name = uniq("positions")
    columns = {"symbol": "str", "quantity": "float", "open": "bool", "details": "json?", "count": "int"}
    await pg.ensure_table(name, Table(store="timescale", order_by=["symbol"]), columns, None)
    assert pg.table_mode(name) == "plain"
    await pg.insert(name, [{"symbol": "XAUUSD", "quantity": 1.5, "open": True, "details": [1, {"a": None}], "count": 2**40}])
    assert await pg.query(f"SELECT * FROM {name}") == [
        {"symbol": "XAUUSD", "quantity": 1.5, "open": True, "details": [1, {"a": None}], "count": 2**40}
    ]


async def test_postgres_unreachable_and_bad_credentials_are_one_line_without_secret(
    postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FX_TEST_PG_PASSWORD", SECRET)
    config = StoreConfig(kind="postgres", url="postgresql://fxflow@127.0.0.1:9/fxflow", password_env="FX_TEST_PG_PASSWORD")
    with pytest.raises(StoreUnavailable) as info:
        await open_store("timescale", config, ".fxrun").connect()
    message = str(info.value)
    assert "\n" not in message and SECRET not in message and "fxrun infra up" in message
    assert "'timescale'" in message and "postgresql://fxflow@127.0.0.1:9/fxflow" in message

    host = postgres_server.url.split("@", 1)[1]
    store = open_store("timescale", StoreConfig(kind="postgres", url=f"postgresql://nosuchuser:{SECRET}@{host}"), ".fxrun")
    with pytest.raises(StoreError) as info:
        await store.connect()
    message = str(info.value)
    assert "credentials" in message and "nosuchuser@" in message and SECRET not in message and "\n" not in message

    without_password = StoreConfig(kind="postgres", url=f"postgresql://fxflow@{host}", password_env="FX_TEST_PG_PASSWORD")
    with pytest.raises(StoreError) as info:  # the real user, a wrong password from the environment
        await open_store("timescale", without_password, ".fxrun").connect()
    message = str(info.value)
    assert "refused the credentials (password from $FX_TEST_PG_PASSWORD)" in message and SECRET not in message

    monkeypatch.setenv("FX_TEST_PG_PASSWORD", postgres_server.password)
    store = open_store("timescale", without_password, ".fxrun")
    await store.connect()
    try:
        assert await store.query("SELECT current_user AS u") == [{"u": "fxflow"}]
    finally:
        await store.close()


TICK_KEY = ["symbol", "ts", "source", "bid", "ask"]


async def test_postgres_keyed_table_keeps_one_copy_of_a_batch_written_again_across_a_restart(postgres_server_fn: Any) -> None:
    """A COPY retried after its acknowledgement was lost writes the batch again: a table with a
    ``key`` keeps one copy of each row, in the same session, a new one, and after a server restart."""
    server = postgres_server_fn
    name = uniq("live")
    table = Table(store="timescale", engine="hypertable", order_by=["symbol", "ts"], key=TICK_KEY, retention="30d")
    today = now_ms() // DAY_MS
    batch = [tick(i, (today - 1) * DAY_MS + i * 1000) for i in range(5_000)]
    batch += [{**batch[0], "seq": None}, {**batch[1], "bid": 1.2}]  # a repeat of row 0 within the batch; a distinct quote
    store = PostgresStore("timescale", server.url)
    await store.connect()
    try:
        await store.ensure_table(name, table, TICK_COLUMNS, "ts")
        await store.insert(name, batch)
        await store.insert(name, batch)
        await store.insert(name, batch[100:200] + [tick(9_999, today * DAY_MS)])
        assert await store.query(f"SELECT count(*) AS n FROM {name}") == [{"n": 5_002}]
    finally:
        await store.close()
    server.restart()
    again = PostgresStore("timescale", server.url)
    await again.connect()
    try:
        await again.ensure_table(name, table, TICK_COLUMNS, "ts")
        await again.insert(name, batch)
        rows = await again.query(f"SELECT count(*) AS n, count(DISTINCT (symbol, ts, source, bid, ask)) AS d FROM {name}")
        assert rows == [{"n": 5_002, "d": 5_002}]
        [row] = await again.query(f"SELECT seq, meta FROM {name} WHERE ts = $1 AND bid = $2", [batch[0]["ts"], batch[0]["bid"]])
        assert row == {"seq": 0, "meta": {"n": 0}}  # the first write wins
        indexes = await again.query("SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexname = $2", [name, f"{name}_key"])
        assert indexes and "UNIQUE" in indexes[0]["indexdef"]
    finally:
        await again.close()


async def test_postgres_key_with_a_nullable_column_treats_nulls_as_equal(pg: PostgresStore) -> None:
    name = uniq("live")
    table = Table(store="timescale", order_by=["ts"], key=["symbol", "ts", "source", "seq"], retention="30d")
    await pg.ensure_table(name, table, TICK_COLUMNS, "ts")
    now = now_ms()  # once: a clock read per row can give two rows one ts (the millisecond turns between them)
    rows = [{**tick(i, now - i), "seq": None} for i in range(10)]
    await pg.insert(name, rows)
    await pg.insert(name, rows)
    assert await pg.query(f"SELECT count(*) AS n FROM {name}") == [{"n": 10}]


async def test_postgres_keyed_rows_in_the_default_partition_move_to_their_day(postgres_server: Any) -> None:
    store = PostgresStore("timescale", postgres_server.url, options={"max_partitions_per_batch": 1, "partitions_ahead": 0})
    await store.connect()
    try:
        name = uniq("live")
        await store.ensure_table(name, Table(store="timescale", key=TICK_KEY, retention="30d"), TICK_COLUMNS, "ts")
        today = now_ms() // DAY_MS
        rows = [tick(i, (today - 1 - i % 3) * DAY_MS + i) for i in range(30)]
        await store.insert(name, rows)  # two of the three days go to the default partition
        assert await store.query(f"SELECT count(*) AS n FROM {name}_default") == [{"n": 20}]
        await store.insert(name, rows)  # one more day's partition is created and takes the default's rows along
        assert await store.query(f"SELECT count(*) AS n FROM {name}_default") == [{"n": 10}]
        await store.insert(name, [rows[2]])
        await store.insert(name, rows)
        assert await store.query(f"SELECT count(*) AS n FROM {name}_default") == [{"n": 0}]
        assert await store.query(f"SELECT count(*) AS n FROM {name}") == [{"n": 30}]
    finally:
        await store.close()


async def test_postgres_without_a_key_every_row_is_kept_and_a_changed_key_is_rebuilt(pg: PostgresStore) -> None:
    name = uniq("ticks")
    now = now_ms()  # once: a clock read per row can give two rows one ts (the millisecond turns between them)
    rows = [tick(i, now - i) for i in range(10)]
    await pg.ensure_table(name, Table(store="timescale", order_by=["ts"], retention="30d"), TICK_COLUMNS, "ts")
    await pg.insert(name, rows)
    await pg.insert(name, rows)
    assert await pg.query(f"SELECT count(*) AS n FROM {name}") == [{"n": 20}]
    with pytest.raises(StoreError, match="already holds rows that repeat its key") as info:
        await pg.ensure_table(name, Table(store="timescale", key=["symbol", "ts"], retention="30d"), TICK_COLUMNS, "ts")
    assert "\n" not in str(info.value)
    await pg.execute(  # one copy of each pair; ctid is per partition, so with tableoid
        f"DELETE FROM {name} WHERE (tableoid, ctid) IN (SELECT tableoid, min(ctid) FROM {name} GROUP BY tableoid, symbol, ts)"
    )
    await pg.ensure_table(name, Table(store="timescale", key=["symbol", "ts"], retention="30d"), TICK_COLUMNS, "ts")
    await pg.insert(name, rows)
    await pg.ensure_table(name, Table(store="timescale", key=["ts", "symbol", "seq"], retention="30d"), TICK_COLUMNS, "ts")
    await pg.insert(name, [{**rows[0], "seq": 100}])  # a new key: (ts, symbol, seq)
    assert await pg.query(f"SELECT count(*) AS n FROM {name}") == [{"n": 11}]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (["symbol", "time"], "key column(s) time are not columns of the table"),
        (["symbol", "seq"], "its key must include the time column 'ts'"),
    ],
)
async def test_postgres_key_mistakes_are_one_line(pg: PostgresStore, key: list[str], message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)) as info:
        await pg.ensure_table(uniq("live"), Table(store="timescale", key=key, retention="30d"), TICK_COLUMNS, "ts")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("outage", ["kill", "stop"])
async def test_postgres_outage_under_a_writer_is_one_log_line_per_event(
    postgres_server_fn: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: str
) -> None:
    """The server dies (SIGKILL) or shuts down while COPYs are in flight: the log says so in one
    line naming the store and its URL without the password, and again when writes recover; no
    asyncpg traceback (its pool retries, a COPY's orphaned future) reaches the log."""
    server = postgres_server_fn
    caplog.set_level(logging.INFO)
    store = PostgresStore("timescale", server.url, options={"connect_timeout": 2})
    await store.connect()
    name = uniq("ticks")
    await store.ensure_table(name, Table(store="timescale", order_by=["symbol", "ts"]), TICK_COLUMNS, "ts")
    writer = BatchWriter(
        store, name, batch_size=5_000, interval=0.01, backoff_initial=0.05, backoff_max=0.5, spill_dir=tmp_path, close_timeout=30
    )
    count, start = 200_000, now_ms() - DAY_MS
    try:

        async def produce() -> None:
            for i in range(count):
                await writer.add(tick(i, start + i))
                if i % 1000 == 0:
                    await asyncio.sleep(0)

        producing = asyncio.create_task(produce())
        await wait_until(lambda: writer.written >= 10_000)
        (server.kill if outage == "kill" else server.stop)()
        await wait_until(lambda: writer.failing)
        await asyncio.sleep(3.5)  # long enough for the pool to retry its connection floor twice
        server.start()
        await asyncio.wait_for(producing, 60)
        await writer.close()
        assert writer.written == count and writer.outages == 1
        [row] = await store.query(f"SELECT count(DISTINCT seq) AS n FROM {name}")
        assert row["n"] == count
    finally:
        await store.close()
    gc.collect()  # an orphaned asyncpg future is reported when it is collected
    await asyncio.sleep(0)

    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r.getMessage() for r in records if r.exc_info or r.exc_text or "\n" in r.getMessage()]
    assert "Traceback" not in caplog.text and server.password not in caplog.text
    [failing] = [r.getMessage() for r in records if "are failing" in r.getMessage()]
    assert f"store 'timescale' (postgres) at {safe_url(server.url)}" in failing and "another operation" not in failing
    assert len([r for r in records if "recovered after" in r.getMessage()]) == 1
    assert [r for r in records if r.name.startswith(("asyncpg", "asyncio"))] == []


# --------------------------------------------------------------------------- Redis


@pytest.fixture
async def kv(redis_server: Any) -> AsyncIterator[RedisStore]:
    store = RedisStore("dragonfly", redis_server.url)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


async def test_redis_claim_reports_new_and_seen_keys(kv: RedisStore) -> None:
    name = uniq("dedup")
    await kv.ensure_table(name, Table(store="dragonfly", engine="kv", columns={"key": "str"}, retention="2d"), {"key": "str"})
    assert await kv.claim(name, ["a", "b", "a"]) == [True, True, False]
    assert await kv.claim(name, ["a", "c", "b", "d"]) == [False, True, False, True]
    assert await kv.claim(name, []) == []
    handle = TableHandle(name, kv, None)
    assert await handle.claim(["c", "e"]) == [False, True]
    other = uniq("dedup")  # the prefix is the table name: same key, other table, new
    await kv.ensure_table(other, Table(store="dragonfly", engine="kv", retention="1h"), {"key": "str"})
    assert await kv.claim(other, ["a"]) == [True]


async def until_value(read: Any, expected: Any, timeout: float = 30.0) -> None:
    """Call ``read()`` until it returns ``expected`` (an expiry waited for, not timed)."""
    deadline = time.monotonic() + timeout
    while (got := await read()) != expected:
        assert time.monotonic() < deadline, f"still {got!r}, not {expected!r}"
        await asyncio.sleep(0.05)


async def test_redis_claim_expires_after_ttl(kv: RedisStore) -> None:
    # A TTL long enough that two claims in a row on a loaded machine fall inside it; expiry is waited for.
    name = uniq("dedup")
    await kv.ensure_table(name, Table(store="dragonfly", engine="kv", retention="1500ms"), {"key": "str"})
    assert await kv.claim(name, ["k2"], ttl_ms=60_000) == [True]  # before k1: older than k1 when k1 expires
    assert await kv.claim(name, ["k1"]) == [True]
    assert await kv.claim(name, ["k1"]) == [False]
    await until_value(lambda: kv.claim(name, ["k1"]), [True])  # a failed claim leaves the TTL alone
    assert await kv.claim(name, ["k2"]) == [False]  # an explicit TTL outlives the table's


async def test_redis_latest_values_round_trip(kv: RedisStore) -> None:
    name = uniq("latest")
    await kv.ensure_table(name, Table(store="dragonfly", engine="kv", retention="forever"), {"key": "str"})
    handle = TableHandle(name, kv, None)
    assert await handle.get_latest("EURUSD") is None
    await handle.put_latest("EURUSD", {"bid": 1.1, "ts": 1, "tags": ["a"]})
    await handle.put_latest("EURUSD", {"bid": 1.2, "ts": 2, "tags": []})
    assert await handle.get_latest("EURUSD") == {"bid": 1.2, "ts": 2, "tags": []}
    await handle.put_latest("short", 42, ttl_ms=1_500)  # long enough for the read that follows on a loaded machine
    assert await handle.get_latest("short") == 42
    await until_value(lambda: handle.get_latest("short"), None)
    await kv.insert(name, [{"key": "XAUUSD", "bid": 2000.5}])
    assert await handle.get_latest("XAUUSD") == {"key": "XAUUSD", "bid": 2000.5}
    with pytest.raises(StoreError, match="runs no SQL"):
        await kv.query("SELECT 1")
    with pytest.raises(StoreError, match="only engine: kv"):
        await kv.ensure_table(uniq(), Table(store="dragonfly", engine="MergeTree"), {"key": "str"})


async def test_redis_unreachable_is_one_line_without_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FX_TEST_REDIS_PASSWORD", SECRET)
    config = StoreConfig(kind="redis", url="redis://127.0.0.1:9/0", password_env="FX_TEST_REDIS_PASSWORD")
    with pytest.raises(StoreUnavailable) as info:
        await open_store("dragonfly", config, ".fxrun").connect()
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    assert "'dragonfly'" in message and "redis://127.0.0.1:9/0" in message and "fxrun infra up" in message


async def test_a_clickhouse_table_with_a_key_keeps_a_row_written_twice_once(tmp_path: Path) -> None:
    """``key:`` in a ClickHouse store is the ReplacingMergeTree ordering key: a refilled batch collapses."""
    from framework.stores.clickhouse import ClickHouseStore
    from framework.topology.model import Table

    store = ClickHouseStore("ch", f"chdb://{tmp_path}/clickhouse", data_dir=str(tmp_path))
    await store.connect()
    try:
        table = Table(store="ch", engine="hypertable", order_by=["symbol", "ts"], key=["symbol", "ts", "source", "seq"])
        columns = {"symbol": "str", "ts": "timestamp_ms", "source": "str", "seq": "int?", "bid": "float"}
        await store.ensure_table("ticks_keyed", table, columns, "ts")
        rows = [{"symbol": "EURUSD", "ts": 1_000 + i, "source": "p", "seq": i if i % 2 else None, "bid": 1.1} for i in range(6)]
        await store.insert("ticks_keyed", rows)
        await store.insert("ticks_keyed", rows)  # a retry, or a refill after a crash
        final = await store.query("SELECT count() AS n FROM ticks_keyed FINAL")
        engine = await store.query("SELECT engine FROM system.tables WHERE name = 'ticks_keyed'")
    finally:
        await store.close()
    assert final == [{"n": 6}] and engine == [{"engine": "ReplacingMergeTree"}]
