"""A process for tests/test_state_restart.py: an endless wall-clock feed into a node that keeps a count.

``python -m tests.state_runner DATA_DIR`` runs until SIGTERM (wired as ``fxrun`` wires it) or
until it is killed. The counter appends every count it reaches to ``DATA_DIR/counts.txt``,
snapshots itself every 100 ms and at stop, and restores at start.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from framework.node import Node, handles
from framework.registry import NodeSpec, Port, Registry
from framework.runtime import Runtime
from tests import test_runtime as T


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out: str = ""


class EndlessFeed(Node[Params]):
    async def run(self) -> None:
        seq = 0
        while True:
            seq += 1
            await self.ctx.publish("ticks", T.tick(seq, T.T0 + seq))
            await asyncio.sleep(0.002)


class Counter(Node[Params]):
    state_version = 1
    snapshot_every = "100ms"

    async def on_start(self) -> None:
        if not hasattr(self, "count"):
            self.count = 0
        self.out = open(self.params.out, "a", buffering=1)  # noqa: SIM115 - one line per count, kept open

    def snapshot(self) -> Any:
        return {"count": self.count}

    def restore(self, state: Any) -> None:
        self.count = state["count"]

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        self.count += 1
        self.out.write(f"{self.count}\n")


REGISTRY = Registry()
REGISTRY.register(NodeSpec(name="endless", factory=f"{__name__}:EndlessFeed", params=Params, outputs={"ticks": Port("tick.v1")}, role="source"))
REGISTRY.register(NodeSpec(name="counter", factory=f"{__name__}:Counter", params=Params, inputs={"ticks": Port("tick.v1")}, role="sink"))


def main(data: Path) -> None:
    services = {
        "feed": {"node": "endless", "phase": "data", "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "counter": {"node": "counter", "phase": "data", "params": {"out": str(data / "counts.txt")},
                    "inputs": {"ticks": {"nats": "ticks.{symbol}"}}},
    }  # fmt: skip
    topo_dir = data / "topology"
    topo_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(T.topology(topo_dir, services, runtime={"clock": "wall"}), REGISTRY, T.CONTRACTS, data_dir=data)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, rt.request_stop)
        await rt.run(None)

    asyncio.run(run())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
