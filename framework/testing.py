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

The recording bus delivers through the NATS wire codec (``InProcessPubSub(wire=True)``, as the
demo runs): a message NATS could not carry (a numpy number, a datetime) fails the test, and
each subscriber gets its own copy. The same test runs on a real NATS server when
``recording_bus`` is given its URL (``recording_bus("risk.alert.>", nats=nats_server.url)``
with the ``nats_server`` fixture of ``tests/conftest.py``, or ``fxrun infra up``'s server).
Delivery over NATS is asynchronous, so a test that must know its messages were handled
before it goes on awaits :func:`handled` (immediate in-process)::

    @pytest.mark.parametrize("transport", ["inprocess", "nats"])
    async def test_spread_alerts(tmp_path, transport, request):
        url = request.getfixturevalue("nats_server").url if transport == "nats" else None
        bus, alerts = await recording_bus("risk.alert.>", nats=url)
        ...
        await bus.publish("ticks.EURUSD", tick)
        await handled(rt, "spread-watch", 1)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.contracts import ContractRegistry
from framework.registry import Registry
from framework.runtime import Runtime
from framework.topology.load import LoadedRun, find_project, load_run
from framework.transport.base import PubSubTransport
from framework.transport.inprocess import InProcessPubSub

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["contracts", "handled", "load", "make_runtime", "query", "query_df", "recording_bus"]


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


async def recording_bus(
    *patterns: str, nats: str | None = None, durable: Sequence[str] = ()
) -> tuple[PubSubTransport, list[tuple[str, dict[str, Any]]]]:
    """A bus to hand to the runtime, recording ``(subject, payload)`` of every match.

    In-process through the wire codec; with ``nats`` (a server URL) a NATS connection to that
    server, whose ``durable`` subject patterns are kept in JetStream streams of this bus alone.
    """
    bus: PubSubTransport
    if nats is None:
        bus = InProcessPubSub(wire=True)
    else:
        from framework.topology.model import NatsConfig
        from framework.transport.nats import NatsPubSub

        prefix = f"TEST{uuid.uuid4().hex[:8].upper()}"
        bus = NatsPubSub(NatsConfig(servers=[nats], durable=list(durable)), name="fxflow-test", stream_prefix=prefix)
    await bus.connect()
    got: list[tuple[str, dict[str, Any]]] = []

    async def record(subject: str, payload: dict[str, Any], headers: Any) -> None:
        got.append((subject, payload))

    for pattern in patterns:
        await bus.subscribe(pattern, record)
    return bus, got


async def handled(runtime: Runtime, service: str, count: int, timeout: float = 30.0) -> None:
    """Return once the handlers of ``service`` have returned (or raised) for ``count`` messages in all.

    In-process that is at once (delivery is inline); over NATS, a moment after the publish."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    metrics = runtime.hosts[service].metrics
    while metrics.latency_count < count:  # counted when a handler call ends
        if loop.time() > deadline:
            raise TimeoutError(f"{service} handled {metrics.latency_count} of {count} messages within {timeout:.0f}s")
        await asyncio.sleep(0.005)


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
