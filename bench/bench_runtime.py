"""The runtime's own costs on simulated time: a hop between nodes, a timer firing, a chain of nodes.

    .venv/bin/python bench/bench_runtime.py              # 200,000 messages, 5-node chain, median of 3
    .venv/bin/python bench/bench_runtime.py -n 20000 -r 1

Everything runs through the real runtime (topology, registry, contracts, the simulation
driver's queue, the node mailboxes' bookkeeping), validation off, on the in-process bus
without the wire codec, as a backtest does:

1. hop: a source publishes N messages into a chain of K relays and a sink; µs per hop is the
   run's time over N × (K + 1) deliveries; the baseline is a bare loop awaiting K + 1 plain
   async handlers per message (the least any dispatch costs);
2. timer: a node with a 1 ms timer while a source moves simulated time over N ms; µs per
   firing, against a bare heap push/pop plus an awaited callback;
3. chain throughput: messages per second through the 5-node chain (aim: >= 300k/s);
4. batch: the same chain with batch ports, chunks of ``--chunk`` ticks (numpy columns) from a
   source that replays a recorded frame: rows per second through the 5 nodes (aim: >= 5M/s).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import heapq
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402

from framework.contracts import ContractRegistry  # noqa: E402
from framework.node import Node, every, handles  # noqa: E402
from framework.registry import NodeSpec, Port, Registry  # noqa: E402
from framework.runtime import Runtime  # noqa: E402
from framework.topology.load import load_topology_file  # noqa: E402

T0 = 1_793_577_600_000
MESSAGE = {"symbol": "EURUSD", "ts": T0, "bid": 1.1, "ask": 1.1002, "source": "bench", "seq": 1}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = 1000
    step_ms: int = 0


class Source(Node[Params]):
    async def run(self) -> None:
        publish = self.ctx.publish
        await self.ctx.clock.wait_until(T0)
        if self.params.step_ms:
            for i in range(self.params.count):
                await self.ctx.clock.wait_until(T0 + (i + 1) * self.params.step_ms)
            return
        for _ in range(self.params.count):
            await publish("out", MESSAGE)


class ChunkSource(Node[Params]):
    """Replays a recorded frame of ticks in chunks (what a backtest source does)."""

    async def on_start(self) -> None:
        import numpy as np

        from framework.chunk import Chunk

        n = self.params.count
        ts = T0 + np.arange(n, dtype=np.int64)
        bid = 1.1 + (np.arange(n) % 100) / 1e5
        self.frame = Chunk({"symbol": np.full(n, "EURUSD", dtype=object), "ts": ts, "bid": bid, "ask": bid + 0.0002,
                            "source": np.full(n, "bench", dtype=object), "seq": np.arange(1, n + 1, dtype=np.int64)})  # fmt: skip

    async def run(self) -> None:
        size = self.params.step_ms or 10_000
        await self.ctx.clock.wait_until(T0)
        for i in range(0, self.params.count, size):
            await self.ctx.publish_batch("out", self.frame.take(slice(i, i + size)))


class BatchRelay(Node[Params]):
    @handles("in", batch=True)
    async def on_chunk(self, chunk: Any) -> None:
        await self.ctx.publish_batch("out", chunk)


class BatchSink(Node[Params]):
    rows = 0

    @handles("in", batch=True)
    async def on_chunk(self, chunk: Any) -> None:
        BatchSink.rows += len(chunk)


class Relay(Node[Params]):
    @handles("in")
    async def on_message(self, message: dict) -> None:
        await self.ctx.publish("out", message)


class Sink(Node[Params]):
    received = 0

    @handles("in")
    async def on_message(self, message: dict) -> None:
        Sink.received += 1


class Ticker(Node[Params]):
    fired = 0

    @every("1ms")
    async def tick(self) -> None:
        Ticker.fired += 1


REGISTRY = Registry()
for spec in (
    NodeSpec(name="src", factory=f"{__name__}:Source", params=Params, outputs={"out": Port("tick.v1")}, role="source"),
    NodeSpec(name="relay", factory=f"{__name__}:Relay", params=Params, inputs={"in": Port("tick.v1")}, outputs={"out": Port("tick.v1")}),
    NodeSpec(name="sink", factory=f"{__name__}:Sink", params=Params, inputs={"in": Port("tick.v1")}),
    NodeSpec(name="ticker", factory=f"{__name__}:Ticker", params=Params),
    NodeSpec(name="chunk_src", factory=f"{__name__}:ChunkSource", params=Params, outputs={"out": Port("tick.v1")}, role="source"),
    NodeSpec(name="batch_relay", factory=f"{__name__}:BatchRelay", params=Params, inputs={"in": Port("tick.v1")}, outputs={"out": Port("tick.v1")}),
    NodeSpec(name="batch_sink", factory=f"{__name__}:BatchSink", params=Params, inputs={"in": Port("tick.v1")}),
):
    REGISTRY.register(spec)
CONTRACTS = ContractRegistry.load(ROOT / "contracts")
BASE: dict[str, Any] = {
    "name": "bench",
    "instruments": {"EURUSD": {"pip": 0.0001, "digits": 5}},
    "timeframes": ["1m"],
    "domains": ["s", "deadletter"],
    "runtime": {"clock": "simulated", "validation": "off", "metrics_interval": "1h", "wire_codec": False, "persist_log": False},
}


def chain(work: Path, n: int, relays: int, chunk: int = 0) -> Runtime:
    kind = "batch_" if chunk else ""
    source = {"node": "chunk_src" if chunk else "src", "phase": "data", "params": {"count": n, "step_ms": chunk}, "outputs": {"out": {"nats": "s.0"}}}
    services: dict[str, Any] = {"src": source}
    for i in range(relays):
        services[f"r{i}"] = {"node": f"{kind}relay", "phase": "data", "inputs": {"in": {"nats": f"s.{i}"}}, "outputs": {"out": {"nats": f"s.{i + 1}"}}}
    services["sink"] = {"node": f"{kind}sink", "phase": "data", "inputs": {"in": {"nats": f"s.{relays}"}}}
    return _runtime(work, services)


def timers(work: Path, n: int) -> Runtime:
    services = {
        "src": {"node": "src", "phase": "data", "params": {"count": 1, "step_ms": n}},
        "ticker": {"node": "ticker", "phase": "data"},
    }
    return _runtime(work, services)


def _runtime(work: Path, services: dict[str, Any]) -> Runtime:
    doc = copy.deepcopy(BASE)
    doc["services"] = services
    work.mkdir(parents=True, exist_ok=True)
    path = work / "topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    topology, _ = load_topology_file(path)
    return Runtime(topology, REGISTRY, CONTRACTS, data_dir=work / "run")


async def timed_run(rt: Runtime) -> float:
    await rt.start()
    started = time.perf_counter()
    await rt.wait()
    elapsed = time.perf_counter() - started
    await rt.stop()
    return elapsed


async def bare_chain(n: int, hops: int) -> float:
    async def handler(message: dict) -> None:
        return None

    handlers = [handler] * hops
    started = time.perf_counter()
    for _ in range(n):
        for h in handlers:
            await h(MESSAGE)
    return time.perf_counter() - started


async def bare_timers(n: int) -> float:
    heap: list[tuple[int, int]] = [(1, 0)]
    fired = 0

    async def callback() -> None:
        nonlocal fired
        fired += 1

    started = time.perf_counter()
    for i in range(n):
        deadline, _ = heapq.heappop(heap)
        await callback()
        heapq.heappush(heap, (deadline + 1, i))
    return time.perf_counter() - started


async def main(n: int, repeats: int, relays: int, chunk: int, rows: int) -> None:
    hops = relays + 1
    ours, bare, tick, tick_bare, batched = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            Sink.received = 0
            ours.append(await timed_run(chain(Path(tmp) / f"c{r}", n, relays)))
            assert Sink.received == n, Sink.received
            bare.append(await bare_chain(n, hops))
            Ticker.fired = 0
            tick.append(await timed_run(timers(Path(tmp) / f"t{r}", n)) / max(Ticker.fired, 1))
            tick_bare.append(await bare_timers(n) / n)
            BatchSink.rows = 0
            batched.append(await timed_run(chain(Path(tmp) / f"b{r}", rows, relays, chunk)))
            assert BatchSink.rows == rows, BatchSink.rows
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    per_hop, bare_hop = ours_s / (n * hops) * 1e6, bare_s / (n * hops) * 1e6
    print(f"chain: {n:,} messages through {relays} relays and a sink ({n * hops:,} deliveries), median of {repeats}")
    print(f"  runtime          {per_hop:6.2f} us per hop   ({n / ours_s:12,.0f} messages/s through the chain)")
    print(f"  bare awaits      {bare_hop:6.2f} us per hop   ratio bare/runtime {bare_hop / per_hop:.2f}")
    t, tb = statistics.median(tick) * 1e6, statistics.median(tick_bare) * 1e6
    print(f"timer: {n:,} ms of simulated time under a 1 ms timer")
    print(f"  runtime          {t:6.2f} us per firing")
    print(f"  bare heap+await  {tb:6.2f} us per firing   ratio bare/runtime {tb / t:.2f}")
    b = statistics.median(batched)
    print(f"batch: {rows:,} ticks in chunks of {chunk:,} through {relays} batch relays and a batch sink")
    print(f"  runtime          {rows / b:14,.0f} rows/s through the chain   ({rows * hops / b:,.0f} rows/s handled by the {hops} nodes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("-r", type=int, default=3)
    parser.add_argument("--relays", type=int, default=4, help="relays between the source and the sink (4: a 5-node chain after the source)")
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per chunk in the batch chain")
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows through the batch chain")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.r, args.relays, args.chunk, args.rows))
