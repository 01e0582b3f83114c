"""ClickHouse through clickhouse-connect: ``chdb:///DIR`` (embedded, the demo default) or a server URL.

chdb runs the real ClickHouse engine inside this process; its calls block, so they run on
one worker thread (chdb allows one session per process, and one thread keeps it ordered).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from framework.stores.base import Store, StoreError
from framework.topology.model import Table

_TYPES = {
    "int": "Int64",
    "float": "Float64",
    "str": "String",
    "bool": "Bool",
    "json": "String",
    "timestamp_ms": "Int64",
}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise StoreError(f"{name!r} is not a valid ClickHouse identifier")
    return f"`{name}`"


def column_type(portable: str) -> str:
    nullable = portable.endswith("?")
    base = _TYPES.get(portable.rstrip("?"), portable.rstrip("?"))
    return f"Nullable({base})" if nullable else base


def create_table_sql(name: str, table: Table, columns: Mapping[str, str], time_column: str | None) -> str:
    cols = ",\n  ".join(f"{_ident(c)} {column_type(t)}" for c, t in columns.items())
    engine = table.engine if table.engine in ("MergeTree", "ReplacingMergeTree", "AggregatingMergeTree") else "MergeTree"
    order = ", ".join(_ident(c) for c in table.order_by) or "tuple()"
    sql = f"CREATE TABLE IF NOT EXISTS {_ident(name)} (\n  {cols}\n) ENGINE = {engine}() ORDER BY ({order})"
    if table.retention_ms and time_column:
        sql += f"\nTTL toDateTime(intDiv({_ident(time_column)}, 1000)) + INTERVAL {table.retention_ms // 1000} SECOND"
    return sql


class ClickHouseStore(Store):
    kind = "clickhouse"

    def __init__(self, name: str, url: str, data_dir: str = ".fxrun") -> None:
        self.name = name
        self.url = url
        self.data_dir = data_dir
        self._client: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{name}")
        self._columns: dict[str, list[str]] = {}
        self._json_columns: dict[str, set[str]] = {}

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"store {self.name!r} ({self.safe_url}): {exc}") from exc

    @property
    def safe_url(self) -> str:
        return re.sub(r"//[^/@]*@", "//", self.url)

    async def connect(self) -> None:
        import clickhouse_connect

        dsn = self.url
        if dsn.startswith("chdb://"):
            path = Path(dsn.removeprefix("chdb://")).resolve()
            path.mkdir(parents=True, exist_ok=True)
            dsn = f"chdb://{path}"
        self._client = await self._call(clickhouse_connect.get_client, dsn=dsn)

    async def close(self) -> None:
        if self._client is not None:
            await self._call(self._client.close)
            self._client = None
        self._executor.shutdown(wait=True)

    async def ensure_table(self, name: str, table: Table, columns: Mapping[str, str], time_column: str | None = None) -> None:
        await self._call(self._client.command, create_table_sql(name, table, columns, time_column))
        self._columns[name] = list(columns)
        self._json_columns[name] = {c for c, t in columns.items() if t.rstrip("?") == "json"}

    async def insert(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        columns = self._columns.get(name)
        if columns is None:
            raise StoreError(f"table {name!r} was not created through ensure_table")
        json_cols = self._json_columns[name]
        data = [
            [orjson.dumps(row.get(c)).decode() if c in json_cols else row.get(c) for c in columns] for row in rows
        ]
        await self._call(self._client.insert, name, data, column_names=columns)

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        result = await self._call(self._client.query, sql, parameters=dict(parameters or {}))
        names = result.column_names
        return [dict(zip(names, row)) for row in result.result_rows]
