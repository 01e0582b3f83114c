"""Log conformance: Kafka semantics every LogTransport must show.

Group membership settles asynchronously on a real broker, so tests poll ``getmany``
until the expected records (or assignments) are in, with a timeout, and produce the
records whose ownership matters only after the group has settled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence

import pytest

from framework.transport.base import LogConsumer, LogTransport, Record, TopicSpec
from framework.transport.inprocess import partition_for_key

JoinGroup = Callable[..., Awaitable[LogConsumer]]
"""The ``join`` fixture: ``await join(group, topics, **kw)`` returns a started member."""

TIMEOUT = 30.0  # a deadline for a hang: group joins and rebalances take seconds, more on a loaded machine


async def drain(consumer: LogConsumer, n: int, timeout: float = TIMEOUT) -> list[Record]:
    """Fetch until at least ``n`` records arrived, then also what is already waiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[Record] = []
    while len(got) < n:
        if loop.time() > deadline:
            raise AssertionError(f"timed out with {len(got)} of {n} records: {got}")
        got += await consumer.getmany(timeout_ms=100)
    got += await consumer.getmany(timeout_ms=0)
    return got


async def drain_all(consumers: Sequence[LogConsumer], n: int, timeout: float = TIMEOUT) -> list[list[Record]]:
    """Like :func:`drain` over several members of one group; returns each one's records."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[list[Record]] = [[] for _ in consumers]
    while sum(map(len, got)) < n:
        if loop.time() > deadline:
            raise AssertionError(f"timed out with {sum(map(len, got))} of {n} records")
        for mine, consumer in zip(got, consumers):
            mine += await consumer.getmany(timeout_ms=20)
    for mine, consumer in zip(got, consumers):
        mine += await consumer.getmany(timeout_ms=0)
    return got


async def settle(consumers: Sequence[LogConsumer], partitions: int, timeout: float = TIMEOUT) -> None:
    """Poll until the members own all ``partitions`` between them, each exactly once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        owned = [tp for c in consumers for tp in c.assignment()]
        if len(owned) == partitions and len(set(owned)) == partitions and all(c.assignment() for c in consumers):
            return
        if loop.time() > deadline:
            raise AssertionError(f"group did not settle: {[sorted(c.assignment()) for c in consumers]}")
        for consumer in consumers:
            assert await consumer.getmany(timeout_ms=20) == []


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def topic_with(log: LogTransport, name: str, partitions: int = 1, records: int = 0) -> str:
    await log.ensure_topics([TopicSpec(name, partitions=partitions)])
    for i in range(records):
        await log.produce(name, {"i": i})
    return name


def offsets(records: Sequence[Record]) -> list[int]:
    return [r.offset for r in records]


