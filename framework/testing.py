"""Testing node plugins through the real runtime, with no server (FastStream's test broker, for fxflow).

A plugin's test composes a profile of the project exactly as ``fxrun`` does (the demo profile:
in-process bus and log, embedded ClickHouse, simulated clock), builds a runtime for the
services under test, records what they publish and queries what they wrote::

    from framework.testing import load, make_runtime, query, recording_bus

    async def test_spread_alerts(tmp_path):
        loaded = load(tmp_path, "pairs=[EURUSD]")
        bus, alerts = await recording_bus("risk.alert.>")
        rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["spread-watch"])
        await rt.start()
        await rt.clock.wait_until(ts)                      # as a source on the simulated clock does
        await bus.publish("ticks.EURUSD", tick)
        await rt.stop()
        rows = await query(tmp_path, "SELECT * FROM tick_stats")

Overrides are the same Hydra strings ``fxrun`` takes; the project is found as ``fxrun`` finds
it (``$FXFLOW_PROJECT``, else the working directory or a parent), or passed explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.contracts import ContractRegistry
from framework.registry import Registry
from framework.runtime import Runtime
from framework.topology.load import LoadedRun, find_project, load_run
from framework.transport.inprocess import InProcessPubSub

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["contracts", "load", "make_runtime", "query", "query_df", "recording_bus"]


@lru_cache(maxsize=8)
def contracts(project: Path | None = None) -> ContractRegistry:
    """The project's message contracts (``contracts/``), loaded once per project."""
    return ContractRegistry.load((project or find_project()) / "contracts")


def load(data_dir: Path, *overrides: str, profile: str = "demo", project: Path | None = None) -> LoadedRun:
    """``fxrun topology=<profile> data_dir=<data_dir> <overrides>``, composed and validated, not run."""
    return load_run([f"topology={profile}", f"data_dir={data_dir}", *overrides], project or find_project())


def make_runtime(loaded: LoadedRun, data_dir: Path, **kwargs: Any) -> Runtime:
    """A runtime for ``loaded``; ``pairs`` and ``only`` default to the run's, other kwargs go to :class:`Runtime`."""
    return Runtime(
        loaded.topology,
        kwargs.pop("registry", None) or Registry.discover(),
        contracts(loaded.project),
        pairs=kwargs.pop("pairs", loaded.config.pairs),
        only=kwargs.pop("only", loaded.config.only),
        data_dir=data_dir,
        **kwargs,
    )


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


@asynccontextmanager
async def _embedded_clickhouse(data_dir: Path) -> AsyncIterator[Any]:
    from framework.stores.clickhouse import ClickHouseStore

    store = ClickHouseStore("check", f"chdb://{data_dir}/clickhouse")
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


async def query(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of a run's embedded ClickHouse (``<data_dir>/clickhouse``), after the run has stopped."""
    async with _embedded_clickhouse(data_dir) as store:
        return await store.query(sql)


async def query_df(data_dir: Path, sql: str) -> pd.DataFrame:
    """:func:`query` as a pandas DataFrame."""
    async with _embedded_clickhouse(data_dir) as store:
        return await store.query_df(sql)
