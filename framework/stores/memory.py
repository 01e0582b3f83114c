"""An in-process key-value store (``kind: memory``) for ``engine: kv`` tables in the demo and backtests.

Same semantics as the Redis store (claims with a TTL, latest values), no server; the keys
live as long as the process. TTLs run on the monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from framework.stores.base import KeyValueStore, Store, StoreError
from framework.topology.model import Table


class MemoryKeyValueStore(Store, KeyValueStore):
    kind = "memory"

    def __init__(self, name: str, url: str = "memory://", *, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, url, options=options)
        self._ttl: dict[str, int | None] = {}
        self._key_column: dict[str, str] = {}
        self._data: dict[str, dict[str, tuple[Any, float | None]]] = {}
        self._sweeps = 0

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def ensure_table(self, name: str, table: Table, columns: Mapping[str, str], time_column: str | None = None) -> None:
        if table.engine != "kv":
            raise StoreError(f"table {name!r}: store {self.name!r} (memory) holds only engine: kv tables")
        self._ttl[name] = table.retention_ms
        self._key_column[name] = "key" if "key" in columns else next(iter(columns), "key")
        self._data.setdefault(name, {})

    def _table(self, name: str) -> dict[str, tuple[Any, float | None]]:
        try:
            return self._data[name]
        except KeyError:
            raise StoreError(f"table {name!r} was not created through ensure_table in store {self.name!r}") from None

    def _expiry(self, table: str, ttl_ms: int | None) -> float | None:
        ttl = ttl_ms if ttl_ms is not None else self._ttl.get(table)
        return None if ttl is None else time.monotonic() + ttl / 1000

    def _live(self, entries: dict[str, tuple[Any, float | None]], key: str, now: float) -> bool:
        entry = entries.get(key)
        return entry is not None and (entry[1] is None or entry[1] > now)

    async def claim(self, table: str, keys: Sequence[str], ttl_ms: int | None = None) -> list[bool]:
        if isinstance(keys, str):
            raise TypeError("claim takes a sequence of keys, not one string")
        entries = self._table(table)
        now = time.monotonic()
        expiry = self._expiry(table, ttl_ms)
        out = []
        for key in keys:
            if self._live(entries, key, now):
                out.append(False)
            else:
                entries[key] = (True, expiry)
                out.append(True)
        self._sweeps += len(keys)
        if self._sweeps > 100_000:
            self._sweeps = 0
            for name, rows in self._data.items():
                self._data[name] = {k: v for k, v in rows.items() if v[1] is None or v[1] > now}
        return out

    async def seen(self, table: str, keys: Sequence[str]) -> list[bool]:
        entries = self._table(table)
        now = time.monotonic()
        return [self._live(entries, key, now) for key in keys]

    async def put_latest(self, table: str, key: str, value: Any, ttl_ms: int | None = None) -> None:
        self._table(table)[key] = (value, self._expiry(table, ttl_ms))

    async def get_latest(self, table: str, key: str) -> Any | None:
        entries = self._table(table)
        return entries[key][0] if self._live(entries, key, time.monotonic()) else None

    async def insert(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        column = self._key_column.get(name, "key")
        for row in rows:
            await self.put_latest(name, str(row[column]), dict(row))

    async def query(self, sql: str, parameters: Mapping[str, Any] | Sequence[Any] | None = None) -> list[dict[str, Any]]:
        raise StoreError(f"store {self.name!r} (memory) is a key-value store: use claim/get_latest, not SQL")