async def test_produce_consume_round_trip(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.orders")
    ts = now_ms() - 5_000
    first = await log.produce(topic, {"n": 0, "px": 1.25, "tags": ["a"]}, key="EURUSD", headers={"trace-id": "abc"}, timestamp_ms=ts)
    second = await log.produce(topic, {"n": 1})
    assert (first.topic, first.partition, first.offset, first.timestamp) == (topic, 0, 0, ts)
    assert (second.partition, second.offset) == (0, 1)

    records = await drain(await join(f"{uid}-g", [topic]), 2)
    assert [(r.topic, r.partition, r.offset, r.key, r.value) for r in records] == [
        (topic, 0, 0, "EURUSD", {"n": 0, "px": 1.25, "tags": ["a"]}),
        (topic, 0, 1, None, {"n": 1}),
    ]
    assert dict(records[0].headers) == {"trace-id": "abc"}
    assert not records[1].headers
    assert records[0].timestamp == ts
    assert abs(records[1].timestamp - now_ms()) < 60_000


async def test_ensure_topics_is_idempotent(log: LogTransport, uid: str) -> None:
    spec = TopicSpec(f"{uid}.t", partitions=3)
    await log.ensure_topics([spec])
    await log.ensure_topics([spec])
    assert (await log.produce(spec.name, {}, key="k")).partition == partition_for_key("k", 3)


async def test_same_key_same_partition_in_order(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.ticks", partitions=4)
    keys = [f"SYM{k}" for k in range(12)]
    placed: dict[str, set[int]] = defaultdict(set)
    for seq in range(5):
        for key in keys:
            placed[key].add((await log.produce(topic, {"key": key, "seq": seq}, key=key)).partition)
    assert all(len(parts) == 1 for parts in placed.values()), placed
    assert {k: p.pop() for k, p in placed.items()} == {k: partition_for_key(k, 4) for k in keys}
    assert len({partition_for_key(k, 4) for k in keys}) > 1

    records = await drain(await join(f"{uid}-g", [topic]), 60)
    assert len(records) == 60
    by_key: dict[str, list[int]] = defaultdict(list)
    for r in records:
        assert r.partition == partition_for_key(r.key or "", 4)
        by_key[r.value["key"]].append(r.value["seq"])
    assert by_key == {k: [0, 1, 2, 3, 4] for k in keys}


async def test_group_members_split_partitions(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.fills", partitions=4)
    group = f"{uid}-g"
    members = [await join(group, [topic]), await join(group, [topic])]
    await settle(members, partitions=4)
    assert [len(m.assignment()) for m in members] == [2, 2]

    for i in range(40):
        await log.produce(topic, {"i": i}, key=f"k{i % 10}")
    got = await drain_all(members, 40)
    seen = Counter((r.partition, r.offset) for mine in got for r in mine)
    assert len(seen) == 40 and set(seen.values()) == {1}
    assert sorted(r.value["i"] for mine in got for r in mine) == list(range(40))
    for member, mine in zip(members, got):
        assert mine, "each member should get records"
        assert {(r.topic, r.partition) for r in mine} <= member.assignment()


async def test_a_member_that_leaves_hands_its_uncommitted_records_to_the_rest(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.jobs", partitions=2)
    group = f"{uid}-g"
    stays, leaves = await join(group, [topic]), await join(group, [topic])
    await settle([stays, leaves], partitions=2)
    for i in range(20):
        await log.produce(topic, {"i": i}, key=f"k{i}")
    kept, dropped = await drain_all([stays, leaves], 20)
    assert kept and dropped
    await stays.commit()
    await leaves.stop()  # handled its records but never committed them

    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    redelivered: list[Record] = []
    while len(stays.assignment()) < 2 or len(redelivered) < len(dropped):
        if loop.time() > deadline:
            raise AssertionError(f"after the leave: {sorted(stays.assignment())}, {len(redelivered)} of {len(dropped)} records")
        redelivered += await stays.getmany(timeout_ms=50)
    redelivered += await stays.getmany(timeout_ms=100)
    assert sorted(r.value["i"] for r in redelivered) == sorted(r.value["i"] for r in dropped)  # all of it, once
    assert {r.partition for r in redelivered} == {r.partition for r in dropped}


async def test_commit_then_new_member_resumes(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", records=10)
    group, tp = f"{uid}-g", (topic, 0)
    first = await join(group, [topic])
    assert offsets(await drain(first, 10)) == list(range(10))
    await first.commit({tp: 6})
    assert await first.committed(tp) == 6
    await first.stop()

    second = await join(group, [topic])
    assert offsets(await drain(second, 4)) == [6, 7, 8, 9]
    await second.commit()
    assert await second.committed(tp) == 10
    await second.stop()

    await log.produce(topic, {"i": 10})
    await log.produce(topic, {"i": 11})
    third = await join(group, [topic])
    assert offsets(await drain(third, 2)) == [10, 11]


async def test_uncommitted_records_are_redelivered(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", records=5)
    group, tp = f"{uid}-g", (topic, 0)
    first = await join(group, [topic])
    assert offsets(await drain(first, 5)) == [0, 1, 2, 3, 4]
    await first.commit({tp: 2})
    await first.stop()

    second = await join(group, [topic])
    assert offsets(await drain(second, 3)) == [2, 3, 4]


async def test_never_committed_group_starts_from_earliest_again(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", records=3)
    first = await join(f"{uid}-g", [topic])
    await drain(first, 3)
    assert await first.committed((topic, 0)) is None
    await first.stop()
    assert offsets(await drain(await join(f"{uid}-g", [topic]), 3)) == [0, 1, 2]


async def test_latest_skips_existing_records(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", records=3)
    member = await join(f"{uid}-g", [topic], auto_offset_reset="latest")
    await settle([member], partitions=1)
    await log.produce(topic, {"i": 3})
    await log.produce(topic, {"i": 4})
    assert [r.value["i"] for r in await drain(member, 2)] == [3, 4]


async def test_replay_with_seek(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", records=6)
    member = await join(f"{uid}-g", [topic])
    assert offsets(await drain(member, 6)) == list(range(6))
    await member.seek((topic, 0), 2)
    assert offsets(await drain(member, 4)) == [2, 3, 4, 5]
    await member.seek((topic, 0), 0)
    assert [r.value["i"] for r in await drain(member, 6)] == list(range(6))


async def test_replay_with_seek_to_timestamp(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", partitions=2)
    base = now_ms() - 60_000
    for i in range(8):
        await log.produce(topic, {"i": i}, key=f"k{i}", timestamp_ms=base + i * 1000)
    member = await join(f"{uid}-g", [topic])
    assert len(await drain(member, 8)) == 8

    await member.seek_to_timestamp(base + 4500)
    assert sorted(r.value["i"] for r in await drain(member, 3)) == [5, 6, 7]
    await member.seek_to_timestamp(base + 2000)
    assert sorted(r.value["i"] for r in await drain(member, 6)) == [2, 3, 4, 5, 6, 7]


async def test_read_a_span_by_time_without_a_group(log: LogTransport, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", partitions=3)
    base = now_ms() - 60_000
    for i in range(30):  # several records per producer batch, spread over the partitions
        await log.send(topic, {"i": i}, key=f"k{i % 7}", headers={"h": str(i)}, timestamp_ms=base + i * 1000)
    await log.flush()

    async def span(start: int, end: int | None, **kw: int) -> list[Record]:
        out: list[Record] = []
        async for records in log.read([topic], start, end, **kw):
            assert records
            out.extend(records)
        return out

    got = await asyncio.wait_for(span(base + 10_000, base + 20_000), TIMEOUT)
    assert sorted(r.value["i"] for r in got) == list(range(10, 20))
    assert all(r.headers["h"] == str(r.value["i"]) and r.topic == topic for r in got)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for r in got:
        by_partition[r.partition].append(r.offset)
    assert all(offs == sorted(offs) for offs in by_partition.values())  # each partition in order
    tail = await asyncio.wait_for(span(base + 25_500, None), TIMEOUT)  # to the end of the log
    assert sorted(r.value["i"] for r in tail) == [26, 27, 28, 29]
    assert await asyncio.wait_for(span(base + 31_000, None), TIMEOUT) == []
    small = await asyncio.wait_for(span(base, base + 30_000, batch=4), TIMEOUT)
    assert sorted(r.value["i"] for r in small) == list(range(30))


async def test_two_groups_each_see_every_record(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q", partitions=3)
    for i in range(12):
        await log.produce(topic, {"i": i}, key=str(i))
    for group in ("risk", "audit"):
        records = await drain(await join(f"{uid}-{group}", [topic]), 12)
        assert sorted(r.value["i"] for r in records) == list(range(12))


async def test_getmany_waits_for_new_records(log: LogTransport, join: JoinGroup, uid: str) -> None:
    topic = await topic_with(log, f"{uid}.q")
    member = await join(f"{uid}-g", [topic])
    await settle([member], partitions=1)
    started = time.monotonic()
    assert await member.getmany(timeout_ms=60) == []
    assert time.monotonic() - started >= 0.05

    waiting = asyncio.create_task(member.getmany(timeout_ms=120_000))  # far beyond the wait below: no race with it
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = time.monotonic()
    await log.produce(topic, {"i": 0})
    records = await asyncio.wait_for(waiting, 2 * TIMEOUT)
    assert time.monotonic() - started < 2 * TIMEOUT  # woken by the record, not by its timeout
    assert [r.value for r in records] == [{"i": 0}]


@pytest.mark.parametrize("max_records", [1, 3])
async def test_getmany_respects_max_records(log: LogTransport, join: JoinGroup, uid: str, max_records: int) -> None:
    topic = await topic_with(log, f"{uid}.q", records=5)
    member = await join(f"{uid}-g", [topic])
    got: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while len(got) < 5 and loop.time() < deadline:
        batch = await member.getmany(timeout_ms=100, max_records=max_records)
        assert len(batch) <= max_records
        got += batch
    assert offsets(got) == [0, 1, 2, 3, 4]
