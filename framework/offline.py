"""A topology's tables and artifact store opened outside a run, for verbs that read or change what runs left.

``fxrun trace`` reads traced tables; a plugin's verb (``fxrun models promote``) may need to
write a row or tag an artifact as the service would. This opens the same stores a run opens
(``open_store`` per declared store, tables created if missing with the columns a run gives
them) and the artifact store over its metadata table::

    async with open_offline(loaded.topology, data_dir, ["model_promotions"], contracts=registry) as offline:
        refs = await offline.artifacts.list()
        await offline.tables["model_promotions"].insert([row])

Tables are written directly (not batched): a verb's write is done when it returns. Embedded
ClickHouse (chdb) allows one process at a time, so a verb runs while no run holds ``data_dir``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from framework.artifacts import ArtifactStore, StoreTable, files_stores, metadata_table_name, metadata_table_problem
from framework.errors import UserError

if TYPE_CHECKING:
    from framework.contracts import ContractRegistry
    from framework.stores.base import Store
    from framework.topology.model import Topology


@dataclass
class Offline:
    tables: dict[str, StoreTable] = field(default_factory=dict)
    artifacts: ArtifactStore | None = None


@asynccontextmanager
async def open_offline(
    topology: Topology,
    data_dir: str | Path,
    tables: Sequence[str] = (),
    *,
    contracts: ContractRegistry | None = None,
    service: str = "fxrun",
) -> AsyncIterator[Offline]:
    """``tables`` (declared names) and the first ``kind: files`` store with its metadata table."""
    from framework.runtime.assembly import TRACE_COLUMNS
    from framework.stores.base import open_store
    from framework.stores.columns import columns_from_contract

    files = files_stores(topology)
    artifact_store = next(iter(files), None)
    names = list(dict.fromkeys(tables))
    if artifact_store is not None:
        problem = metadata_table_problem(topology, artifact_store)
        if problem is not None:
            raise UserError(problem, path=f"stores.{artifact_store}")
        names.append(metadata_table_name(files[artifact_store]))
    unknown = [n for n in names if n not in topology.tables]
    if unknown:
        raise UserError(f"table {unknown[0]!r} is not declared under `tables:`", path="tables")
    stores: dict[str, Store] = {}
    out = Offline()
    try:
        for name in dict.fromkeys(names):
            table = topology.tables[name]
            store = stores.get(table.store)
            if store is None:
                config = topology.stores[table.store]
                store = next((stores[n] for n in stores if topology.stores[n] == config), None)  # one chdb session per process
                if store is None:
                    store = open_store(table.store, config, str(data_dir))
                    await store.connect()
                stores[table.store] = store
            if table.contract:
                if contracts is None:
                    raise UserError(f"table {name!r} takes its columns from contract {table.contract}: pass the contracts")
                contract = contracts.resolve(table.contract)
                columns, time_column = columns_from_contract(contract), contract.time_field
            else:
                columns, time_column = dict(table.columns or {}), None
            if table.trace:
                columns = {**columns, **TRACE_COLUMNS}
            if topology.runtime.retention == "off" and table.retention:
                table = table.model_copy(update={"retention": None})
            await store.ensure_table(name, table, columns, time_column)
            out.tables[name] = StoreTable(store, name)
        if artifact_store is not None:
            metadata = out.tables[metadata_table_name(files[artifact_store])]
            out.artifacts = ArtifactStore.from_config(artifact_store, files[artifact_store], metadata, data_dir=data_dir, service=service)
        yield out
    finally:
        for store in {id(s): s for s in stores.values()}.values():
            await store.close()
