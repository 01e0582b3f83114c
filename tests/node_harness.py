"""Running one or more services through the real runtime in a test, as a plugin author would.

The demo profile gives the in-process bus and log, embedded ClickHouse and a simulated
clock, so a test needs no server; overrides are the same Hydra strings ``fxrun`` takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from framework.contracts import ContractRegistry
from framework.registry import Registry
from framework.runtime import Runtime
from framework.stores.clickhouse import ClickHouseStore
from framework.topology.load import LoadedRun, load_run
from framework.transport.inprocess import InProcessPubSub

PROJECT = Path(__file__).resolve().parents[1]
CONTRACTS = ContractRegistry.load(PROJECT / "contracts")


def load(tmp_path: Path, *overrides: str, profile: str = "demo") -> LoadedRun:
    return load_run([f"topology={profile}", f"data_dir={tmp_path}", *overrides], PROJECT)


def make_runtime(loaded: LoadedRun, tmp_path: Path, **kwargs: Any) -> Runtime:
    """A runtime for ``loaded``; ``pairs`` and ``only`` default to the run's, other kwargs go to Runtime."""
    return Runtime(
        loaded.topology,
        kwargs.pop("registry", None) or Registry.discover(),
        CONTRACTS,
        pairs=kwargs.pop("pairs", loaded.config.pairs),
        only=kwargs.pop("only", loaded.config.only),
        data_dir=tmp_path,
        **kwargs,
    )


async def query(tmp_path: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of the run's embedded ClickHouse, through a fresh store (after the run has stopped)."""
    store = ClickHouseStore("check", f"chdb://{tmp_path}/clickhouse")
    await store.connect()
    try:
        return await store.query(sql)
    finally:
        await store.close()


async def query_df(tmp_path: Path, sql: str) -> pd.DataFrame:
    store = ClickHouseStore("check", f"chdb://{tmp_path}/clickhouse")
    await store.connect()
    try:
        return await store.query_df(sql)
    finally:
        await store.close()


async def recording_bus(*patterns: str) -> tuple[InProcessPubSub, list[tuple[str, dict[str, Any]]]]:
    """An in-process bus to hand to the runtime, recording ``(subject, payload)`` of every match."""
    bus = InProcessPubSub()
    await bus.connect()
    got: list[tuple[str, dict[str, Any]]] = []

    async def record(subject: str, payload: dict[str, Any], headers: Any) -> None:
        got.append((subject, payload))

    for pattern in patterns:
        await bus.subscribe(pattern, record)
    return bus, got
