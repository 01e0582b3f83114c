"""ClickHouse through clickhouse-connect: ``chdb:///DIR`` (embedded, the demo default) or a server
URL ``http(s)://user@host:8123/db`` (password from the env var named by ``password_env``).

Both go through one client API, so DDL, inserts and reads are the same code. chdb runs the
real ClickHouse engine inside this process; its calls block, so they run on one worker thread
(chdb allows one session per process, and one thread keeps it ordered). A server gets a few
threads without a session, so table writers do not queue behind each other.

Values are only ever bound as parameters (``{name:Type}``); table and column names go into DDL
only after :func:`~framework.stores.columns.checked_ident`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from operator import methodcaller
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
    import pandas
    import pyarrow

_TYPES = {
    "int": "Int64",
    "float": "Float64",
    "str": "String",
    "bool": "Bool",
    "json": "String",
    "timestamp_ms": "Int64",
}
log = logging.getLogger(__name__)
_ENGINES = ("MergeTree", "ReplacingMergeTree", "AggregatingMergeTree")
_AUTH_CODES = {192, 193, 194, 516}
_DATA_CODES = {6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 349}
T = TypeVar("T")


def _ident(name: str) -> str:
    try:
        return f"`{checked_ident(name)}`"
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def column_type(portable: str) -> str:
    _, nullable = split_type(portable)
    try:
        native = native_type(portable, _TYPES)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    return f"Nullable({native})" if nullable else native


def column_names(columns: Iterable[str]) -> list[str]:
    """The names, interned: rows' keys are mostly literals, which Python interns, and a key that is
    the very object looked up is found without comparing strings."""
    return [sys.intern(str(c)) for c in columns]


def column_data(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], json_columns: Collection[str], defaults: Mapping[str, Any]
) -> list[list[Any]]:
    """``rows`` as one list per column: a key a row lacks reads as None, None as the column's
    default where it has one, and a JSON column holds each value's JSON text."""
    plain = {*map(type, rows)} == {dict}
    data = []
    for column in columns:
        values = _values(rows, column, plain)
        if column in json_columns:
            data.append([orjson.dumps(v).decode() for v in values])
        elif column in defaults:
            default = defaults[column]
            data.append([default if v is None else v for v in values])
        else:
            data.append(list(values))
    return data


def _values(rows: Sequence[Mapping[str, Any]], column: str, plain: bool) -> Iterable[Any]:
    """``row.get(column)`` of each row, lazily. For rows that are all plain dicts (in practice,
    all of them) ``dict.get`` is mapped in C, without a Python call per row; any other mapping,
    a dict subclass too, answers through its own ``get``."""
    if plain:
        return map(dict.get, rows, repeat(column))
    return map(methodcaller("get", column), rows)


def column_definition(column: str, portable: str, table: Table) -> str:
    """A column of ``CREATE``/``ALTER``; a ReplacingMergeTree's version column is ``UInt64 DEFAULT 0``
    (ClickHouse wants an unsigned, non-null version; a row without one is version 0)."""
    if column == table.version:
        return f"{_ident(column)} UInt64 DEFAULT 0"
    return f"{_ident(column)} {column_type(portable)}"


def create_table_sql(name: str, table: Table, columns: Mapping[str, str], time_column: str | None) -> str:
    if table.version is not None and (table.engine != "ReplacingMergeTree" or table.version not in columns):
        raise StoreError(f"table {name!r}: version {table.version!r} needs engine ReplacingMergeTree and a column of that name")
    cols = ",\n  ".join(column_definition(c, t, table) for c, t in columns.items())
    engine = table.engine if table.engine in _ENGINES else "MergeTree"
    ordering = table.order_by
    if table.key:  # the columns that identify a row: repeats collapse into one
        engine, ordering = "ReplacingMergeTree", table.key
    version = _ident(table.version) if table.version else ""
    order = ", ".join(_ident(c) for c in ordering) or "tuple()"
    sql = f"CREATE TABLE IF NOT EXISTS {_ident(name)} (\n  {cols}\n) ENGINE = {engine}({version}) ORDER BY ({order})"
    time_col = time_column_of(columns, time_column)
    if table.retention_ms and time_col:
        sql += f"\nTTL toDateTime(intDiv({_ident(time_col)}, 1000)) + INTERVAL {int(table.retention_ms) // 1000} SECOND"
    if any(split_type(columns.get(c, "str"))[1] for c in ordering):
        sql += "\nSETTINGS allow_nullable_key = 1"
    return sql


