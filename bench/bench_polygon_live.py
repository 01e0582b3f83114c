"""Polygon live collector: frame parsing, the WebSocket client on loopback, and the whole node.

    .venv/bin/python bench/bench_polygon_live.py           # ~30 s
    .venv/bin/python bench/bench_polygon_live.py -m 30     # quicker: 30 minutes of feed for parts 2 and 3

Prints, in one run:
1. ``PolygonForexSocket.parse`` on 10-event frames (quotes/s) against a bare ``orjson.loads``
   of the same frames: what reading events into quotes costs on top of decoding;
2. simulator → client over loopback (quotes/s through ``client.stream()``) against a bare
   aiohttp ``ws.receive()`` + ``orjson.loads`` loop on the same simulator feed: the client's
   overhead on the wire path (the simulator's own cost is in both);
3. the node in the runtime (demo profile: simulated clock, in-process bus, strict validation,
   live_ticks in chdb) with ``simulate: true``, against the ``synthetic-ticks`` node publishing
   the same kind of quotes in-process: what the WebSocket round trip costs a source end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.contracts import ContractRegistry  # noqa: E402
from framework.registry import Registry  # noqa: E402
from framework.runtime import Runtime  # noqa: E402
from framework.topology.load import load_run  # noqa: E402
from nodes.marketdata.synthetic import HOUR_MS, SyntheticQuotes  # noqa: E402
from nodes.polygon_live.client import Backoff, PolygonForexSocket  # noqa: E402
from nodes.polygon_live.simulator import PolygonSimulator, frame, quote_event  # noqa: E402
from nodes.polygon_live.spec import SPEC  # noqa: E402

PAIRS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"]
START = 1_793_613_600_000  # 2026-11-02T10:00:00Z, a busy London hour
START_ISO = "2026-11-02T10:00:00Z"
REPEATS = 3


def best(samples: list[float], n: int) -> float:
    return n / min(samples)


def bench_parse(frames: list[str], quotes: int) -> tuple[float, float]:
    client = PolygonForexSocket("ws://127.0.0.1:1/forex", "k", ["EUR/USD"])
    parse, loads = client.parse, orjson.loads
    parse_times, loads_times = [], []
    for _ in range(REPEATS):
        t = time.perf_counter()
        for text in frames:
            loads(text)
        loads_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = 0
        for text in frames:
            got += len(parse(text))
        parse_times.append(time.perf_counter() - t)
        assert got == quotes, (got, quotes)
    return best(parse_times, quotes), best(loads_times, quotes)


async def client_rate(minutes: int) -> tuple[float, int]:
    async with PolygonSimulator(PAIRS, start_ms=START, end_ms=START + minutes * 60_000, close_when_done=True, record=False) as sim:
        client = PolygonForexSocket(sim.url, "k", [f"{p[:3]}/{p[3:]}" for p in PAIRS], backoff=Backoff(0.01, 0.1), stop_when=lambda: sim.finished)
        sim.prime()  # the first hour is computed before timing starts, as in the bare loop below
        t = time.perf_counter()
        n = 0
        async for batch in client.stream():
            n += len(batch)
        elapsed = time.perf_counter() - t
    return n / elapsed, n


async def bare_rate(minutes: int) -> tuple[float, int]:
    async with PolygonSimulator(PAIRS, start_ms=START, end_ms=START + minutes * 60_000, close_when_done=True, record=False) as sim:
        sim.prime()
        t = time.perf_counter()
        n = 0
        async with aiohttp.ClientSession() as session, session.ws_connect(sim.url) as ws:
            await ws.receive()
            await ws.send_str(orjson.dumps({"action": "auth", "params": "k"}).decode())
            await ws.receive()
            await ws.send_str(orjson.dumps({"action": "subscribe", "params": ",".join(f"C.{p[:3]}/{p[3:]}" for p in PAIRS)}).decode())
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                n += sum(1 for e in orjson.loads(msg.data) if e.get("ev") == "C")
        elapsed = time.perf_counter() - t
    return n / elapsed, n


async def runtime_rate(service: str, overrides: list[str]) -> tuple[float, int]:
    registry = Registry.discover()
    if SPEC.name not in registry:
        registry.register(SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_run(["topology=demo", f"data_dir={tmp}", f"pairs=[{','.join(PAIRS)}]", *overrides], ROOT)
        rt = Runtime(loaded.topology, registry, ContractRegistry.load(ROOT / "contracts"), pairs=PAIRS, only=[service], data_dir=tmp)
        t = time.perf_counter()
        await rt.run()
        elapsed = time.perf_counter() - t
        n = next(m["out"] for m in rt.metrics() if m["service"] == service)
    return n / elapsed, n


async def main(minutes: int) -> None:
    logging.disable(logging.WARNING)
    print(f"python {sys.version.split()[0]}, pairs {','.join(PAIRS)}, best of {REPEATS} unless noted")
    print()
    feed = list(SyntheticQuotes(PAIRS).between(START, START + HOUR_MS))
    frames = [frame(*(quote_event(q.symbol, q.ts, q.bid, q.ask) for q in feed[i : i + 10])) for i in range(0, len(feed), 10)]
    parse, loads = bench_parse(frames, len(feed))
    print(f"1. parsing {len(frames):,} frames of 10 quote events ({len(feed):,} quotes)")
    print(f"   bare orjson.loads                 {loads:>12,.0f} quotes/s")
    print(f"   PolygonForexSocket.parse          {parse:>12,.0f} quotes/s   ratio parse/bare {parse / loads:.2f}")
    print()
    clients = [await client_rate(minutes) for _ in range(REPEATS)]
    bares = [await bare_rate(minutes) for _ in range(REPEATS)]
    c, b = max(r for r, _ in clients), max(r for r, _ in bares)
    print(f"2. simulator -> client on loopback, {minutes} min of feed ({clients[0][1]:,} quotes), fast pace")
    print(f"   bare ws.receive + orjson.loads    {b:>12,.0f} quotes/s")
    print(f"   client.stream()                   {c:>12,.0f} quotes/s   ratio client/bare {c / b:.2f}")
    print()
    polys, synths = [], []
    for _ in range(REPEATS):  # interleaved, so a busy machine slows both alike
        polys.append(await runtime_rate("polygon-live-collector", [
            "topology.services.polygon-live-collector.enabled=true",
            "++topology.services.polygon-live-collector.params.simulate=true",
            f"++topology.services.polygon-live-collector.params.simulation.start='{START_ISO}'",
            f"++topology.services.polygon-live-collector.params.simulation.duration={minutes}m",
        ]))
        synths.append(await runtime_rate("synthetic-ticks", [
            "topology.services.synthetic-ticks.enabled=true",
            f"topology.services.synthetic-ticks.params.start='{START_ISO}'",
            f"topology.services.synthetic-ticks.params.duration={minutes}m",
        ]))
    (poly, n), (synth, m) = max(polys), max(synths)
    print("3. one source in the demo runtime (strict validation, live_ticks + tick_archive + ticks.{symbol}), whole run.run()")
    print(f"   synthetic-ticks (in-process)      {synth:>12,.0f} ticks/s  ({m:,} ticks)")
    print(f"   polygon-live-collector, simulate  {poly:>12,.0f} ticks/s  ({n:,} ticks)   ratio polygon/synthetic {poly / synth:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", type=int, default=120, help="minutes of feed for parts 2 and 3 (default 120)")
    args = parser.parse_args()
    asyncio.run(main(args.m))
