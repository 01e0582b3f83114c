"""The store API nodes reach through ``ctx.table(name)``; implementations per store kind."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

from framework.topology.model import StoreConfig, Table


class StoreError(Exception):
    """A store operation failed (unreachable, rejected); the caller decides whether to retry."""


class Store(abc.ABC):
    kind: str

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ensure_table(
        self, name: str, table: Table, columns: Mapping[str, str], time_column: str | None = None
    ) -> None:
        """Create the table if it is missing. ``columns`` maps column → portable type
        (``int``, ``float``, ``str``, ``bool``, ``json``, ``timestamp_ms``, with ``?`` for nullable)."""

    @abc.abstractmethod
    async def insert(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows (all or nothing); raises StoreError on failure."""

    @abc.abstractmethod
    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...


def open_store(name: str, config: StoreConfig, data_dir: str) -> Store:
    """A store for ``config.kind``. Client libraries are imported here, never by nodes."""
    if config.kind == "clickhouse":
        from framework.stores.clickhouse import ClickHouseStore

        return ClickHouseStore(name, config.url, data_dir=data_dir)
    raise StoreError(
        f"store {name!r}: kind {config.kind!r} arrives with the real-infrastructure issue; "
        "the demo profile maps every table to the embedded ClickHouse store"
    )
