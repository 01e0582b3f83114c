"""Polygon historical downloader: gap detection and page handling against plain baselines.

    .venv/bin/python bench/bench_polygon_historical.py
    .venv/bin/python bench/bench_polygon_historical.py --days 60

Prints, in one run:
1. ``find_gaps`` over ``--days`` of 1m bars (scattered 1 % missing, so many small gaps) in ms,
   against the bare set difference ``[b for b in expected if b not in present]`` over the same
   expected list: the ratio is what weekend handling and range building cost;
2. ``PolygonClient.aggregates`` reading a warmed simulator (pages of 5000 bars), bars/s, against
   one aiohttp session doing the same GETs and ``orjson.loads``: the client's overhead;
3. ``problem_of`` + ``to_bar`` per aggregate against copying the dict (bars/s).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from nodes.marketdata.timeframes import Buckets  # noqa: E402
from nodes.polygon_historical.client import PolygonClient  # noqa: E402
from nodes.polygon_historical.gaps import expected_starts, find_gaps  # noqa: E402
from nodes.polygon_historical.rows import problem_of, to_bar  # noqa: E402
from nodes.polygon_historical.simulator import PolygonSimulator  # noqa: E402

END = 1_793_397_600_000  # Friday 2026-10-30 22:00 UTC, the weekly close
REPEATS = 5


def best(fn: Any, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_gaps(days: int) -> None:
    buckets = Buckets("1m")
    start = END - days * 86_400_000
    expected = expected_starts(buckets, start, END)
    rng = random.Random(1)
    present = {b for b in expected if rng.random() >= 0.01}
    plan = find_gaps(buckets, start, END, present)
    ours = best(lambda: find_gaps(buckets, start, END, present))
    bare = best(lambda: [b for b in expected if b not in present])
    print(f"gap detection, {days} days of 1m ({len(expected)} expected, {len(plan.missing)} missing in {len(plan.ranges)} ranges):")
    print(f"  find_gaps {ours * 1000:.1f} ms   bare set difference {bare * 1000:.1f} ms   ratio {ours / bare:.1f}x")


async def bench_client(hours: int) -> None:
    async with PolygonSimulator(page_size=5000) as sim:
        start = END - hours * 3_600_000
        path = f"/v2/aggs/ticker/C:EURUSD/range/1/minute/{start}/{END - 1}"
        async with PolygonClient("k", base_url=sim.url) as client:

            async def ours() -> int:
                return sum([len(p) async for p in client.aggregates("EURUSD", 1, "minute", start, END - 1)])

            n = await ours()  # warms the simulator's cache

            async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as session:

                async def bare() -> int:
                    count, url = 0, f"{sim.url}{path}?adjusted=true&sort=asc&limit=50000"
                    while url:
                        async with session.get(url) as response:
                            body = orjson.loads(await response.read())
                        count += len(body.get("results") or [])
                        url = body.get("next_url")
                    return count

                assert await bare() == n
                t_ours = min([await timed(ours) for _ in range(REPEATS)])
                t_bare = min([await timed(bare) for _ in range(REPEATS)])
    print(f"client, {n} bars in pages of 5000 from the simulator (server time included in both):")
    print(f"  PolygonClient {n / t_ours:,.0f} bars/s   bare aiohttp+orjson {n / t_bare:,.0f} bars/s   ratio {t_ours / t_bare:.2f}x")


async def timed(fn: Any) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


def bench_rows(n: int) -> None:
    buckets = Buckets("1m")
    rows = [{"v": 40, "vw": 1.08, "o": 1.08, "c": 1.0801, "h": 1.0802, "l": 1.0799, "t": END + i * 60_000, "n": 40} for i in range(n)]

    def ours() -> None:
        for raw in rows:
            if problem_of(raw, buckets) is None:
                to_bar(raw, "EURUSD", buckets)

    def bare() -> None:
        for raw in rows:
            dict(raw)

    t_ours, t_bare = best(ours), best(bare)
    print(f"row check + bar.v1, {n} aggregates:")
    print(f"  problem_of+to_bar {n / t_ours:,.0f} rows/s   dict copy {n / t_bare:,.0f} rows/s   ratio {t_ours / t_bare:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--hours", type=int, default=48, help="hours of 1m bars the client reads")
    parser.add_argument("--rows", type=int, default=50_000, help="aggregates for the row check")
    args = parser.parse_args()
    bench_gaps(args.days)
    asyncio.run(bench_client(args.hours))
    bench_rows(args.rows)


if __name__ == "__main__":
    main()
