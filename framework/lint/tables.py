"""FX302: tables — declared, in a known store, with columns, and with a retention where one is needed."""

from __future__ import annotations

from collections.abc import Iterator

from framework.lint.context import LintContext, did_you_mean
from framework.lint.findings import Finding
from framework.topology.model import Table

LIVE_PREFIX = "live_"


def _retention_reason(ctx: LintContext, name: str, table: Table) -> str | None:
    store = ctx.topology.stores.get(table.store)
    if store is not None and store.options.get("retention_required"):
        return f"store {table.store!r} requires one (options.retention_required)"
    if name.startswith(LIVE_PREFIX):
        return f"{LIVE_PREFIX}* tables hold recent data only"
    return None


def _declared(ctx: LintContext, name: str, table: Table) -> Iterator[Finding]:
    stores = ctx.topology.stores
    if table.store not in stores:
        known = ", ".join(sorted(stores)) or "none declared"
        message = (
            f"table {name!r} is in unknown store {table.store!r}{did_you_mean(table.store, stores)}; "
            f"use one of the `stores:` ({known})"
        )
        yield ctx.error("FX302", name, message, ("tables", name, "store"))
    if table.contract is None and not table.columns:
        message = f"table {name!r} has neither `contract:` nor `columns:`; set one so its columns are known"
        yield ctx.error("FX302", name, message, ("tables", name))
    why = _retention_reason(ctx, name, table) if table.retention is None else None
    if why:
        message = f"table {name!r} has no retention and {why}; set `retention:` (e.g. 3d)"
        yield ctx.error("FX302", name, message, ("tables", name))


def tables(ctx: LintContext) -> Iterator[Finding]:
    """FX302: used tables exist; declared tables are complete."""
    yield from ctx.undeclared("table", "FX302", ctx.topology.tables, "table", "declare it under `tables:` with a store and a contract or columns")
    for name, table in ctx.topology.tables.items():
        yield from _declared(ctx, name, table)
