"""KafkaLog throughput against raw aiokafka, on a tansu broker this script starts itself.

    .venv/bin/python bench/bench_kafka.py              # 50,000 records per measurement, best of 3
    .venv/bin/python bench/bench_kafka.py -n 10000     # quicker

Both sides move the same tick-like payloads with the same key and header, encode and decode
JSON with orjson, and use the same producer settings (acks=all, idempotence as the broker
allows) and the same pipelining: ``--window`` sends in flight, awaited together.

1. produce: ``KafkaLog.produce`` against ``AIOKafkaProducer.send_and_wait`` (+ orjson.dumps);
2. consume: ``KafkaConsumer.getmany`` (a list of decoded Records per call) against
   ``AIOKafkaConsumer.getmany`` decoding each batch into a list of (key, value, headers) with
   orjson and ``bytes.decode``: the same data in the caller's hands. Timed from the first
   record on, so the group join (a second or more on tansu) is left out. For reference it
   also prints raw aiokafka decoding and dropping each record (nothing kept alive, so no
   garbage-collector work), the floor of any consumer that hands batches on.

Prints records/s of each side and the ratio KafkaLog/raw (target >= 0.8 for both).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from framework.infra import KafkaServer  # noqa: E402
from framework.topology.model import KafkaConfig  # noqa: E402
from framework.transport.base import TopicSpec  # noqa: E402
from framework.transport.kafka import KafkaLog  # noqa: E402

SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD",
           "EURGBP", "EURJPY", "GBPJPY", "XAUUSD", "XAGUSD", "EURCHF", "AUDJPY"]  # fmt: skip
PARTITIONS = len(SYMBOLS)
HEADERS = {"trace-id": "4bf92f3577b34da6"}
RAW_HEADERS = [(k, v.encode()) for k, v in HEADERS.items()]
GROUP_TIMINGS: dict[str, Any] = {"session_timeout_ms": 6_000, "heartbeat_interval_ms": 500}


def payloads(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            sym := SYMBOLS[i % PARTITIONS],
            {"symbol": sym, "ts": 1_793_577_600_000 + i, "bid": 1.08501 + i * 1e-7, "ask": 1.08509, "source": "bench", "seq": i},
        )
        for i in range(n)
    ]


async def windowed(n: int, window: int, send: Callable[[int], Awaitable[Any]]) -> float:
    """Seconds to run ``send(i)`` for every i, ``window`` at a time."""
    started = time.perf_counter()
    for lo in range(0, n, window):
        await asyncio.gather(*(send(i) for i in range(lo, min(n, lo + window))))
    return time.perf_counter() - started


async def produce_kafkalog(log: KafkaLog, topic: str, data: list[tuple[str, dict[str, Any]]], window: int) -> float:
    return await windowed(len(data), window, lambda i: log.produce(topic, data[i][1], key=data[i][0], headers=HEADERS))


async def produce_raw(producer: AIOKafkaProducer, topic: str, data: list[tuple[str, dict[str, Any]]], window: int) -> float:
    return await windowed(
        len(data),
        window,
        lambda i: producer.send_and_wait(topic, orjson.dumps(data[i][1]), key=data[i][0].encode(), headers=RAW_HEADERS),
    )


async def consume_kafkalog(log: KafkaLog, topic: str, n: int) -> float:
    member = log.consumer(f"bench-{uuid.uuid4().hex[:8]}", [topic])
    await member.start()
    try:
        got = 0
        started = 0.0
        while got < n:
            batch = await member.getmany(timeout_ms=1_000)
            if batch and not got:
                started = time.perf_counter()
            got += len(batch)
        return time.perf_counter() - started
    finally:
        await member.stop()


async def consume_raw(bootstrap: str, topic: str, n: int, keep: bool = True) -> float:
    """``keep``: decode each batch into a list of (key, value, headers), as ``getmany`` hands a
    batch to its caller; otherwise decode and drop (no list, nothing kept alive)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        **GROUP_TIMINGS,
    )
    await consumer.start()
    loads = orjson.loads
    try:
        got = 0
        started = 0.0
        while got < n:
            batches = await consumer.getmany(timeout_ms=1_000)
            if batches and not got:
                started = time.perf_counter()
            for messages in batches.values():
                if keep:
                    batch = [
                        (
                            None if m.key is None else m.key.decode(),
                            loads(m.value),
                            {k: v.decode() for k, v in m.headers} if m.headers else {},
                        )
                        for m in messages
                    ]
                    got += len(batch)
                else:
                    for m in messages:
                        loads(m.value)
                        None if m.key is None else m.key.decode()
                        {k: v.decode() for k, v in m.headers} if m.headers else {}
                        got += 1
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def report(what: str, n: int, ours: float, raw: float) -> None:
    ratio = raw / ours
    print(f"{what:<8} KafkaLog {n / ours:>10,.0f} rec/s   raw aiokafka {n / raw:>10,.0f} rec/s   ratio {ratio:.2f}"
          f"   {'ok' if ratio >= 0.8 else 'BELOW 0.8'}")  # fmt: skip


async def run(bootstrap: str, n: int, window: int, repeats: int) -> None:
    log = KafkaLog(KafkaConfig(bootstrap=[bootstrap]), client_id="bench", **GROUP_TIMINGS)
    await log.connect()
    raw = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id="bench-raw", acks="all", enable_idempotence=bool(log.idempotent)
    )
    await raw.start()
    data = payloads(n)
    print(f"tansu at {bootstrap}; {n:,} records x {repeats}, window {window}, {PARTITIONS} partitions, "
          f"idempotent producer: {log.idempotent}")  # fmt: skip
    try:
        topics = [f"bench.{uuid.uuid4().hex[:8]}.{r}" for r in range(2 * repeats)]
        await log.ensure_topics([TopicSpec(t, partitions=PARTITIONS) for t in topics])
        ours, theirs = [], []
        for r in range(repeats):
            order = [(ours, produce_kafkalog, log), (theirs, produce_raw, raw)]
            for times, fn, client in order if r % 2 == 0 else order[::-1]:
                times.append(await fn(client, topics[2 * r + (times is theirs)], data, window))  # type: ignore[operator]
        report("produce", n, min(ours), min(theirs))

        ours, theirs, dropped = [], [], []
        for r in range(repeats):
            topic = topics[2 * r]
            runs = [
                (ours, lambda t=topic: consume_kafkalog(log, t, n)),
                (theirs, lambda t=topic: consume_raw(bootstrap, t, n)),
                (dropped, lambda t=topic: consume_raw(bootstrap, t, n, keep=False)),
            ]
            for times, fn in runs if r % 2 == 0 else runs[::-1]:
                times.append(await fn())
        report("consume", n, min(ours), min(theirs))
        print(f"         (raw aiokafka decoding and dropping each record, keeping no batch: "
              f"{n / min(dropped):,.0f} rec/s, ratio {min(dropped) / min(ours):.2f})")  # fmt: skip
    finally:
        await raw.stop()
        await log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50_000, help="records per measurement")
    parser.add_argument("--window", type=int, default=1_000, help="sends in flight at once")
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker instead of starting tansu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.bootstrap:
        asyncio.run(run(args.bootstrap, args.n, args.window, args.repeats))
        return
    with tempfile.TemporaryDirectory(prefix="fxflow-bench-kafka-") as tmp, KafkaServer(tmp) as server:
        asyncio.run(run(server.url, args.n, args.window, args.repeats))


if __name__ == "__main__":
    main()
