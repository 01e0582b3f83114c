"""A record the log does not acknowledge is dead-lettered with its reason, never lost silently."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from framework.clock import SimulatedClock
from framework.context import NodeContext, OutputRoute
from framework.contracts import BoundaryValidator
from framework.deadletter import DeadLetters
from framework.metrics import ServiceMetrics
from framework.topology.templates import compile_renderer
from framework.topology.model import Instrument
from framework.transport.base import CHUNK_ATTR, TopicSpec, TransportError
from framework.transport.inprocess import InProcessLog, InProcessPubSub


class RefusingLog(InProcessLog):
    """A log whose broker accepts the hand-over and then fails the delivery (as a lost leader does)."""

    async def send(self, topic, value, key=None, headers=None, timestamp_ms=None):  # type: ignore[no-untyped-def]
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_exception, TransportError("not enough replicas"))
        return future


async def _context(
    log: InProcessLog, tmp_path: Path, bus: InProcessPubSub | None = None, archive_wait: float = 2.0
) -> tuple[NodeContext, DeadLetters]:
    bus = bus or InProcessPubSub()
    await bus.connect()
    await log.connect()
    await log.ensure_topics([TopicSpec("tick_archive", 2)])
    dead = DeadLetters(tmp_path / "deadletter")
    ctx = NodeContext(
        "collector",
        clock=SimulatedClock(0),
        pubsub=bus,
        log=log,
        validator=BoundaryValidator("off"),
        dead_letters=dead,
        metrics=ServiceMetrics("collector"),
        routes={
            "ticks": OutputRoute(
                port="ticks", contracts=(), subjects=[("ticks.{symbol}", compile_renderer("ticks.{symbol}"))],
                topics=[("tick_archive", "symbol")],
            )
        },
        tables={},
        pairs=["EURUSD"],
        timeframes=["1m"],
        instruments={"EURUSD": Instrument(pip=0.0001, digits=5)},
        data_dir=tmp_path,
        archive_wait=archive_wait,
    )
    return ctx, dead


async def test_unacknowledged_archive_record_is_dead_lettered(tmp_path: Path) -> None:
    ctx, dead = await _context(RefusingLog(), tmp_path)
    tick = {"symbol": "EURUSD", "ts": 1, "bid": 1.1, "ask": 1.2, "source": "t"}
    assert await ctx.publish("ticks", tick)
    for _ in range(10):
        await asyncio.sleep(0)
    lines = (tmp_path / "deadletter" / "collector.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["payload"] == tick and "not enough replicas" in record["reason"]
    assert record["origin"] == "kafka:tick_archive" and ctx.metrics.dead_lettered == 1


async def test_acknowledged_archive_record_is_not_dead_lettered(tmp_path: Path) -> None:
    log = InProcessLog()
    ctx, dead = await _context(log, tmp_path)
    assert await ctx.publish("ticks", {"symbol": "EURUSD", "ts": 1, "bid": 1.1, "ask": 1.2, "source": "t"})
    await asyncio.sleep(0)
    assert dead.count == 0 and ctx.metrics.dead_lettered == 0


class _Writer:
    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    async def add_many(self, rows):  # type: ignore[no-untyped-def]
        self.calls.append(list(rows))


async def test_publish_many_validates_routes_stamps_and_hands_the_batch_to_the_writers(tmp_path: Path) -> None:
    from pathlib import Path as _P

    from framework.contracts import ContractRegistry
    from framework.topology.templates import compile_renderer

    contract = ContractRegistry.load(_P(__file__).resolve().parents[1] / "contracts").resolve("tick.v1")
    bus, log = InProcessPubSub(), InProcessLog()
    await bus.connect()
    await log.connect()
    await log.ensure_topics([TopicSpec("tick_archive", 1)])
    got: list[str] = []

    async def record(subject, payload, headers):  # type: ignore[no-untyped-def]
        got.append(subject)

    await bus.subscribe("ticks.>", record)
    writer = _Writer()
    route = OutputRoute(
        port="ticks", contracts=(contract,), subjects=[("ticks.{symbol}", compile_renderer("ticks.{symbol}"))],
        topics=[("tick_archive", "symbol")], writers=[writer], time_field="ts",  # type: ignore[list-item]
    )  # fmt: skip
    ctx = NodeContext(
        "downloader", clock=SimulatedClock(7_000), pubsub=bus, log=log, validator=BoundaryValidator("strict"),
        dead_letters=DeadLetters(tmp_path / "deadletter"), metrics=ServiceMetrics("downloader"), routes={"ticks": route},
        tables={}, pairs=["EURUSD"], timeframes=["1m"], instruments={"EURUSD": Instrument(pip=0.0001, digits=5)},
        data_dir=tmp_path,
    )  # fmt: skip
    ticks = [
        {"symbol": "EURUSD", "ts": 1_000, "bid": 1.1, "ask": 1.2, "source": "d"},
        {"symbol": "EURUSD", "ts": 2_000, "bid": "x", "ask": 1.2, "source": "d"},
        {"symbol": "GBPUSD", "ts": 3_000, "bid": 1.3, "ask": 1.4, "source": "d"},
    ]
    assert await ctx.publish_many("ticks", ticks) == 2
    assert got == ["ticks.EURUSD", "ticks.GBPUSD"]
    assert writer.calls == [[ticks[0], ticks[2]]]
    assert ctx.metrics.published == 2 and ctx.metrics.dead_lettered == 1
    consumer = log.consumer("check", ["tick_archive"])
    await consumer.start()
    records = await consumer.getmany(timeout_ms=100)
    # stamped with the time they became known (the clock), never their own event time; the producer in a header
    assert [(r.value["ts"], r.timestamp, r.headers["fxflow-service"]) for r in records] == [(1_000, 7_000, "downloader"), (3_000, 7_000, "downloader")]


class SlowLog(InProcessLog):
    """A log whose acknowledgements arrive when the test releases them (a broker round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.acks: list[tuple[asyncio.Future, object]] = []

    async def send(self, topic, value, key=None, headers=None, timestamp_ms=None):  # type: ignore[no-untyped-def]
        meta = await self.produce(topic, value, key, headers, timestamp_ms)
        future = asyncio.get_running_loop().create_future()
        self.acks.append((future, meta))
        return future

    def ack(self, n: int) -> None:
        for future, meta in self.acks[:n]:
            future.set_result(meta)
        del self.acks[:n]


async def _recording() -> tuple[InProcessPubSub, list[int]]:
    bus = InProcessPubSub()
    seen: list[int] = []

    async def record(subject, payload, headers):  # type: ignore[no-untyped-def]
        seen.append(payload["ts"])

    await bus.connect()
    await bus.subscribe("ticks.>", record)
    return bus, seen


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_message_reaches_its_subjects_only_once_archived_and_in_order(tmp_path: Path) -> None:
    log = SlowLog()
    bus, seen = await _recording()
    ctx, _ = await _context(log, tmp_path, bus)
    for ts in (1, 2, 3):
        assert await ctx.publish("ticks", {"symbol": "EURUSD", "ts": ts, "bid": 1.1, "ask": 1.2, "source": "t"})
    await _settle()
    assert seen == []  # nothing on the real-time path before the archive acknowledged it
    log.ack(1)
    await _settle()
    assert seen == [1]
    log.ack(2)
    await ctx.drain()
    assert seen == [1, 2, 3]


async def test_an_acknowledgement_that_takes_too_long_does_not_hold_real_time_back(tmp_path: Path) -> None:
    log = SlowLog()
    bus, seen = await _recording()
    ctx, dead = await _context(log, tmp_path, bus, archive_wait=0.05)
    assert await ctx.publish("ticks", {"symbol": "EURUSD", "ts": 1, "bid": 1.1, "ask": 1.2, "source": "t"})
    await asyncio.wait_for(ctx.drain(), timeout=5)
    assert seen == [1] and dead.count == 0
    future, _ = log.acks.pop()
    future.set_exception(TransportError("leader lost"))  # the late answer is a failure: dead-lettered, not lost
    await _settle()
    await ctx.drain()
    assert dead.count == 1


async def test_a_record_is_stamped_when_it_became_known_not_with_a_future_event_time(tmp_path: Path) -> None:
    """A calendar event five days ahead is archived with the time it was learnt (brokers refuse future stamps)."""
    log = InProcessLog()
    ctx, _ = await _context(log, tmp_path)
    ctx.clock = SimulatedClock(1_000_000)
    later = 1_000_000 + 5 * 86_400_000
    assert await ctx.publish("ticks", {"symbol": "EURUSD", "ts": later, "bid": 1.1, "ask": 1.2, "source": "t"})
    records = [r async for batch in log.read(["tick_archive"], 0) for r in batch]
    assert [(r.value["ts"], r.timestamp) for r in records] == [(later, 1_000_000)]
    assert [r.value for batch in [b async for b in log.read(["tick_archive"], 1_000_000, 1_000_001)] for r in batch]


async def test_a_chunk_reaches_its_subjects_once_archived_whole_or_row_by_row_without_holding_its_publisher(tmp_path: Path) -> None:
    """A log that acknowledges at once lets a chunk go on whole; one that does not (Kafka) gets the rows through the
    port's outbox: in order, each once acknowledged, and the publisher does not wait."""
    from framework.chunk import Chunk

    rows = [{"symbol": "EURUSD", "ts": ts, "bid": 1.1, "ask": 1.2, "source": "t"} for ts in (1, 2, 3)]
    log = InProcessLog()
    bus, seen = await _recording()
    whole: list[int] = []

    async def chunks(subject, chunk, headers):  # type: ignore[no-untyped-def]  # a subscriber that takes chunks (the runtime's)
        whole.append(len(chunk))

    setattr(chunks, CHUNK_ATTR, True)
    await bus.subscribe("ticks.>", chunks)
    ctx, _ = await _context(log, tmp_path / "a", bus)
    assert await ctx.publish_batch("ticks", Chunk.from_rows(rows)) == 3
    assert seen == [1, 2, 3] and whole == [3]  # archived first, then on whole
    archived = [r async for batch in log.read(["tick_archive"], 0) for r in batch]
    assert [r.value["ts"] for r in archived] == [1, 2, 3]
    assert [r.headers["fxflow-id"] for r in archived] == ["collector-0-1", "collector-0-2", "collector-0-3"]  # the rows' ids

    slow = SlowLog()
    bus, seen = await _recording()
    ctx, _ = await _context(slow, tmp_path / "b", bus)
    assert await asyncio.wait_for(ctx.publish_batch("ticks", Chunk.from_rows(rows)), timeout=1) == 3
    await _settle()
    assert seen == []  # nothing on the real-time path before the archive acknowledged it
    slow.ack(2)
    await _settle()
    assert seen == [1, 2]
    slow.ack(1)
    await ctx.drain()
    assert seen == [1, 2, 3]
