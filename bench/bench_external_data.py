"""External-data parsing and fetching rates, each against a baseline measured in the same process.

    .venv/bin/python bench/bench_external_data.py          # 200,000 rows per parse measurement
    .venv/bin/python bench/bench_external_data.py -n 50000

Prints:
1. FRED observations parsed per second (``parse_observation``) against a bare ``float()`` of
   the same value strings, and their ratio;
2. calendar rows turned into external_event.v1 per second (``parse_event``) against a bare
   dict copy, and their ratio;
3. FRED observations fetched and parsed per second over HTTP from the simulator (one series,
   about ten years of daily values, 100,000 per page and 1,000 per page).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes.external_data.calendar import parse_event  # noqa: E402
from nodes.external_data.fred import FredClient, parse_observation  # noqa: E402
from nodes.marketdata.ratelimit import RateLimiter  # noqa: E402
from nodes.external_data.simulator import ExternalDataSimulator, FredSeriesGenerator, calendar_week, week_start  # noqa: E402
from nodes.marketdata.http import HttpClient  # noqa: E402

NOW = 1_793_577_600_000  # 2026-11-02
REPEATS = 3


def best_rate(n: int, fn: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return n / best


def parse_rates(n: int) -> None:
    rows = FredSeriesGenerator(7).observations("DGS10", date(2015, 1, 1), date(2026, 11, 1), date(2026, 11, 2))
    fred_rows = (rows * (n // len(rows) + 1))[:n]

    def bare() -> None:
        for r in fred_rows:
            if r["value"] != ".":
                float(r["value"])

    def full() -> None:
        for r in fred_rows:
            parse_observation(r)

    base, rate = best_rate(n, bare), best_rate(n, full)
    print(f"FRED rows:     parse_observation {rate:12,.0f}/s   bare float() {base:12,.0f}/s   ratio {rate / base:.3f}")

    week = calendar_week(7, week_start(NOW))
    cal_rows = (week * (n // len(week) + 1))[:n]

    def copy() -> None:
        for r in cal_rows:
            dict(r)

    def events() -> None:
        for r in cal_rows:
            parse_event(r)

    base, rate = best_rate(n, copy), best_rate(n, events)
    print(f"calendar rows: parse_event       {rate:12,.0f}/s   dict copy    {base:12,.0f}/s   ratio {rate / base:.3f}")


async def fetch_rates() -> None:
    async with ExternalDataSimulator(now_ms=lambda: NOW) as sim, HttpClient() as http:
        for page_size in (100_000, 1_000):
            client = FredClient(http, "k" * 32, base_url=sim.url, page_size=page_size, limiter=RateLimiter(10_000))
            best, count, requests = float("inf"), 0, 0
            for _ in range(REPEATS):
                started = time.perf_counter()
                page = await client.observations("DFF", "2016-11-01")
                best = min(best, time.perf_counter() - started)
                count, requests = len(page.observations), page.requests
            print(f"FRED over HTTP (simulator), page {page_size:>7,}: {count / best:12,.0f} obs/s ({count:,} obs, {requests} request(s), {best * 1000:.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="rows per parse measurement")
    args = parser.parse_args(argv)
    parse_rates(args.n)
    asyncio.run(fetch_rates())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
