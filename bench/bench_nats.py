"""Publish → subscribe throughput of NatsPubSub against raw nats-py, in one run, on one server.

    .venv/bin/python bench/bench_nats.py              # 200,000 messages per measurement, best of 3
    .venv/bin/python bench/bench_nats.py -n 50000     # quicker

Starts one local nats-server (``framework.infra.NatsServer``, temporary directory). Each side
uses two connections, a publisher and a subscriber, and sends the same tick-shaped dict: the
raw side encodes it with ``orjson.dumps`` and its callback decodes it with ``orjson.loads``, as
NatsPubSub does, so the ratio measures only what the transport adds (subject validation and
routing, the callback wrapper, in-flight accounting). A measurement runs from the first
publish until the subscriber has the last message. Prints both rates and their ratio
(target: NatsPubSub/raw ≥ 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
import orjson  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from framework.infra import NatsServer  # noqa: E402
from framework.topology.model import NatsConfig  # noqa: E402
from framework.transport.base import Headers, Message  # noqa: E402
from framework.transport.nats import NatsPubSub  # noqa: E402

REPEATS = 3
TARGET = 0.8
PAYLOAD: dict[str, Any] = {
    "symbol": "EURUSD",
    "ts": 1_700_000_000_000,
    "bid": 1.08425,
    "ask": 1.08431,
    "bid_size": 1_000_000.0,
    "ask_size": 750_000.0,
    "source": "bench",
    "seq": 0,
}
Run = Callable[[str, int], Awaitable[float]]


async def run_raw(url: str, n: int) -> float:
    """Seconds for ``n`` messages through two plain nats-py connections."""
    pub = await nats.connect(url, pending_size=8 * 1024 * 1024)
    sub = await nats.connect(url)
    subject = f"bench.{uuid.uuid4().hex[:8]}.ticks.EURUSD"
    done = asyncio.Event()
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        orjson.loads(msg.data)
        count += 1
        if count == n:
            done.set()

    await sub.subscribe(subject, cb=on_msg)
    await sub.flush()
    dumps = orjson.dumps
    start = time.perf_counter()
    for _ in range(n):
        await pub.publish(subject, dumps(PAYLOAD))
    await pub.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    await pub.close()
    await sub.close()
    return elapsed


async def run_fxflow(url: str, n: int) -> float:
    """Seconds for ``n`` messages through two NatsPubSub transports."""
    config = NatsConfig(servers=[url])
    pub = NatsPubSub(config, name="bench-pub")
    sub = NatsPubSub(config, name="bench-sub")
    await pub.connect()
    await sub.connect()
    subject = f"bench.{uuid.uuid4().hex[:8]}.ticks.EURUSD"
    done = asyncio.Event()
    count = 0

    async def handler(subject: str, payload: Message, headers: Headers | None) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    await sub.subscribe(subject, handler)
    publish = pub.publish
    start = time.perf_counter()
    for _ in range(n):
        await publish(subject, PAYLOAD)
    await pub.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    await pub.close()
    await sub.close()
    return elapsed


async def best(url: str, n: int, runs: dict[str, Run]) -> dict[str, float]:
    """Messages per second of the fastest of REPEATS runs per side, the sides interleaved."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(REPEATS):
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for name in order:
            times[name].append(await runs[name](url, n))
    return {name: n / min(t) for name, t in times.items()}


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fxflow-bench-nats-") as tmp:
        server = NatsServer(Path(tmp) / "nats").start()
        try:
            await run_raw(server.url, min(n, 20_000))
            await run_fxflow(server.url, min(n, 20_000))
            rates = await best(server.url, n, {"raw": run_raw, "fxflow": run_fxflow})
        finally:
            server.stop()
    raw, ours = rates["raw"], rates["fxflow"]
    print(f"NATS publish → subscribe, {n:,} messages of {len(orjson.dumps(PAYLOAD))} bytes, best of {REPEATS}")
    print(f"  raw nats-py (+ orjson)                     {raw:>12,.0f} msg/s")
    print(f"  NatsPubSub                                 {ours:>12,.0f} msg/s")
    verdict = "ok" if ours / raw >= TARGET else "BELOW TARGET"
    print(f"  ratio NatsPubSub/raw                       {ours / raw:>12.2f}   (target ≥ {TARGET}: {verdict})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200_000, help="messages per measurement")
    asyncio.run(main(parser.parse_args().n))
