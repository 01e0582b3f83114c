"""PostgreSQL / TimescaleDB through asyncpg: a connection pool, COPY inserts, ``$n`` parameters.

**Time is ``bigint`` milliseconds.** A ``timestamp_ms`` column is stored as the epoch-ms integer
the contracts carry, not as ``timestamptz``: a query returns the same values whichever store a
profile maps the table to (the demo maps these tables to ClickHouse, where they are Int64 too),
rows go in by binary COPY without conversion, and a day is the integer range
``[day * 86_400_000, (day + 1) * 86_400_000)`` in UTC. TimescaleDB partitions integer time as
well; it is given a one-day chunk interval in ms and an integer "now" function for its
retention policy. Use ``to_timestamp(ts / 1000.0)`` where a timestamp is wanted.

**Layout**, chosen when a table is first created and kept on every rerun (``table_mode``):

- ``hypertable`` when the ``timescaledb`` extension is available (``pg_available_extensions``)
  and can be created: ``create_hypertable`` with one-day chunks and ``add_retention_policy``
  (TimescaleDB's own job then drops old chunks; ``drop_expired`` also calls ``drop_chunks``).
- ``partitioned`` otherwise: ``PARTITION BY RANGE`` on the time column, one partition per UTC day
  (``<table>_pYYYYMMDD``), created ``partitions_ahead`` days ahead and, before each COPY, for
  every day the batch holds; ``<table>_default`` catches anything else (a NULL or absurd time,
  more new days than ``max_partitions_per_batch``), so no row is ever rejected for want of a
  partition. Rows already in the default partition move when their day's partition is created.
  ``drop_expired()`` drops day partitions wholly older than the retention and deletes expired
  rows from the default partition; the runtime schedules it through ``maintain()``.
- ``plain`` for a table without a time column.

DDL on a table runs in a transaction holding an advisory lock named after the table, so
replicas creating the same partition cannot race. Inserts are at least once: a COPY that
committed but whose reply was lost is written again by the retrying writer. A table declared
with a ``key`` gets a unique index ``<table>_key`` on it (with the time column, as PostgreSQL
asks of partitioned tables and hypertables), and a batch that repeats a key it holds goes in
through a per-session temporary table and ``INSERT … SELECT … ON CONFLICT DO NOTHING``: a batch
written twice is stored once (see :meth:`PostgresStore._copy_keyed`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson

from framework.stores import base
from framework.stores.base import Store, StoreError, StoreRejected
from framework.stores.columns import (
    checked_ident,
    native_type,
    split_type,
    time_column_of,
)
from framework.topology.model import Table

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
_MAX_DAY = (date(9999, 12, 31) - date(1970, 1, 1)).days
_TYPES = {
    "int": "bigint",
    "float": "double precision",
    "str": "text",
    "bool": "boolean",
    "json": "jsonb",
    "timestamp_ms": "bigint",
}
_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")
_MAX_NAME = 50
_NOW_FUNC = "fxflow_unix_now_ms"
_STAGE = "fxflow_stage_"
"""Prefix of the per-session temporary tables keyed inserts COPY into."""
Mode = Literal["hypertable", "partitioned", "plain"]
T = TypeVar("T")


def _q(name: str) -> str:
    return f'"{name}"'


def bind(sql: str, parameters: Mapping[str, Any] | Sequence[Any] | None) -> tuple[str, list[Any]]:
    """``$n`` SQL and its arguments. A sequence binds ``$1…`` as written; a mapping also
    accepts ClickHouse-style ``{name}`` / ``{name:Type}`` placeholders, rewritten to ``$n``,
    so a simple node query reads the same against either store."""
    if parameters is None:
        return sql, []
    if isinstance(parameters, (str, bytes)):
        raise StoreError("query parameters must be a sequence (for $1…) or a mapping (for {name})")
    if not isinstance(parameters, Mapping):
        return sql, list(parameters)
    args: list[Any] = []
    index: dict[str, int] = {}

    def placeholder(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in parameters:
            return match.group(0)
        if key not in index:
            args.append(parameters[key])
            index[key] = len(args)
        return f"${index[key]}"

    return _PLACEHOLDER.sub(placeholder, sql), args


def day_of(ms: int) -> int:
    return ms // DAY_MS


def _days(rows: Sequence[Mapping[str, Any]], time_column: str) -> set[int]:
    days: set[int] = set()
    for row in rows:
        value = row.get(time_column)
        if isinstance(value, (int, float)) and math.isfinite(value):
            days.add(day_of(int(value)))
    return days


def partition_name(table: str, day: int) -> str:
    return f"{table}_p{date(1970, 1, 1) + timedelta(days=day):%Y%m%d}"


@dataclass
class _Layout:
    columns: list[str]
    time_column: str | None
    retention_ms: int | None
    mode: Mode
    days: set[int] = field(default_factory=set)
    overflow_warned: bool = False
    keyed: bool = False
    """The table has a unique key: rows go in through a staging table, duplicates are skipped."""


def _closed(exc: BaseException) -> bool:
    """asyncpg's InterfaceError for a connection already closed (other InterfaceErrors are misuse)."""
    import asyncpg

    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def _broke(exc: BaseException) -> bool:
    """The connection died in the middle of an operation (the server was killed or shut down).

    asyncpg then reports its own protocol state, not the cause: ``another operation is in
    progress`` from the pool's reset, after ``cannot switch to state …`` from the COPY. A
    connection is never shared between operations here, so these mean a broken connection.
    """
    import asyncpg

    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if isinstance(current, asyncpg.ConnectionDoesNotExistError):
            return True
        broken_state = isinstance(current, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError))
        if broken_state and "another operation" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


