"""On simulated time a source's message reaches every subscriber before what one of them makes of it reaches another.

The driver's queue is first in, first out: a tick a source publishes is queued for each of its
subscribers before any of them runs, so a node that takes the tick and what a relay derives from
it sees the tick first (a risk gate sees a bar's price before the signal made from that bar).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from framework.node import Node, handles
from framework.registry import NodeSpec, Port, Registry
from framework.runtime import Runtime
from tests.test_runtime import CONTRACTS, T0, tick, topology

SEEN: list[tuple[str, int]] = []


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(Node[_Strict]):
    async def run(self) -> None:
        for seq in (1, 2, 3):
            await self.ctx.clock.wait_until(T0 + seq * 1000)
            await self.ctx.publish("ticks", tick(seq, T0 + seq * 1000, symbol="EURUSD"))


class Relay(Node[_Strict]):
    """Makes a GBPUSD tick of every EURUSD tick (as features make a signal of a bar)."""

    @handles("ticks")
    async def on_tick(self, message: dict[str, Any]) -> None:
        await self.ctx.publish("out", {**message, "symbol": "GBPUSD"})


class Watcher(Node[_Strict]):
    @handles("ticks")
    async def on_tick(self, message: dict[str, Any]) -> None:
        SEEN.append((message["symbol"], message["seq"]))


def _spec(name: str, cls: type[Node], inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (), role: str = "transform") -> NodeSpec:
    return NodeSpec(name=name, factory=f"{__name__}:{cls.__name__}", inputs={p: Port("tick.v1") for p in inputs},
                    outputs={p: Port("tick.v1") for p in outputs}, role=role)  # type: ignore[arg-type]  # fmt: skip


REGISTRY = Registry()
for _s in (_spec("fan_source", Source, outputs=("ticks",), role="source"), _spec("fan_relay", Relay, ("ticks",), ("out",)),
           _spec("fan_watcher", Watcher, ("ticks",), role="sink")):  # fmt: skip
    REGISTRY.register(_s)


async def test_a_sources_message_is_queued_for_every_subscriber_before_any_runs(tmp_path: Path) -> None:
    SEEN.clear()
    services = {
        "source": {"node": "fan_source", "phase": "data", "outputs": {"ticks": {"nats": "ticks.EURUSD"}}},
        "relay": {"node": "fan_relay", "phase": "data", "inputs": {"ticks": {"nats": "ticks.EURUSD"}},
                  "outputs": {"out": {"nats": "ticks.GBPUSD"}}},  # fmt: skip
        "watcher": {"node": "fan_watcher", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}"}}},
    }
    rt = Runtime(topology(tmp_path, services), REGISTRY, CONTRACTS, data_dir=tmp_path / "run")
    await rt.run(duration=30)
    assert SEEN == [("EURUSD", 1), ("GBPUSD", 1), ("EURUSD", 2), ("GBPUSD", 2), ("EURUSD", 3), ("GBPUSD", 3)]
