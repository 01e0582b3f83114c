"""A process for tests/test_shutdown.py: a wall-clock source and a slow Kafka-group consumer.

``python -m tests.shutdown_runner first|second DATA_DIR``: ``first`` runs both services until
SIGTERM/SIGINT (wired as ``fxrun`` wires them), ``second`` runs the consumer alone for a few
seconds to take what the first left in the log. Each writes what its consumer saw.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from framework.runtime import Runtime
from tests import test_runtime as T


def main(mode: str, data: Path) -> None:
    services = {
        "source": T.svc("ticker", outputs={"ticks": {"kafka": "tick_log"}}),
        "archiver": T.svc("sink", params={"io_delay_s": 0.02}, inputs={"ticks": {"kafka": "tick_log", "group": "arch"}}),
    }
    topo_dir = data.parent / f"topology-{mode}"
    topo_dir.mkdir(parents=True, exist_ok=True)
    topo = T.topology(topo_dir, services, topics={"tick_log": {"partitions": 2, "key": "symbol"}}, runtime={"clock": "wall"})
    only = ["source", "archiver"] if mode == "first" else ["archiver"]
    rt = Runtime(topo, T.REGISTRY, T.CONTRACTS, data_dir=data, only=only)

    async def ready() -> None:
        """READY once both services run and a backlog builds: a start that takes long on a loaded machine must not
        eat the time the test gives them before its signal."""
        while mode == "first":
            m = {s["service"]: s for s in rt.metrics()}
            if m.get("source", {}).get("out", 0) >= 50 and m.get("archiver", {}).get("in", 0) >= 1:
                break
            await asyncio.sleep(0.02)
        print("READY", flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, rt.request_stop)
        announce = asyncio.create_task(ready())
        await rt.run(None if mode == "first" else 3.0)
        announce.cancel()  # a run that ended before its backlog built: no READY, the test says so

    asyncio.run(run())
    metrics = {m["service"]: m for m in rt.metrics()}
    (data / f"seen-{mode}.json").write_text(json.dumps({"seen": T.SEEN["archiver"], "metrics": metrics}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