class _AsyncpgNoise(logging.Filter):
    """asyncpg's own log records of an outage, as one DEBUG line each (shown only at DEBUG).

    The pool logs a traceback every time it fails to reopen its minimum connections
    (``Failed to restore the pool connection floor``), and a COPY cut off by a dying server
    leaves a future nobody awaits, which asyncio reports with the exception when it is
    collected. The outage itself is already reported, once, by whoever saw it fail (the table
    writer: store, URL, reason).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if record.name == "asyncio" and not (
            type(exc).__module__.startswith("asyncpg") and str(record.msg).startswith("Future exception was never retrieved")
        ):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        first = (record.getMessage().splitlines() or [""])[0]
        record.msg, record.args = f"{first}: {base.one_line(f'{type(exc).__name__}: {exc}')}", ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _quiet_asyncpg_logs() -> None:
    noise = _AsyncpgNoise()
    for name in ("asyncpg.pool", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AsyncpgNoise) for f in logger.filters):
            logger.addFilter(noise)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        format="binary",
        encoder=lambda value: b"\x01" + orjson.dumps(value),
        decoder=lambda data: orjson.loads(data[1:]),
    )


class PostgresStore(Store):
    """Options (``stores.<name>.options``): ``pool_min`` (1), ``pool_max`` (4), ``connect_timeout``
    (5 s), ``command_timeout`` (60 s), ``partitions_ahead`` (2 days), ``max_partitions_per_batch`` (64)."""

    kind = "postgres"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        password: str | None = None,
        password_env: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, url, password=password, password_env=password_env, options=options)
        opts = self._options
        self.pool_min = int(opts.get("pool_min", 1))
        self.pool_max = max(int(opts.get("pool_max", 4)), self.pool_min)
        self.connect_timeout = float(opts.get("connect_timeout", 5))
        self.command_timeout = float(opts.get("command_timeout", 60))
        self.partitions_ahead = int(opts.get("partitions_ahead", 2))
        self.max_partitions_per_batch = int(opts.get("max_partitions_per_batch", 64))
        self.timescale_available = False
        self._pool: asyncpg.Pool | None = None
        self._layouts: dict[str, _Layout] = {}

    @property
    def safe_url(self) -> str:
        return base.safe_url(self.url)

    def _error(self, exc: BaseException, rows: bool = False) -> StoreError:
        import asyncpg

        secrets = [self._password, base.url_password(self.url)]
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return base.bad_credentials(self.name, self.kind, self.url, self._password_env)
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return StoreError(
                f"store {self.name!r} ({self.kind}) at {self.safe_url}: {base.one_line(str(exc), secrets)}; "
                "create it or run `fxrun infra up`"
            )
        if _broke(exc):
            return base.unreachable(
                self.name, self.kind, self.url, ConnectionError("the connection broke during the operation"), secrets
            )
        if _closed(exc) or isinstance(
            exc,
            (
                OSError,
                TimeoutError,
                asyncpg.PostgresConnectionError,
                asyncpg.exceptions.OperatorInterventionError,
                asyncpg.exceptions.InsufficientResourcesError,
            ),
        ):
            return base.unreachable(self.name, self.kind, self.url, exc, secrets)
        message = f"store {self.name!r} ({self.kind}) at {self.safe_url}: {base.one_line(str(exc) or type(exc).__name__, secrets)}"
        if rows and isinstance(
            exc, (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, TypeError, ValueError, OverflowError)
        ):
            return StoreRejected(message)
        return StoreError(message)

    @staticmethod
    def _stale(exc: BaseException) -> bool:
        """A pooled connection the server closed (a restart): another connection may work at once."""
        import asyncpg

        return _closed(exc) or _broke(exc) or isinstance(exc, (ConnectionResetError, BrokenPipeError))

    async def _run(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, rows: bool = False, idempotent: bool = True
    ) -> T:
        if self._pool is None:
            raise StoreError(f"store {self.name!r} ({self.kind}) is not connected")
        for attempt in (1, 2):
            try:
                async with self._pool.acquire(timeout=self.connect_timeout + self.command_timeout) as conn:
                    return await work(conn)
            except StoreError:
                raise
            except Exception as exc:
                if attempt == 1 and idempotent and self._stale(exc):
                    continue
                raise self._error(exc, rows) from None
        raise AssertionError("unreachable")

    async def connect(self) -> None:
        import asyncpg

        _quiet_asyncpg_logs()
        try:
            self._pool = await asyncpg.create_pool(
                dsn=self.url,
                password=self._password,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                init=_init_connection,
            )
        except Exception as exc:
            raise self._error(exc) from None
        self.timescale_available = bool(
            await self._run(
                lambda conn: conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')")
            )
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self.connect_timeout)
        except Exception:
            pool.terminate()

    def table_mode(self, name: str) -> Mode:
        return self._layouts[name].mode

    # ------------------------------------------------------------------ tables

    async def ensure_table(self, name: str, table: Table, columns: Mapping[str, str], time_column: str | None = None) -> None:
        if table.engine == "kv":
            raise StoreError(f"table {name!r}: engine kv belongs in a redis store, not {self.name!r} ({self.kind})")
        try:
            checked_ident(name)
            if len(name) > _MAX_NAME:
                raise ValueError(f"table name {name!r} is longer than {_MAX_NAME} characters")
            defs = []
            for column, portable in columns.items():
                null = "" if split_type(portable)[1] else " NOT NULL"
                defs.append(f"{_q(checked_ident(column))} {native_type(portable, _TYPES)}{null}")
            order = [_q(checked_ident(c)) for c in table.order_by]
        except ValueError as exc:
            raise StoreError(f"store {self.name!r}: {exc}") from None
        time_col = time_column_of(columns, time_column)
        retention = table.retention_ms if time_col else None
        cols_sql = ", ".join(defs)
        key = list(table.key or ())
        unknown = [c for c in key if c not in columns]
        if unknown:
            raise StoreError(
                f"store {self.name!r}: table {name!r}: key column(s) {', '.join(unknown)} are not columns of the table "
                f"({', '.join(columns)})"
            )
        if key and time_col is not None and time_col not in key:
            raise StoreError(
                f"store {self.name!r}: table {name!r}: its key must include the time column {time_col!r}, which the "
                f"table is partitioned by (key: [{', '.join(key)}])"
            )
        nulls_not_distinct = any(split_type(columns[c])[1] for c in key)

        async def create(conn: asyncpg.Connection) -> Mode:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"fxflow.table.{name}")
                mode = await self._existing_mode(conn, name)
                if mode is None:
                    mode = await self._create(conn, name, cols_sql, time_col)
                if order and table.order_by != key[: len(table.order_by)]:  # else the key's index serves the order too
                    await conn.execute(f"CREATE INDEX IF NOT EXISTS {_q(name + '_order_idx')} ON {_q(name)} ({', '.join(order)})")
                if key:
                    await self._unique_key(conn, name, key, nulls_not_distinct)
                if mode == "hypertable":
                    await self._hypertable_retention(conn, name, retention)
                return mode

        mode = await self._run(create)
        layout = _Layout(list(columns), time_col, retention, mode, keyed=bool(key))
        self._layouts[name] = layout
        if mode == "partitioned":
            layout.days = set(await self._run(lambda conn: self._partition_days(conn, name)))
            await self._add_partitions(name, layout, self._days_ahead())

    async def _unique_key(self, conn: asyncpg.Connection, name: str, key: list[str], nulls_not_distinct: bool) -> None:
        """The unique index ``<table>_key`` on ``key``, (re)built when the declared key changed.

        A nullable key column gets ``NULLS NOT DISTINCT`` (PostgreSQL 15+): otherwise two rows
        that differ only by a NULL there would both be kept.
        """
        import asyncpg

        index = name + "_key"
        current = await conn.fetchval(
            "SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indexrelid = to_regclass($1) AND i.indisunique",
            _q(index),
        )
        if current == key:
            return
        if current is not None or await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _q(index)):
            await conn.execute(f"DROP INDEX {_q(index)}")
        nulls = " NULLS NOT DISTINCT" if nulls_not_distinct else ""
        try:
            async with conn.transaction():
                await conn.execute(f"CREATE UNIQUE INDEX {_q(index)} ON {_q(name)} ({', '.join(map(_q, key))}){nulls}")
        except asyncpg.UniqueViolationError:
            raise StoreError(
                f"store {self.name!r}: table {name!r} already holds rows that repeat its key ({', '.join(key)}); "
                "delete the repeats, or declare a key that identifies a row"
            ) from None
        if current is not None:
            log.warning("store %s: the key of %s changed from (%s) to (%s)", self.name, name, ", ".join(current), ", ".join(key))

    async def _existing_mode(self, conn: asyncpg.Connection, name: str) -> Mode | None:
        relkind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", _q(name))
        if relkind is None:
            return None
        if relkind == "p":
            return "partitioned"
        installed = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
        if installed and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = $1)", name
        ):
            return "hypertable"
        return "plain"

    async def _create(self, conn: asyncpg.Connection, name: str, cols_sql: str, time_col: str | None) -> Mode:
        if time_col is None:
            await conn.execute(f"CREATE TABLE {_q(name)} ({cols_sql})")
            return "plain"
        if self.timescale_available:
            try:
                async with conn.transaction():
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                    await conn.execute(f"CREATE TABLE {_q(name)} ({cols_sql})")
                    await conn.execute(
                        "SELECT create_hypertable($1::regclass, $2::name, chunk_time_interval => $3::bigint, if_not_exists => TRUE)",
                        _q(name),
                        time_col,
                        DAY_MS,
                    )
                return "hypertable"
            except Exception as exc:
                log.warning(
                    "store %s: timescaledb is available but could not be used for %s (%s); using native daily partitions",
                    self.name,
                    name,
                    base.one_line(str(exc)),
                )
        await conn.execute(f"CREATE TABLE {_q(name)} ({cols_sql}) PARTITION BY RANGE ({_q(time_col)})")
        await conn.execute(f"CREATE TABLE {_q(name + '_default')} PARTITION OF {_q(name)} DEFAULT")
        return "partitioned"

    async def _hypertable_retention(self, conn: asyncpg.Connection, name: str, retention_ms: int | None) -> None:
        if await conn.fetchval("SELECT to_regproc($1)", _NOW_FUNC) is None:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"fxflow.{_NOW_FUNC}")
            await conn.execute(
                f"CREATE OR REPLACE FUNCTION {_NOW_FUNC}() RETURNS bigint LANGUAGE sql STABLE "
                "AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$"
            )
        await conn.execute(
            "SELECT set_integer_now_func($1::regclass, $2::regproc, replace_if_exists => TRUE)", _q(name), _NOW_FUNC
        )
        await conn.execute("SELECT remove_retention_policy($1::regclass, if_exists => TRUE)", _q(name))
        if retention_ms:
            await conn.execute("SELECT add_retention_policy($1::regclass, drop_after => $2::bigint)", _q(name), retention_ms)

    # ------------------------------------------------------------------ partitions

    @staticmethod
    async def _partition_days(conn: asyncpg.Connection, name: str) -> dict[int, str]:
        rows = await conn.fetch(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
            _q(name),
        )
        days: dict[int, str] = {}
        for row in rows:
            match = _BOUND.search(row["bound"] or "")
            if match:
                lo, hi = int(match.group(1)), int(match.group(2))
                if hi - lo == DAY_MS and lo % DAY_MS == 0:
                    days[lo // DAY_MS] = row["relname"]
        return days

    def _days_ahead(self, now_ms: int | None = None) -> list[int]:
        today = day_of(int(time.time() * 1000) if now_ms is None else now_ms)
        return [today + i for i in range(self.partitions_ahead + 1)]

    async def partitions(self, name: str) -> dict[int, str]:
        """Day number (days since 1970-01-01, UTC) → partition name, as the database has them now."""
        return await self._run(lambda conn: self._partition_days(conn, name))

    async def _add_partitions(self, name: str, layout: _Layout, days: Iterable[int]) -> None:
        wanted = sorted({d for d in days if 0 <= d <= _MAX_DAY} - layout.days, reverse=True)
        if not wanted:
            return
        if len(wanted) > self.max_partitions_per_batch:
            if not layout.overflow_warned:
                log.warning(
                    "store %s: a batch for %s spans %d new days; rows beyond the newest %d days go to %s_default",
                    self.name, name, len(wanted), self.max_partitions_per_batch, name,
                )
                layout.overflow_warned = True
            wanted = wanted[: self.max_partitions_per_batch]

        async def create(conn: asyncpg.Connection) -> set[int]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"fxflow.table.{name}")
                existing = await self._partition_days(conn, name)
                for day in wanted:
                    if day not in existing:
                        await self._create_partition(conn, name, layout, day)
                return set(existing) | set(wanted)

        layout.days = await self._run(create)

    async def _create_partition(self, conn: asyncpg.Connection, name: str, layout: _Layout, day: int) -> None:
        import asyncpg

        lo, hi = day * DAY_MS, (day + 1) * DAY_MS
        part = _q(partition_name(name, day))
        try:
            async with conn.transaction():
                await conn.execute(f"CREATE TABLE {part} PARTITION OF {_q(name)} FOR VALUES FROM ({lo}) TO ({hi})")
            return
        except asyncpg.CheckViolationError:
            pass
        assert layout.time_column is not None
        tc = _q(layout.time_column)
        async with conn.transaction():
            await conn.execute(f"CREATE TABLE {part} (LIKE {_q(name)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            await conn.execute(
                f"WITH moved AS (DELETE FROM {_q(name + '_default')} WHERE {tc} >= $1 AND {tc} < $2 RETURNING *) "
                f"INSERT INTO {part} SELECT * FROM moved",
                lo,
                hi,
            )
            await conn.execute(f"ALTER TABLE {_q(name)} ATTACH PARTITION {part} FOR VALUES FROM ({lo}) TO ({hi})")

    async def drop_expired(self, now_ms: int | None = None) -> list[str]:
        """Drop what is older than each table's retention: whole day partitions (and expired rows
        of the default partition), or hypertable chunks. Returns the dropped partitions."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        dropped: list[str] = []
        for name, layout in list(self._layouts.items()):
            if not layout.retention_ms or layout.time_column is None:
                continue
            cutoff = now - layout.retention_ms
            if layout.mode == "partitioned":
                dropped += await self._run(
                    lambda conn, n=name, la=layout, c=cutoff: self._drop_partitions(conn, n, la, c)
                )
            elif layout.mode == "hypertable":
                await self._run(
                    lambda conn, n=name, c=cutoff: conn.execute(
                        "SELECT drop_chunks($1::regclass, older_than => $2::bigint)", _q(n), c
                    )
                )
        if dropped:
            log.info("store %s: dropped expired partitions %s", self.name, ", ".join(dropped))
        return dropped

    async def _drop_partitions(self, conn: asyncpg.Connection, name: str, layout: _Layout, cutoff: int) -> list[str]:
        assert layout.time_column is not None
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"fxflow.table.{name}")
            days = await self._partition_days(conn, name)
            expired = {day: part for day, part in days.items() if (day + 1) * DAY_MS <= cutoff}
            for part in expired.values():
                await conn.execute(f"DROP TABLE IF EXISTS {_q(part)}")
            await conn.execute(f"DELETE FROM {_q(name + '_default')} WHERE {_q(layout.time_column)} < $1", cutoff)
        layout.days = set(days) - set(expired)
        return sorted(expired.values())

    async def maintain(self, now_ms: int | None = None) -> None:
        """Partitions for the days ahead, then :meth:`drop_expired`; schedule it (hourly is plenty)."""
        for name, layout in list(self._layouts.items()):
            if layout.mode == "partitioned":
                await self._add_partitions(name, layout, self._days_ahead(now_ms))
        await self.drop_expired(now_ms)

    # ------------------------------------------------------------------ rows

    async def insert(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        layout = self._layouts.get(name)
        if layout is None:
            raise StoreError(f"table {name!r} was not created through ensure_table")
        if layout.mode == "partitioned" and layout.time_column is not None:
            await self._add_partitions(name, layout, _days(rows, layout.time_column))
        columns = layout.columns
        records = [tuple(row.get(c) for c in columns) for row in rows]
        if layout.keyed:
            await self._run(lambda conn: self._copy_keyed(conn, name, columns, records), rows=True)
            return
        await self._run(
            lambda conn: conn.copy_records_to_table(name, records=records, columns=columns), rows=True, idempotent=False
        )

    @staticmethod
    async def _copy_keyed(conn: asyncpg.Connection, name: str, columns: list[str], records: list[tuple[Any, ...]]) -> None:
        """Rows into a keyed table, skipping those whose key it holds already: idempotent.

        A plain COPY first (the common case: new rows, at COPY speed). If a row repeats a key
        (a batch written again after a lost acknowledgement), that COPY is rolled back as a
        whole and the batch goes through this session's staging table instead: COPY there, then
        ``INSERT … SELECT … ON CONFLICT DO NOTHING``, in one transaction.
        """
        import asyncpg

        try:
            await conn.copy_records_to_table(name, records=records, columns=columns)
            return
        except asyncpg.UniqueViolationError:
            pass
        stage = _STAGE + name
        cols = ", ".join(map(_q, columns))
        async with conn.transaction():
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_q(stage)} (LIKE {_q(name)} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table(stage, records=records, columns=columns)
            await conn.execute(f"INSERT INTO {_q(name)} ({cols}) SELECT {cols} FROM {_q(stage)} ON CONFLICT DO NOTHING")

    async def query(self, sql: str, parameters: Mapping[str, Any] | Sequence[Any] | None = None) -> list[dict[str, Any]]:
        text, args = bind(sql, parameters)
        records = await self._run(lambda conn: conn.fetch(text, *args))
        return [dict(r) for r in records]

    async def execute(self, sql: str, parameters: Mapping[str, Any] | Sequence[Any] | None = None) -> str:
        """A statement without rows; returns its status (``DELETE 3``)."""
        text, args = bind(sql, parameters)
        return await self._run(lambda conn: conn.execute(text, *args), idempotent=False)
