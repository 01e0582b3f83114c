"""FX302: tables — declared, in a known store that can hold them, with columns, and with a retention where one is needed."""

from __future__ import annotations

from collections.abc import Iterator

from framework.lint.context import LintContext, did_you_mean
from framework.lint.findings import Finding
from framework.topology.model import StoreConfig, Table

LIVE_PREFIX = "live_"
KV_ENGINE = "kv"
KV_STORES = ("redis", "memory")
"""Store kinds that keep every key in memory and hold only ``engine: kv`` tables (retention = the keys' TTL)."""


def _retention_reason(name: str, table: Table, store: StoreConfig | None) -> str | None:
    if store is not None and store.kind in KV_STORES:
        return f"store {table.store!r} ({store.kind}) keeps every key in memory until its TTL, which is the retention"
    if table.engine == KV_ENGINE:
        return "an `engine: kv` table's keys (dedup, latest values) expire only by its retention"
    if store is not None and store.options.get("retention_required"):
        return f"store {table.store!r} requires one (options.retention_required)"
    if name.startswith(LIVE_PREFIX):
        return f"{LIVE_PREFIX}* tables hold recent data only"
    return None


def _retention(name: str, table: Table, store: StoreConfig | None) -> str | None:
    if table.retention_ms is not None:
        return None
    why = _retention_reason(name, table, store)
    if why is None:
        return None
    kept = "has no retention" if table.retention is None else f"keeps its data forever (retention: {table.retention})"
    return f"table {name!r} {kept} and {why}; set a finite `retention:` (e.g. 3d)"


def _engine(name: str, table: Table, store: StoreConfig) -> str | None:
    if store.kind in KV_STORES and table.engine != KV_ENGINE:
        return (
            f"table {name!r} is in store {table.store!r} ({store.kind}), which holds only `engine: kv` tables, "
            f"not {table.engine or 'MergeTree'}; set `engine: kv` or move it to a clickhouse or postgres store"
        )
    if store.kind not in KV_STORES and table.engine == KV_ENGINE:
        return (
            f"table {name!r} has `engine: kv`, which store {table.store!r} ({store.kind}) cannot provide; "
            f"move it to a {' or '.join(KV_STORES)} store or drop `engine: kv`"
        )
    return None


def _declared(ctx: LintContext, name: str, table: Table) -> Iterator[Finding]:
    stores = ctx.topology.stores
    store = stores.get(table.store)
    if store is None:
        known = ", ".join(sorted(stores)) or "none declared"
        message = (
            f"table {name!r} is in unknown store {table.store!r}{did_you_mean(table.store, stores)}; "
            f"use one of the `stores:` ({known})"
        )
        yield ctx.error("FX302", name, message, ("tables", name, "store"))
    else:
        mismatch = _engine(name, table, store)
        if mismatch:
            yield ctx.error("FX302", name, mismatch, ("tables", name, "engine" if table.engine else "store"))
    if table.contract is None and not table.columns:
        message = f"table {name!r} has neither `contract:` nor `columns:`; set one so its columns are known"
        yield ctx.error("FX302", name, message, ("tables", name))
    missing = _retention(name, table, store)
    if missing:
        path = ("tables", name, "retention") if table.retention is not None else ("tables", name)
        yield ctx.error("FX302", name, missing, path)


def tables(ctx: LintContext) -> Iterator[Finding]:
    """FX302: used tables exist; declared tables are complete and fit their store."""
    yield from ctx.undeclared("table", "FX302", ctx.topology.tables, "table", "declare it under `tables:` with a store and a contract or columns")
    for name, table in ctx.topology.tables.items():
        yield from _declared(ctx, name, table)
