"""Dukascopy .bi5 decoding against a ``struct.iter_unpack`` baseline, and what publishing per tick costs.

    .venv/bin/python bench/bench_bi5.py              # 20 hour files of ~50,000 ticks
    .venv/bin/python bench/bench_bi5.py --hours 5    # quicker

Prints, in one process:
1. record decoding (decompressed bytes → ts/bid/ask/volumes arrays with the per-record checks):
   numpy ``decode_tick_records`` against a ``struct.iter_unpack`` loop producing the same values,
   and their ratio (target >= 5M ticks/s);
2. the same with LZMA decompression (``decode_ticks`` on the file body), LZMA alone, and
   decoding on 2 threads (liblzma releases the GIL; the node decodes big files on worker threads);
3. publishing: the node's own publish loop (``ctx.publish`` per tick) through the real runtime on
   the demo profile (strict validation, batched writes into embedded ClickHouse), then the same with
   ``sampled`` validation (the live profile), each including the final table flush.
"""

from __future__ import annotations

import argparse
import asyncio
import lzma
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes.dukascopy_historical.bi5 import decode_tick_records, decode_ticks, encode_ticks, tick_records  # noqa: E402
from nodes.marketdata.synthetic import SyntheticQuotes  # noqa: E402

HOUR = 3_600_000
FIRST_HOUR = 1_549_267_200_000  # Monday 2019-02-04 08:00 UTC
FACTOR = 100_000
SVC = "dukascopy-historical-downloader"


def make_files(hours: int, mean_interval_ms: int) -> list[tuple[int, bytes]]:
    """Hour files of synthetic EURUSD quotes (weekday hours only), with realistic volumes."""
    quotes = SyntheticQuotes(["EURUSD"], seed=1, mean_interval_ms=mean_interval_ms)
    rng = np.random.default_rng(1)
    files, hour = [], FIRST_HOUR
    while len(files) < hours:
        q = quotes.hour("EURUSD", hour)
        if q:
            volumes = np.round(rng.choice([0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.06, 3.0, 4.5], (2, len(q))), 2)
            body = encode_ticks(
                [x.ts for x in q], [x.bid for x in q], [x.ask for x in q], volumes[0], volumes[1], hour_start_ms=hour, decimal_factor=FACTOR
            )
            files.append((hour, body))
        hour += HOUR
    return files


def struct_records(raw: bytes, hour: int) -> list[tuple[int, float, float, float, float]]:
    """The baseline: what duka-style decoders do (``!IIIff`` per record), with the same checks."""
    out = []
    for ms, ask, bid, ask_volume, bid_volume in struct.iter_unpack(">iiiff", raw):
        if 0 <= ms < HOUR and bid > 0 and ask >= bid and ask_volume >= 0 and bid_volume >= 0:
            out.append((hour + ms, bid / FACTOR, ask / FACTOR, bid_volume, ask_volume))
    return out


def best(fn: Callable[[], Any], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def codec(files: list[tuple[int, bytes]]) -> None:
    ticks = sum(len(lzma.decompress(body)) // 20 for _, body in files)
    raws = [(hour, lzma.decompress(body)) for hour, body in files]
    compressed = sum(len(body) for _, body in files)
    print(f"{len(files)} hour files, {ticks:,} ticks, {compressed / 1e6:.1f} MB compressed ({ticks * 20 / compressed:.1f}x)")

    numpy_s = best(lambda: [decode_tick_records(tick_records(raw), hour, FACTOR) for hour, raw in raws])
    struct_s = best(lambda: [struct_records(raw, hour) for hour, raw in raws])
    print("1. record decoding (no LZMA)")
    print(f"   numpy decode_tick_records   {ticks / numpy_s / 1e6:8.2f} M ticks/s")
    print(f"   struct.iter_unpack baseline {ticks / struct_s / 1e6:8.2f} M ticks/s")
    print(f"   ratio numpy/struct          {struct_s / numpy_s:8.1f}x   (target >= 5 M ticks/s: {'met' if ticks / numpy_s >= 5e6 else 'NOT met'})")

    lzma_s = best(lambda: [lzma.decompress(body) for _, body in files])
    full_s = best(lambda: [decode_ticks(body, hour, FACTOR) for hour, body in files])
    base_s = best(lambda: [struct_records(lzma.decompress(body), hour) for hour, body in files])
    with ThreadPoolExecutor(2) as pool:
        threaded_s = best(lambda: list(pool.map(lambda f: decode_ticks(f[1], f[0], FACTOR), files)))
    print("2. with LZMA decompression (file body → ticks)")
    print(f"   LZMA alone                  {ticks / lzma_s / 1e6:8.2f} M ticks/s ({sum(len(r) for _, r in raws) / lzma_s / 1e6:.0f} MB/s out)")
    print(f"   decode_ticks                {ticks / full_s / 1e6:8.2f} M ticks/s")
    print(f"   lzma + struct baseline      {ticks / base_s / 1e6:8.2f} M ticks/s")
    print(f"   ratio                       {base_s / full_s:8.1f}x")
    print(f"   decode_ticks on 2 threads   {ticks / threaded_s / 1e6:8.2f} M ticks/s")


async def publish_rate(files: list[tuple[int, bytes]], validation: str) -> tuple[int, float, float]:
    """Ticks published through the node's loop on a real runtime; returns (ticks, publish s, publish+flush s)."""
    from framework.contracts import ContractRegistry
    from framework.registry import Registry
    from framework.runtime import Runtime
    from framework.topology.load import load_run

    decoded = [decode_ticks(body, hour, FACTOR) for hour, body in files]
    with tempfile.TemporaryDirectory(prefix="bench-bi5-") as data_dir:
        loaded = load_run(
            [
                "topology=demo",
                f"data_dir={data_dir}",
                f"topology.runtime.validation={validation}",
                f"topology.services.{SVC}.enabled=true",
                f"++topology.services.{SVC}.params.simulate=true",
                f"++topology.services.{SVC}.params.start=2019-02-02T00:00Z",  # a Saturday: nothing to fetch
                f"++topology.services.{SVC}.params.end=2019-02-02T01:00Z",
            ],
            ROOT,
        )
        rt = Runtime(loaded.topology, Registry.discover(), ContractRegistry.load(ROOT / "contracts"), pairs=["EURUSD"], only=[SVC], data_dir=data_dir)
        await rt.start()
        node = rt.hosts[SVC].node
        assert node is not None
        start = time.perf_counter()
        for ticks in decoded:
            await node._publish("EURUSD", ticks)
        published = time.perf_counter() - start
        await rt.stop()
        flushed = time.perf_counter() - start
        written = sum(w.written for w in rt.writers.values())
    return written, published, flushed


def publishing(files: list[tuple[int, bytes]]) -> None:
    print("3. publishing per tick (the node's loop: dict per tick, ctx.publish, batched ClickHouse writes)")
    for validation in ("strict", "sampled"):
        written, published, flushed = asyncio.run(publish_rate(files, validation))
        print(
            f"   validation={validation:8} {written / published:10,.0f} ticks/s published, "
            f"{written / flushed:10,.0f} ticks/s including the table flush ({written:,} rows)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=20, help="hour files to decode")
    parser.add_argument("--mean-interval-ms", type=int, default=70, help="mean time between ticks (70 ms: ~50,000 per hour)")
    parser.add_argument("--publish-hours", type=int, default=4, help="hour files to publish in part 3")
    args = parser.parse_args()
    files = make_files(args.hours, args.mean_interval_ms)
    codec(files)
    publishing(files[: args.publish_hours])


if __name__ == "__main__":
    main()
