"""Time to the first replayed record: the group-less reader against a consumer group, on tansu.

    .venv/bin/python bench/bench_replay.py            # 20,000 archived records, 5 replays each way
    .venv/bin/python bench/bench_replay.py -n 2000 -r 2

A restarted service catches up by replaying a span of its archive (data-bridge after a crash,
a gap the runtime refills). Before, a replay joined a private consumer group, waited to be
assigned its partitions, then seeked by time; on tansu the join alone takes seconds. Now
``LogTransport.read`` assigns the partitions itself, positions them by time and reads, with no
group. Both sides here replay the same span (the last tenth of the records, by timestamp) of a
14-partition topic on a tansu broker this script starts, each on a fresh connection as a
restarted process would; the baseline is the old path (``consumer`` + ``seek_to_timestamp``).

Prints the median time to the first record and to the end of the span for each, and the
speed-up of the first record (aim: under 2 s for the reader).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.infra import KafkaServer  # noqa: E402
from framework.topology.model import KafkaConfig  # noqa: E402
from framework.transport.base import TopicSpec  # noqa: E402
from framework.transport.kafka import KafkaLog  # noqa: E402

SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD",
           "EURGBP", "EURJPY", "GBPJPY", "XAUUSD", "AUDJPY", "EURCHF", "EURAUD"]  # fmt: skip
T0 = 1_793_577_600_000
TOPIC = "tick_archive"


async def fill(log: KafkaLog, n: int) -> None:
    await log.ensure_topics([TopicSpec(TOPIC, len(SYMBOLS))])
    sends = []
    for i in range(n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        tick = {"symbol": symbol, "ts": T0 + i * 10, "bid": 1.1, "ask": 1.1002, "source": "bench", "seq": i}
        sends.append(await log.send(TOPIC, tick, key=symbol, timestamp_ms=tick["ts"]))
    await asyncio.gather(*sends)


async def by_reader(config: KafkaConfig, start: int, end: int) -> tuple[float, float, int]:
    log = KafkaLog(config, service="bench-reader")
    t0 = time.perf_counter()
    await log.connect()
    first = None
    count = 0
    try:
        async for records in log.read([TOPIC], start, end):
            if first is None:
                first = time.perf_counter() - t0
            count += len(records)
    finally:
        await log.close()
    return first or float("nan"), time.perf_counter() - t0, count


async def by_group(config: KafkaConfig, start: int, end: int) -> tuple[float, float, int]:
    """The old replay: a private consumer group, wait for the assignment, seek by time, read until idle."""
    log = KafkaLog(config, service="bench-group", session_timeout_ms=6_000, heartbeat_interval_ms=500)
    t0 = time.perf_counter()
    await log.connect()
    consumer = log.consumer(f"replay.{uuid.uuid4().hex[:12]}", [TOPIC])
    first = None
    count = 0
    try:
        await consumer.start()
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=50, max_records=1)
        await consumer.seek_to_timestamp(start)
        idle = 0
        while idle < 3:
            records = [r for r in await consumer.getmany(timeout_ms=200, max_records=1000) if start <= r.timestamp < end]
            if not records:
                idle += 1
                continue
            idle = 0
            if first is None:
                first = time.perf_counter() - t0
            count += len(records)
    finally:
        await consumer.stop()
        await log.close()
    return first or float("nan"), time.perf_counter() - t0, count


async def main(n: int, repeats: int) -> None:
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, KafkaServer(Path(tmp)) as server:
        config = KafkaConfig(bootstrap=[server.url.removeprefix("kafka://")])
        log = KafkaLog(config, service="bench-fill")
        await log.connect()
        await fill(log, n)
        await log.close()
        start, end = T0 + int(n * 0.9) * 10, T0 + n * 10
        results: dict[str, list[tuple[float, float, int]]] = {"reader": [], "group": []}
        for _ in range(repeats):
            results["reader"].append(await by_reader(config, start, end))
            results["group"].append(await by_group(config, start, end))
    for name, runs in results.items():
        first = statistics.median(r[0] for r in runs)
        whole = statistics.median(r[1] for r in runs)
        print(f"{name:>6}: first record after {first:.3f} s, span of {runs[0][2]} records done after {whole:.3f} s")
    reader = statistics.median(r[0] for r in results["reader"])
    group = statistics.median(r[0] for r in results["group"])
    print(f"time to the first replayed record: reader {reader:.3f} s vs consumer group {group:.3f} s: speed-up {group / reader:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="records in the archive")
    parser.add_argument("-r", type=int, default=5, help="replays of each kind (median)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.r))
