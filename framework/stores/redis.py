"""Redis / DragonflyDB through redis.asyncio, for tables with ``engine: kv``.

A kv table is a key prefix (``<table>:<key>``) and its retention is the keys' TTL. Two uses:

- **dedup keys**: :meth:`RedisStore.claim` sets each key ``NX PX ttl`` in one pipeline and
  reports which keys were new. The value is a random token per call rather than ``1``, so a
  pipeline retried after a lost reply still knows which keys it claimed itself (a key holding
  its token), instead of mistaking them for duplicates and dropping events.
- **latest values**: :meth:`put_latest` / :meth:`get_latest` store one JSON value per key, with
  the table's TTL unless another is given.

``insert`` (what a table writer calls) stores each row as the latest value under its ``key``
column (the first column when there is none), in one MULTI/EXEC. There is no SQL here.

A call that finds the connection lost is tried once more at once (the server may have closed a
pooled connection on restart). A server still unreachable begins an outage, logged once when
it begins and once when a call succeeds again (:class:`framework.outage.Outage`); the calls
in between raise :class:`~framework.stores.base.StoreUnavailable` to their callers, who retry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from framework.outage import Outage
from framework.stores import base
from framework.stores.base import KeyValueStore, Store, StoreError, StoreUnavailable
from framework.topology.model import Table

if TYPE_CHECKING:
    import redis.asyncio

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _KvTable:
    key_column: str
    ttl_ms: int | None


class RedisStore(Store, KeyValueStore):
    """Options: ``connect_timeout`` (5 s), ``timeout`` (5 s per command)."""

    kind = "redis"

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
        self.connect_timeout = float(opts.get("connect_timeout", 5))
        self.timeout = float(opts.get("timeout", 5))
        self._client: redis.asyncio.Redis | None = None
        self._tables: dict[str, _KvTable] = {}
        self.outage = Outage(
            log,
            began=lambda o: f"{o.last_error} (its calls fail until it is back)",
            ended=lambda o: (
                f"store {self.name!r} ({self.kind}) at {self.safe_url} is reachable again after {o.duration:.1f}s "
                f"({o.attempts} failed calls)"
            ),
        )

    @property
    def safe_url(self) -> str:
        return base.safe_url(self.url)

    def _error(self, exc: BaseException) -> StoreError:
        from redis import exceptions as rx

        secrets = [self._password, base.url_password(self.url)]
        text = str(exc)
        if isinstance(exc, (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError)) or (
            isinstance(exc, rx.ResponseError) and text.startswith(("NOAUTH", "WRONGPASS", "invalid password"))
        ):
            return base.bad_credentials(self.name, self.kind, self.url, self._password_env)
        if isinstance(exc, (rx.ConnectionError, rx.TimeoutError, OSError, TimeoutError)):
            return base.unreachable(self.name, self.kind, self.url, exc, secrets)
        return StoreError(f"store {self.name!r} ({self.kind}) at {self.safe_url}: {base.one_line(text, secrets)}")

    @staticmethod
    def _connection_lost(exc: BaseException) -> bool:
        from redis import exceptions as rx

        return isinstance(exc, (rx.ConnectionError, rx.TimeoutError)) and not isinstance(exc, rx.AuthenticationError)

    async def _call(
        self, work: Callable[[redis.asyncio.Redis], Awaitable[T]], *, retry: bool = True, final: bool = True
    ) -> T:
        """``work``, once more on a lost connection (a pooled one the server closed on restart) when
        ``retry``. The outcome of a ``final`` call (one the caller will not retry itself) is the
        outage's: an unreachable server is a failed attempt, a success ends an outage."""
        if self._client is None:
            raise StoreError(f"store {self.name!r} ({self.kind}) is not connected")
        try:
            try:
                result = await work(self._client)
            except Exception as exc:
                if not (retry and self._connection_lost(exc)):
                    raise
                result = await work(self._client)
        except Exception as exc:
            error = self._error(exc)
            if final and isinstance(error, StoreUnavailable):
                self.outage.failed(str(error))
            raise error from None
        if self.outage.down:
            self.outage.recovered()
        return result

    async def connect(self) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client = redis.asyncio.from_url(
            self.url,
            password=self._password,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await self._client.ping()
        except Exception as exc:
            client, self._client = self._client, None
            await client.aclose()
            raise self._error(exc) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ensure_table(self, name: str, table: Table, columns: Mapping[str, str], time_column: str | None = None) -> None:
        if table.engine != "kv":
            raise StoreError(
                f"table {name!r}: store {self.name!r} ({self.kind}) holds only engine: kv tables, not {table.engine or 'MergeTree'}"
            )
        key_column = "key" if "key" in columns else next(iter(columns), "key")
        self._tables[name] = _KvTable(key_column, table.retention_ms)

    def _table(self, name: str) -> _KvTable:
        try:
            return self._tables[name]
        except KeyError:
            raise StoreError(f"table {name!r} was not created through ensure_table in store {self.name!r}") from None

    @staticmethod
    def _key(table: str, key: str) -> str:
        return f"{table}:{key}"

    async def claim(self, table: str, keys: Sequence[str], ttl_ms: int | None = None) -> list[bool]:
        if isinstance(keys, str):
            raise TypeError("claim takes a sequence of keys, not one string")
        ttl = ttl_ms if ttl_ms is not None else self._table(table).ttl_ms
        if not keys:
            return []
        full = [self._key(table, k) for k in keys]
        token = os.urandom(12).hex().encode()

        async def set_nx(client: redis.asyncio.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in full:
                pipe.set(key, token, nx=True, px=ttl)
            return await pipe.execute()

        try:
            results = [bool(r) for r in await self._call(set_nx, retry=False, final=False)]
        except StoreUnavailable:
            results = [bool(r) for r in await self._call(set_nx, retry=False)]
            undecided = [i for i, ok in enumerate(results) if not ok]
            if undecided:
                values = await self._call(lambda c: c.mget([full[i] for i in undecided]))
                for i, value in zip(undecided, values):
                    results[i] = value == token
        seen: set[str] = set()
        for i, key in enumerate(full):
            if key in seen:
                results[i] = False
            seen.add(key)
        return results

    async def seen(self, table: str, keys: Sequence[str]) -> list[bool]:
        self._table(table)
        if not keys:
            return []
        full = [self._key(table, k) for k in keys]
        return [value is not None for value in await self._call(lambda c: c.mget(full))]

    async def put_latest(self, table: str, key: str, value: Any, ttl_ms: int | None = None) -> None:
        ttl = ttl_ms if ttl_ms is not None else self._table(table).ttl_ms
        data = orjson.dumps(value)
        await self._call(lambda c: c.set(self._key(table, key), data, px=ttl))

    async def get_latest(self, table: str, key: str) -> Any | None:
        self._table(table)
        data = await self._call(lambda c: c.get(self._key(table, key)))
        return None if data is None else orjson.loads(data)

    async def insert(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        spec = self._table(name)
        try:
            items = [(self._key(name, str(row[spec.key_column])), orjson.dumps(row)) for row in rows]
        except (KeyError, TypeError) as exc:
            raise base.StoreRejected(f"table {name!r}: every row needs a {spec.key_column!r} and JSON values ({exc})") from None

        async def write(client: redis.asyncio.Redis) -> None:
            pipe = client.pipeline(transaction=True)
            for key, data in items:
                pipe.set(key, data, px=spec.ttl_ms)
            await pipe.execute()

        await self._call(write)

    async def query(self, sql: str, parameters: Mapping[str, Any] | Sequence[Any] | None = None) -> list[dict[str, Any]]:
        raise StoreError(f"store {self.name!r} ({self.kind}) runs no SQL; use claim / put_latest / get_latest on its kv tables")
