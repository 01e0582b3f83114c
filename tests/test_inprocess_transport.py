"""Behaviour only the in-process transports have (the shared contract is in tests/conformance)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from framework.subjects import SubjectError
from framework.transport.base import Headers, Message, TopicSpec
from framework.transport.inprocess import (
    InProcessLog,
    InProcessPubSub,
    LogCorruptError,
    PartitionNotAssignedError,
    TransportClosedError,
    TransportError,
    UnknownTopicError,
    murmur2,
    partition_for_key,
)

# --- Kafka partitioner ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_for_key_is_to_positive_murmur2_mod_n() -> None:
    assert partition_for_key("foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7
    assert partition_for_key("21", 1) == 0
    assert {partition_for_key(f"k{i}", 8) for i in range(200)} == set(range(8))


# --- pub/sub --------------------------------------------------------------------------------


@pytest.fixture
async def bus() -> AsyncIterator[InProcessPubSub]:
    transport = InProcessPubSub()
    await transport.connect()
    yield transport
    await transport.close()


def collector(into: list[Message]):  # type: ignore[no-untyped-def]
    async def handler(subject: str, payload: Message, headers: Headers | None) -> None:
        into.append(payload)

    return handler


async def test_delivery_is_inline(bus: InProcessPubSub) -> None:
    got: list[Message] = []
    await bus.subscribe("a.b", collector(got))
    await bus.publish("a.b", {"n": 1})
    assert got == [{"n": 1}]


async def test_failing_handler_is_logged_with_subject(bus: InProcessPubSub, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(subject: str, payload: Message, headers: Headers | None) -> None:
        raise RuntimeError("boom")

    got: list[Message] = []
    await bus.subscribe("md.*", broken)
    await bus.subscribe("md.*", collector(got))
    with caplog.at_level(logging.ERROR, logger="framework.transport.inprocess"):
        await bus.publish("md.EURUSD", {"n": 1})
    assert got == [{"n": 1}]
    [entry] = caplog.records
    assert "md.EURUSD" in entry.getMessage() and "md.*" in entry.getMessage()
    assert entry.exc_info is not None and "boom" in str(entry.exc_info[1])


async def test_queue_group_is_round_robin(bus: InProcessPubSub) -> None:
    inboxes: list[list[Message]] = [[], [], []]
    for inbox in inboxes:
        await bus.subscribe("jobs", collector(inbox), queue="w")
    other: list[Message] = []
    await bus.subscribe("jobs", collector(other), queue="other")
    for i in range(9):
        await bus.publish("jobs", {"i": i})
    assert [[m["i"] for m in inbox] for inbox in inboxes] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert len(other) == 9


async def test_queue_group_member_leaving(bus: InProcessPubSub) -> None:
    a: list[Message] = []
    b: list[Message] = []
    sub_a = await bus.subscribe("jobs", collector(a), queue="w")
    sub_b = await bus.subscribe("jobs", collector(b), queue="w")
    await sub_a.unsubscribe()
    await sub_a.unsubscribe()
    for i in range(3):
        await bus.publish("jobs", {"i": i})
    assert (len(a), len(b)) == (0, 3)
    await sub_b.unsubscribe()
    await bus.publish("jobs", {"i": 3})
    assert len(b) == 3


async def test_unsubscribe_takes_effect_within_a_fan_out(bus: InProcessPubSub) -> None:
    got: list[Message] = []
    victim = None

    async def first(subject: str, payload: Message, headers: Headers | None) -> None:
        assert victim is not None
        await victim.unsubscribe()

    await bus.subscribe("x", first)
    victim = await bus.subscribe("x", collector(got))
    await bus.publish("x", {})
    assert got == []


async def test_payload_and_headers_are_passed_through(bus: InProcessPubSub) -> None:
    seen: list[tuple[Message, Headers | None]] = []

    async def handler(subject: str, payload: Message, headers: Headers | None) -> None:
        seen.append((payload, headers))

    await bus.subscribe("x", handler)
    payload, headers = {"a": 1}, {"h": "v"}
    await bus.publish("x", payload, headers)
    assert seen[0][0] is payload and seen[0][1] is headers


async def test_invalid_subject_raises_subject_error(bus: InProcessPubSub) -> None:
    with pytest.raises(SubjectError):
        await bus.publish("md.*", {})
    with pytest.raises(SubjectError):
        await bus.publish(42, {})  # type: ignore[arg-type]


async def test_publish_and_subscribe_on_closed_bus_raise() -> None:
    bus = InProcessPubSub()
    with pytest.raises(TransportClosedError):
        await bus.publish("a", {})
    await bus.connect()
    got: list[Message] = []
    await bus.subscribe("a", collector(got))
    await bus.publish("a", {})
    await bus.close()
    with pytest.raises(TransportClosedError):
        await bus.publish("a", {})
    with pytest.raises(TransportClosedError):
        await bus.subscribe("a", collector(got))
    await bus.close()
    assert len(got) == 1


async def test_close_waits_for_in_flight_deliveries() -> None:
    bus = InProcessPubSub()
    await bus.connect()
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(subject: str, payload: Message, headers: Headers | None) -> None:
        await release.wait()
        finished.append(subject)

    await bus.subscribe("slow", slow)
    publishing = asyncio.create_task(bus.publish("slow", {}))
    await asyncio.sleep(0)
    closing = asyncio.create_task(bus.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    with pytest.raises(TransportClosedError):
        await bus.publish("slow", {})
    release.set()
    await asyncio.wait_for(closing, 30)
    await publishing
    assert finished == ["slow"]


# --- log ------------------------------------------------------------------------------------


@pytest.fixture
async def mem_log() -> AsyncIterator[InProcessLog]:
    log = InProcessLog()
    await log.connect()
    yield log
    await log.close()


async def test_produce_to_undeclared_topic_raises(mem_log: InProcessLog) -> None:
    await mem_log.ensure_topics([TopicSpec("declared")])
    with pytest.raises(UnknownTopicError, match=r"unknown topic 'typo'.*ensure_topics.*declared"):
        await mem_log.produce("typo", {})
    with pytest.raises(UnknownTopicError):
        await mem_log.consumer("g", ["typo"]).start()


async def test_topic_declaration_errors(mem_log: InProcessLog) -> None:
    await mem_log.ensure_topics([TopicSpec("t", partitions=2)])
    with pytest.raises(TransportError, match="2 partitions"):
        await mem_log.ensure_topics([TopicSpec("t", partitions=3)])
    for bad in ("..", "has space", "a/b", ""):
        with pytest.raises(ValueError, match="invalid topic name"):
            await mem_log.ensure_topics([TopicSpec(bad)])
    with pytest.raises(ValueError, match="partitions"):
        await mem_log.ensure_topics([TopicSpec("zero", partitions=0)])


async def test_unkeyed_records_round_robin(mem_log: InProcessLog) -> None:
    await mem_log.ensure_topics([TopicSpec("t", partitions=3)])
    parts = [(await mem_log.produce("t", {})).partition for _ in range(6)]
    assert parts == [0, 1, 2, 0, 1, 2]


async def test_range_assignment_and_rebalance(mem_log: InProcessLog) -> None:
    await mem_log.ensure_topics([TopicSpec("t", partitions=5)])
    a, b = mem_log.consumer("g", ["t"]), mem_log.consumer("g", ["t"])
    await a.start()
    assert a.assignment() == {("t", p) for p in range(5)}
    await b.start()
    assert (a.assignment(), b.assignment()) == ({("t", 0), ("t", 1), ("t", 2)}, {("t", 3), ("t", 4)})
    await a.stop()
    assert b.assignment() == {("t", p) for p in range(5)}
    with pytest.raises(TransportClosedError):
        await a.getmany()


async def test_commit_and_seek_need_an_assigned_partition(mem_log: InProcessLog) -> None:
    await mem_log.ensure_topics([TopicSpec("t", partitions=2)])
    a, b = mem_log.consumer("g", ["t"]), mem_log.consumer("g", ["t"])
    await a.start()
    await b.start()
    with pytest.raises(PartitionNotAssignedError):
        await a.commit({("t", 1): 0})
    with pytest.raises(PartitionNotAssignedError):
        await a.seek(("t", 1), 0)


async def test_stop_wakes_a_waiting_getmany(mem_log: InProcessLog) -> None:
    await mem_log.ensure_topics([TopicSpec("t")])
    member = mem_log.consumer("g", ["t"])
    await member.start()
    waiting = asyncio.create_task(member.getmany(timeout_ms=120_000))
    await asyncio.sleep(0.01)
    await member.stop()
    assert await asyncio.wait_for(waiting, 30) == []  # woken by the stop, long before its own timeout


async def test_retention_drops_old_records_lazily() -> None:
    clock = [1_000_000]
    log = InProcessLog(now_ms=lambda: clock[0])
    await log.connect()
    await log.ensure_topics([TopicSpec("t", retention_ms=10_000)])
    for i in range(3):
        await log.produce("t", {"i": i})
    behind = log.consumer("behind", ["t"])
    await behind.start()
    clock[0] += 5_000
    await log.produce("t", {"i": 3})
    clock[0] += 6_000
    assert (await log.produce("t", {"i": 4})).offset == 4

    fresh = log.consumer("fresh", ["t"])
    await fresh.start()
    assert [(r.offset, r.value["i"]) for r in await fresh.getmany()] == [(3, 3), (4, 4)]
    assert [r.offset for r in await behind.getmany()] == [3, 4]
    clock[0] += 60_000
    assert await fresh.getmany() == []
    assert (await log.produce("t", {"i": 5})).offset == 5
    await log.close()


async def test_log_close_stops_members_and_rejects_use(mem_log: InProcessLog) -> None:
    await mem_log.ensure_topics([TopicSpec("t")])
    member = mem_log.consumer("g", ["t"])
    await member.start()
    await mem_log.close()
    assert member.assignment() == set()
    with pytest.raises(TransportClosedError):
        await mem_log.produce("t", {})


# --- persistence ----------------------------------------------------------------------------


async def open_log(directory: Path, **kwargs: int) -> InProcessLog:
    log = InProcessLog(directory, **kwargs)
    await log.connect()
    return log


async def test_reopen_restores_topics_records_and_offsets(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await log.ensure_topics([TopicSpec("orders", partitions=2, retention_ms=86_400_000)])
    for i in range(10):
        await log.produce("orders", {"i": i}, key=f"sym{i % 4}", headers={"n": str(i)})
    member = log.consumer("g", ["orders"])
    await member.start()
    before = await member.getmany()
    assert {r.partition for r in before} == {0, 1}
    await member.commit({("orders", 0): 2, ("orders", 1): 1})
    await log.close()

    log = await open_log(tmp_path)
    member = log.consumer("g", ["orders"])
    await member.start()
    assert await member.committed(("orders", 0)) == 2
    assert await member.committed(("orders", 1)) == 1
    resumed = await member.getmany()
    expected = [r for r in before if r.offset >= {0: 2, 1: 1}[r.partition]]
    by_position = lambda r: (r.partition, r.offset)  # noqa: E731
    assert sorted(resumed, key=by_position) == sorted(expected, key=by_position)
    meta = await log.produce("orders", {"i": 10}, key="sym0")
    assert meta.offset == sum(1 for r in before if r.partition == meta.partition)
    await log.close()

    log = await open_log(tmp_path)
    other = log.consumer("other", ["orders"])
    await other.start()
    assert sorted(r.value["i"] for r in await other.getmany()) == list(range(11))
    await log.close()


async def test_records_are_written_every_flush_every_records(tmp_path: Path) -> None:
    log = await open_log(tmp_path, flush_every=4)
    await log.ensure_topics([TopicSpec("t")])
    path = tmp_path / "topics" / "t" / "0.jsonl"
    for i in range(3):
        await log.produce("t", {"i": i})
    assert not path.exists() or path.read_bytes() == b""
    await log.produce("t", {"i": 3})
    assert len(path.read_bytes().splitlines()) == 4
    await log.produce("t", {"i": 4})
    await log.flush()
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(r["offset"], r["value"]) for r in rows] == [(i, {"i": i}) for i in range(5)]
    assert set(rows[0]) == {"offset", "timestamp", "key", "headers", "value"}
    await log.close()


async def test_committed_offsets_file_is_replaced_atomically(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await log.ensure_topics([TopicSpec("t")])
    await log.produce("t", {})
    member = log.consumer("risk/desk 1", ["t"])
    await member.start()
    await member.getmany()
    await member.commit()
    files = sorted(p.name for p in (tmp_path / "groups").iterdir())
    assert files == ["risk%2Fdesk%201.json"]
    doc = orjson.loads((tmp_path / "groups" / files[0]).read_bytes())
    assert doc == {"group": "risk/desk 1", "offsets": [["t", 0, 1]]}
    await log.close()


async def test_torn_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = await open_log(tmp_path)
    await log.ensure_topics([TopicSpec("t")])
    for i in range(3):
        await log.produce("t", {"i": i})
    await log.close()
    path = tmp_path / "topics" / "t" / "0.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"offset":3,"timestamp":17000,"ke')

    with caplog.at_level(logging.WARNING, logger="framework.transport.inprocess"):
        log = await open_log(tmp_path)
    assert any("torn" in r.getMessage() for r in caplog.records)
    assert (await log.produce("t", {"i": 3})).offset == 3
    await log.close()

    log = await open_log(tmp_path)
    member = log.consumer("g", ["t"])
    await member.start()
    assert [(r.offset, r.value["i"]) for r in await member.getmany()] == [(i, i) for i in range(4)]
    await log.close()


async def test_damage_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await log.ensure_topics([TopicSpec("t")])
    for i in range(3):
        await log.produce("t", {"i": i})
    await log.close()
    path = tmp_path / "topics" / "t" / "0.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"garbage\n" + lines[2])
    with pytest.raises(LogCorruptError, match=r"0\.jsonl:2"):
        await open_log(tmp_path)


async def test_isolated_subscriber_takes_the_direct_path_and_guarded_ones_stay_guarded() -> None:
    from framework.transport.base import isolated

    bus = InProcessPubSub()
    await bus.connect()
    got: list[str] = []

    async def direct(subject: str, payload: dict, headers: object) -> None:
        got.append(payload["v"])

    async def failing(subject: str, payload: dict, headers: object) -> None:
        raise RuntimeError("boom")

    await bus.subscribe("a.direct", isolated(direct))
    awaitable = bus.publish("a.direct", {"v": "x"})
    assert asyncio.iscoroutine(awaitable) and awaitable.cr_code is direct.__code__
    await awaitable
    await bus.subscribe("a.guarded", failing)
    await bus.publish("a.guarded", {"v": "y"})
    await bus.subscribe("a.direct", failing)
    await bus.publish("a.direct", {"v": "z"})
    assert got == ["x", "z"]
    await bus.close()