class ClickHouseStore(Store):
    kind = "clickhouse"

    def __init__(
        self,
        name: str,
        url: str,
        data_dir: str = ".fxrun",
        *,
        password: str | None = None,
        password_env: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, url, password=password, password_env=password_env, options=options)
        self.data_dir = data_dir
        self.embedded = url.startswith("chdb:")
        self._client: Any = None
        workers = 1 if self.embedded else int(self._options.get("workers", 4))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"store-{name}")
        self._columns: dict[str, list[str]] = {}
        self._json_columns: dict[str, set[str]] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    @property
    def safe_url(self) -> str:
        return base.safe_url(self.url)

    def _error(self, exc: Exception, rows: bool) -> StoreError:
        from clickhouse_connect.driver import exceptions as ch

        secrets = [self._password, base.url_password(self.url)]
        code = getattr(exc, "code", None)
        if isinstance(exc, ch.OperationalError):
            return base.unreachable(self.name, self.kind, self.url, exc, secrets)
        if code in _AUTH_CODES:
            return base.bad_credentials(self.name, self.kind, self.url, self._password_env)
        message = f"store {self.name!r} ({self.kind}) at {self.safe_url}: {base.one_line(str(exc), secrets)}"
        if rows and (isinstance(exc, (TypeError, ValueError, AttributeError, OverflowError, ch.DataError)) or code in _DATA_CODES):
            return StoreRejected(message)
        return StoreError(message)

    async def _call(self, fn: Callable[..., T], *args: Any, rows: bool = False, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, rows) from None

    def _require_client(self) -> Any:
        if self._client is None:
            raise StoreError(f"store {self.name!r} ({self.kind}) is not connected")
        return self._client

    async def connect(self) -> None:
        import clickhouse_connect

        if self.embedded:
            path = Path(self.url.removeprefix("chdb://")).resolve()
            path.mkdir(parents=True, exist_ok=True)
            self._client = await self._call(clickhouse_connect.get_client, dsn=f"chdb://{path}")
            return
        password = self._password if self._password is not None else base.url_password(self.url) or ""
        self._client = await self._call(
            clickhouse_connect.get_client,
            dsn=self.url,
            password=password,
            connect_timeout=float(self._options.get("connect_timeout", 5)),
            send_receive_timeout=float(self._options.get("timeout", 300)),
            autogenerate_session_id=False,
        )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await self._call(client.close)
            except StoreError:
                pass
        self._executor.shutdown(wait=True)

    async def ensure_table(self, name: str, table: Table, columns: Mapping[str, str], time_column: str | None = None) -> None:
        """Create the table, or add the columns a newer declaration has (a contract's new optional field)."""
        client = self._require_client()
        await self._call(client.command, create_table_sql(name, table, columns, time_column))
        existing = await self.query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}", {"t": name})
        have = {row["name"] for row in existing}
        for column, portable in columns.items():
            if column not in have:
                await self._call(client.command, f"ALTER TABLE {_ident(name)} ADD COLUMN IF NOT EXISTS {column_definition(column, portable, table)}")
                log.info("table %s: added column %s (declared since the table was created)", name, column)
        self._columns[name] = column_names(columns)
        self._json_columns[name] = {c for c, t in columns.items() if split_type(t)[0] == "json"}
        self._defaults[name] = {table.version: 0} if table.version else {}

    async def insert(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        columns = self._columns.get(name)
        if columns is None:
            raise StoreError(f"table {name!r} was not created through ensure_table")
        data = column_data(rows, columns, self._json_columns[name], self._defaults[name])
        await self._call(self._require_client().insert, name, data, column_names=columns, column_oriented=True, rows=True)

    @staticmethod
    def _named(parameters: Mapping[str, Any] | Sequence[Any] | None) -> dict[str, Any]:
        if parameters is None:
            return {}
        if not isinstance(parameters, Mapping):
            raise StoreError("ClickHouse queries take named parameters: {name:Type} in the SQL, a dict of values")
        return dict(parameters)

    async def query(self, sql: str, parameters: Mapping[str, Any] | Sequence[Any] | None = None) -> list[dict[str, Any]]:
        result = await self._call(self._require_client().query, sql, parameters=self._named(parameters))
        names = result.column_names
        return [dict(zip(names, row)) for row in result.result_rows]

    async def query_df(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pandas.DataFrame:
        """Typed columns (Int64 → int64, Float64 → float64, …) straight from the wire, without dict rows."""
        return await self._call(self._require_client().query_df, sql, parameters=self._named(parameters))

    async def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pyarrow.Table:
        return await self._call(self._require_client().query_arrow, sql, parameters=self._named(parameters))

    async def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """A statement without rows (``OPTIMIZE TABLE t FINAL``, ``ALTER …``)."""
        return await self._call(self._require_client().command, sql, parameters=self._named(parameters))
