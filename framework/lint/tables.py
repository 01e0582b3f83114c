"""FX302: tables — declared, in a known store that can hold them, with columns, a retention where one is needed, a version and a key that fit them, and one writer unless duplicates are absorbed."""

from __future__ import annotations

import re
from collections.abc import Iterator

from framework.lint.context import LintContext, did_you_mean
from framework.lint.findings import Finding
from framework.stores.columns import columns_from_contract, split_type, time_column_of
from framework.topology.model import StoreConfig, Table

LIVE_PREFIX = "live_"
KV_ENGINE = "kv"
REPLACING_STORES = ("clickhouse",)
"""Store kinds that honour ``engine: ReplacingMergeTree`` (one row per sorting key); others ignore the engine."""
KEYED_STORES = ("postgres", "clickhouse")
"""Store kinds that honour a table's ``key`` (postgres skips a row written again; in clickhouse the key is the
ReplacingMergeTree ordering key, so repeats collapse)."""
PARTITIONED_STORES = ("postgres",)
"""Store kinds whose keyed tables are partitioned by their time column, which the key must then include."""
SHARED = "shared"
KV_STORES = ("redis", "memory")
"""Store kinds that keep every key in memory and hold only ``engine: kv`` tables (retention = the keys' TTL)."""
REPLACING = "ReplacingMergeTree"
_NATIVE_INTEGER = re.compile(r"^(Nullable\()?U?Int(8|16|32|64|128|256)\)?$")


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


def _columns(ctx: LintContext, table: Table) -> tuple[dict[str, str], str | None] | None:
    """The table's columns and time column, as the runtime creates them; None when unknown (FX104 reports the contract)."""
    if table.contract:
        contract = ctx.contract(table.contract)
        if contract is None:
            return None
        columns = columns_from_contract(contract)
        return columns, time_column_of(columns, contract.time_field)
    if not table.columns:
        return None
    return dict(table.columns), time_column_of(table.columns, None)


def _version(ctx: LintContext, name: str, table: Table, store: StoreConfig | None) -> Iterator[Finding]:
    """``version:`` is the integer column a clickhouse ReplacingMergeTree keeps the highest of."""
    column = table.version
    if column is None:
        return
    path = ("tables", name, "version")
    if store is not None and store.kind not in REPLACING_STORES:
        message = (
            f"table {name!r} has `version: {column}`, which store {table.store!r} ({store.kind}) ignores: only "
            f"{' or '.join(REPLACING_STORES)} keeps the row with the highest version; drop `version:` or move the table"
        )
        yield ctx.error("FX302", name, message, path)
    if table.engine != REPLACING:
        message = (
            f"table {name!r} has `version: {column}` but engine {table.engine or 'MergeTree'}: a version column works only "
            f"with `engine: {REPLACING}`; set it or drop `version:`"
        )
        yield ctx.error("FX302", name, message, ("tables", name, "engine") if table.engine else path)
    known = _columns(ctx, table)
    if known is None:
        return
    columns, _ = known
    if column not in columns:
        message = f"table {name!r}: version column {column!r} is not one of its columns{did_you_mean(column, columns)}"
        yield ctx.error("FX302", name, message, path)
    elif split_type(columns[column])[0] != "int" and not _NATIVE_INTEGER.match(columns[column]):
        message = (
            f"table {name!r}: version column {column!r} is {columns[column]}, not an integer; the row with the highest "
            "version is kept, so it must count (a revision number)"
        )
        yield ctx.error("FX302", name, message, path)


def _key(ctx: LintContext, name: str, table: Table, store: StoreConfig | None) -> Iterator[Finding]:
    """``key:`` names columns of the table and, in postgres, includes the time column it is partitioned by."""
    known = _columns(ctx, table) if table.key else None
    if known is None:
        return
    columns, time_column = known
    for i, column in enumerate(table.key or ()):
        if column not in columns:
            message = f"table {name!r}: key column {column!r} is not one of its columns{did_you_mean(column, columns)}"
            yield ctx.error("FX302", name, message, ("tables", name, "key", str(i)))
    if store is not None and store.kind in PARTITIONED_STORES and time_column is not None and time_column not in (table.key or ()):
        message = (
            f"table {name!r}: its key must include the time column {time_column!r}, which store {table.store!r} "
            f"({store.kind}) partitions the table by; add it to `key:`"
        )
        yield ctx.error("FX302", name, message, ("tables", name, "key"))


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
    yield from _version(ctx, name, table, store)
    yield from _key(ctx, name, table, store)


def deduplicates(table: Table, store: StoreConfig | None) -> bool:
    """True if a row written twice is kept once: a key-value table, a unique key, or a replacing engine its store honours."""
    if table.engine == KV_ENGINE:
        return True
    if store is None:
        return False
    return (table.engine == REPLACING and store.kind in REPLACING_STORES) or (
        bool(table.key) and store.kind in KEYED_STORES
    )


def _writers(ctx: LintContext) -> dict[str, list[str]]:
    """Services writing each table (enabled or not: the topology is checked as declared)."""
    out: dict[str, list[str]] = {}
    for ep in ctx.wiring.select(direction="out", kind="table"):
        names = out.setdefault(ep.name, [])
        if ep.service not in names:
            names.append(ep.service)
    return out


def _shared(ctx: LintContext) -> Iterator[Finding]:
    for name, writers in _writers(ctx).items():
        table = ctx.topology.tables.get(name)
        if table is None or len(writers) < 2 or table.writers == SHARED:
            continue
        if deduplicates(table, ctx.topology.stores.get(table.store)):
            continue
        message = (
            f"table {name!r} is written by {len(writers)} services ({', '.join(writers)}) and keeps every row it is "
            "given, so a row two of them write is stored twice; let one service write it, make repeats collapse "
            "(a `key:` naming what identifies a row, or `engine: ReplacingMergeTree` ordered by it in clickhouse), "
            "or mark it `writers: shared` if their rows never repeat each other"
        )
        yield ctx.error("FX302", name, message, ("tables", name))


def tables(ctx: LintContext) -> Iterator[Finding]:
    """FX302: used tables exist; declared tables are complete and fit their store; shared ones absorb duplicates."""
    yield from ctx.undeclared("table", "FX302", ctx.topology.tables, "table", "declare it under `tables:` with a store and a contract or columns")
    for name, table in ctx.topology.tables.items():
        yield from _declared(ctx, name, table)
    yield from _shared(ctx)
