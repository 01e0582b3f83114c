"""The store API nodes reach through ``ctx.table(name)``; implementations per store kind.

Errors are one line, name the store and its URL without the password, and say what to do;
no secret ever reaches a message or a log line (:func:`describe_failure` scrubs them).
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from framework.topology.model import StoreConfig, Table

INFRA_HINT = "start it with `fxrun infra up` (or fix the url)"


class StoreError(Exception):
    """A store operation failed; the caller decides whether to retry."""


class StoreUnavailable(StoreError):
    """The store could not be reached (down, restarting, network): the same call may succeed later."""


class StoreRejected(StoreError):
    """The store refused these rows (wrong type, constraint): retrying the same rows cannot succeed."""


class Store(abc.ABC):
    kind: str

    def __init__(
        self,
        name: str,
        url: str,
        *,
        password: str | None = None,
        password_env: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._password = password
        self._password_env = password_env
        self._options = dict(options or {})

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ensure_table(
        self, name: str, table: Table, columns: Mapping[str, str], time_column: str | None = None
    ) -> None:
        """Create the table if it is missing (idempotent). ``columns`` maps column → portable type
        (``int``, ``float``, ``str``, ``bool``, ``json``, ``timestamp_ms``, with ``?`` for nullable)."""

    @abc.abstractmethod
    async def insert(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows, all or nothing. Raises StoreUnavailable (retry later), StoreRejected
        (these rows can never be written) or StoreError."""

    @abc.abstractmethod
    async def query(
        self, sql: str, parameters: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows as dicts. Values are always bound as parameters, never formatted into ``sql``."""

    async def maintain(self) -> None:
        """Periodic housekeeping (partitions ahead, expired data). The runtime schedules it; most stores need none."""


class KeyValueStore(abc.ABC):
    """Tables with ``engine: kv``: dedup keys and latest values; a table's retention is its keys' TTL."""

    @abc.abstractmethod
    async def claim(self, table: str, keys: Sequence[str], ttl_ms: int | None = None) -> list[bool]:
        """Mark ``keys`` as seen; True for each key nobody had claimed before (within its TTL)."""

    @abc.abstractmethod
    async def seen(self, table: str, keys: Sequence[str]) -> list[bool]:
        """For each key, whether it is claimed (and not expired); claims nothing."""

    @abc.abstractmethod
    async def put_latest(self, table: str, key: str, value: Any, ttl_ms: int | None = None) -> None: ...

    @abc.abstractmethod
    async def get_latest(self, table: str, key: str) -> Any | None: ...


def safe_url(url: str) -> str:
    """``url`` without its password (the user name stays: it helps to diagnose credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//", url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def password_from_env(config: StoreConfig) -> str | None:
    return os.environ.get(config.password_env) if config.password_env else None


def one_line(text: str, secrets: Sequence[str | None] = (), limit: int = 240) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def root_reason(exc: BaseException) -> str:
    """The most telling cause of ``exc``: the innermost OS error if there is one (``Connection refused``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found: BaseException = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current.strerror or str(current)):
            found = current
        current = current.__cause__ or current.__context__
    if isinstance(found, OSError) and found.strerror:
        return found.strerror
    text = str(found) or type(found).__name__
    return text.splitlines()[0] if text.strip() else type(found).__name__


def unreachable(name: str, kind: str, url: str, exc: BaseException, secrets: Sequence[str | None] = ()) -> StoreUnavailable:
    reason = one_line(root_reason(exc), [*secrets, url_password(url)], limit=160)
    return StoreUnavailable(f"store {name!r} ({kind}) at {safe_url(url)} is unreachable: {reason}; {INFRA_HINT}")


def bad_credentials(name: str, kind: str, url: str, password_env: str | None) -> StoreError:
    if url_password(url):
        source = "password from the url"
    elif password_env is None:
        source = "no password configured (set password_env in the store's config)"
    elif os.environ.get(password_env) is None:
        source = f"${password_env} is not set"
    else:
        source = f"password from ${password_env}"
    return StoreError(
        f"store {name!r} ({kind}) at {safe_url(url)} refused the credentials ({source}); "
        "check the user and that variable, or run `fxrun infra up` for a local server"
    )


def open_store(name: str, config: StoreConfig, data_dir: str) -> Store:
    """A store for ``config.kind``. Client libraries are imported here, never by nodes."""
    password = password_from_env(config)
    if config.kind == "clickhouse":
        from framework.stores.clickhouse import ClickHouseStore

        return ClickHouseStore(
            name, config.url, data_dir=data_dir, password=password, password_env=config.password_env, options=config.options
        )
    if config.kind == "postgres":
        from framework.stores.postgres import PostgresStore

        return PostgresStore(name, config.url, password=password, password_env=config.password_env, options=config.options)
    if config.kind == "redis":
        from framework.stores.redis import RedisStore

        return RedisStore(name, config.url, password=password, password_env=config.password_env, options=config.options)
    if config.kind == "memory":
        from framework.stores.memory import MemoryKeyValueStore

        return MemoryKeyValueStore(name, config.url, options=config.options)
    if config.kind == "files":
        raise StoreError(f"store {name!r} (files) holds artifacts, not tables: put its tables in a clickhouse or postgres store")
    raise StoreError(f"store {name!r}: unknown kind {config.kind!r} (postgres, clickhouse, redis or memory)")
