"""KafkaLog against a real Kafka-protocol broker (tansu, the session ``kafka_server``).

The conformance suite covers the shared contract (``tests/conformance -k kafka``); these
tests cover what is Kafka-specific: topic creation with configs, the partitioner, at-least-once
across a member that dies before committing, replay, undecodable records and the one-line
error for an unreachable cluster. Every topic and group name is unique to its test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from framework.errors import UserError
from framework.infra import KafkaServer
from framework.infra.servers import free_port
from framework.topology.model import KafkaAuth, KafkaConfig
from framework.transport import kafka as kafka_module
from framework.transport.base import LogConsumer, Record, TopicSpec
from framework.transport.inprocess import (
    PartitionNotAssignedError,
    TransportClosedError,
    TransportError,
    UnknownTopicError,
    partition_for_key,
)
from framework.transport.kafka import KafkaLog

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0  # a deadline for a hang: a group (re)join takes seconds on tansu, more on a loaded machine
FAST_GROUPS: dict[str, Any] = {"session_timeout_ms": 2_000, "heartbeat_interval_ms": 250, "fetch_max_wait_ms": 100}
"""tansu holds each JoinGroup for half the session timeout (at least 1 s); keep it short."""


@pytest.fixture
def uid() -> str:
    return f"k{uuid.uuid4().hex[:12]}"


@pytest.fixture
def config(kafka_server: KafkaServer) -> KafkaConfig:
    return KafkaConfig(bootstrap=[kafka_server.url])


class Undecodable:
    """An ``on_undecodable`` callback that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, bytes, str]] = []

    def __call__(self, topic: str, partition: int, offset: int, raw: bytes, reason: str) -> None:
        self.calls.append((topic, partition, offset, raw, reason))


@pytest.fixture
def undecodable() -> Undecodable:
    return Undecodable()


@pytest.fixture
async def log(config: KafkaConfig, undecodable: Undecodable) -> AsyncIterator[KafkaLog]:
    transport = KafkaLog(config, service="test", on_undecodable=undecodable, **FAST_GROUPS)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


async def drain(consumer: LogConsumer, n: int, timeout: float = TIMEOUT) -> list[Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[Record] = []
    while len(got) < n:
        if loop.time() > deadline:
            raise AssertionError(f"timed out with {len(got)} of {n} records: {got}")
        got += await consumer.getmany(timeout_ms=100)
    return got


async def joined(log: KafkaLog, group: str, topics: Sequence[str], **kwargs: str) -> LogConsumer:
    member = log.consumer(group, topics, **kwargs)
    await member.start()
    return member


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# topics


async def test_topics_are_created_as_declared(log: KafkaLog, config: KafkaConfig, uid: str) -> None:
    specs = [
        TopicSpec(f"{uid}.archive", partitions=3, retention_ms=365 * 86_400_000),
        TopicSpec(f"{uid}.state", partitions=2, retention_ms=None, cleanup_policy="compact"),
    ]
    await log.ensure_topics(specs)
    await log.ensure_topics(specs)

    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([s.name for s in specs])}
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs])
    finally:
        await admin.close()
    assert described == {f"{uid}.archive": 3, f"{uid}.state": 2}
    configs = {
        name: {entry[0]: entry[1] for entry in entries}
        for response in responses
        for _err, _msg, _type, name, entries in response.resources
    }
    assert configs[f"{uid}.archive"]["retention.ms"] == str(365 * 86_400_000)
    assert configs[f"{uid}.archive"]["cleanup.policy"] == "delete"
    assert configs[f"{uid}.state"]["retention.ms"] == "-1"
    assert configs[f"{uid}.state"]["cleanup.policy"] == "compact"


async def test_redeclaring_a_topic_with_another_partition_count_fails(log: KafkaLog, uid: str) -> None:
    await log.ensure_topics([TopicSpec(f"{uid}.t", partitions=2)])
    with pytest.raises(TransportError, match="exists with 2 partitions but is declared with 4"):
        await log.ensure_topics([TopicSpec(f"{uid}.t", partitions=4)])


async def test_undeclared_topics_are_refused_not_auto_created(log: KafkaLog, config: KafkaConfig, uid: str) -> None:
    with pytest.raises(UnknownTopicError, match=f"{uid}.nope"):
        await log.produce(f"{uid}.nope", {"x": 1})
    with pytest.raises(UnknownTopicError, match=f"{uid}.gone"):
        await log.consumer(f"{uid}-g", [f"{uid}.gone"]).start()
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap)
    await admin.start()
    try:
        assert not {f"{uid}.nope", f"{uid}.gone"} & set(await admin.list_topics())
    finally:
        await admin.close()


# producing


@pytest.mark.parametrize("partitions", [3, 7, 14])
async def test_keyed_records_land_in_partition_for_key(log: KafkaLog, uid: str, partitions: int) -> None:
    topic = f"{uid}.ticks"
    await log.ensure_topics([TopicSpec(topic, partitions=partitions)])
    keys = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "", "é€ß", *(f"SYM{i}" for i in range(40))]
    placed = {key: (await log.produce(topic, {"k": key}, key=key)).partition for key in keys}
    assert placed == {key: partition_for_key(key, partitions) for key in keys}

    member = await joined(log, f"{uid}-g", [topic])
    got = await drain(member, len(keys))
    assert {r.key: r.partition for r in got} == placed


async def test_producer_runs_acks_all_and_falls_back_from_idempotence_once(
    log: KafkaLog, caplog: pytest.LogCaptureFixture, config: KafkaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tansu fails InitProducerId: one warning of ours (not aiokafka's error), then no more probing."""
    assert log._producer is not None and log._producer._sender._acks == -1
    if log.idempotent:
        pytest.skip("this broker supports idempotent producers")
    monkeypatch.delitem(kafka_module._IDEMPOTENCE, tuple(config.bootstrap), raising=False)
    for _ in range(2):
        again = KafkaLog(config)
        with caplog.at_level(logging.INFO):
            await again.connect()
            await again.close()
        assert again.idempotent is False
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("without idempotence" in m for m in messages) == 1, messages
    assert not any("InitProducerId" in m for m in messages), messages


# at-least-once


async def test_stop_before_commit_redelivers_to_the_next_member(log: KafkaLog, uid: str) -> None:
    topic = f"{uid}.orders"
    await log.ensure_topics([TopicSpec(topic)])
    for i in range(4):
        await log.produce(topic, {"i": i})
    first = await joined(log, f"{uid}-g", [topic])
    processed = await drain(first, 4)
    await first.commit({(topic, 0): processed[1].offset + 1})
    await first.stop()
    await first.stop()

    second = await joined(log, f"{uid}-g", [topic])
    assert [r.value["i"] for r in await drain(second, 2)] == [2, 3]


async def test_cancelled_handler_leaves_its_record_to_the_group(log: KafkaLog, uid: str) -> None:
    topic = f"{uid}.orders"
    await log.ensure_topics([TopicSpec(topic)])
    await log.produce(topic, {"i": 0})
    first = await joined(log, f"{uid}-g", [topic])
    handling = asyncio.Event()

    async def consume() -> None:
        while True:
            for _record in await first.getmany(timeout_ms=100):
                handling.set()
                await asyncio.sleep(3600)
                await first.commit()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(handling.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.stop()

    second = await joined(log, f"{uid}-g", [topic])
    assert [r.value for r in await drain(second, 1)] == [{"i": 0}]


KILLED_MEMBER = textwrap.dedent(
    """
    import asyncio, sys
    from framework.topology.model import KafkaConfig
    from framework.transport.kafka import KafkaLog
    from tests.test_kafka_transport import process

    async def main(bootstrap, topic, group, redis_url, pg_url):
        log = KafkaLog(KafkaConfig(bootstrap=[bootstrap]), session_timeout_ms=2000, heartbeat_interval_ms=250)
        await log.connect()
        member = log.consumer(group, [topic])
        await member.start()
        while True:
            for record in await member.getmany(timeout_ms=100):
                await process(record.value, redis_url, pg_url, topic)  # written, then killed before the commit
                print("processed", record.offset, flush=True)
                await asyncio.sleep(3600)

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def process(value: dict[str, Any], redis_url: str, pg_url: str, table: str) -> bool:
    """What an archiving consumer does with a record: claim its dedup key, write it if the claim is new."""
    import asyncpg

    from framework.stores.redis import RedisStore
    from framework.topology.model import Table

    redis = RedisStore("dedup", redis_url)
    await redis.connect()
    try:
        await redis.ensure_table("dedup_keys", Table(store="dedup", engine="kv", columns={"key": "str"}, retention="1h"), {"key": "str"})
        (fresh,) = await redis.claim("dedup_keys", [f"{table}|{value['i']}"])
    finally:
        await redis.close()
    if fresh:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}" (i bigint)')
            await conn.execute(f'INSERT INTO "{table}" (i) VALUES ($1)', value["i"])
        finally:
            await conn.close()
    return fresh


async def test_member_killed_before_commit_redelivers_after_its_session_expires(
    log: KafkaLog, config: KafkaConfig, uid: str, tmp_path: Path, redis_server: Any, postgres_server: Any
) -> None:
    topic, group = f"{uid}.orders", f"{uid}-g"
    await log.ensure_topics([TopicSpec(topic)])
    await log.produce(topic, {"i": 0})
    script = tmp_path / "member.py"
    script.write_text(KILLED_MEMBER)
    stderr = tmp_path / "member.err"
    with open(stderr, "wb") as err:  # noqa: ASYNC230 - a local file, opened once
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(script), config.bootstrap[0], topic, group, redis_server.url, postgres_server.url,
            stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.split() == [b"processed", b"0"], stderr.read_text(errors="replace")[-2000:]
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await child.wait()

    second = await joined(log, group, [topic])
    (redelivered,) = await drain(second, 1)
    assert redelivered.value == {"i": 0}
    assert await second.committed((topic, 0)) is None
    assert await process(redelivered.value, redis_server.url, postgres_server.url, topic) is False  # a duplicate
    await second.commit()
    import asyncpg

    conn = await asyncpg.connect(postgres_server.url)
    try:
        assert await conn.fetchval(f'SELECT count(*) FROM "{topic}"') == 1  # dedup kept one row
    finally:
        await conn.close()


# replay


async def test_replay_from_an_offset_and_from_a_timestamp(log: KafkaLog, uid: str) -> None:
    topic = f"{uid}.archive"
    await log.ensure_topics([TopicSpec(topic, partitions=3)])
    base = now_ms() - 3_600_000
    for i in range(60):
        await log.produce(topic, {"i": i}, key=f"k{i % 7}", timestamp_ms=base + i * 1_000)
    member = await joined(log, f"{uid}-g", [topic])
    everything = await drain(member, 60)
    await member.commit()
    assert sorted(r.value["i"] for r in everything) == list(range(60))

    tp = (topic, everything[0].partition)
    mine = sorted(r.offset for r in everything if (r.topic, r.partition) == tp)
    await member.seek(tp, mine[2])
    assert [r.offset for r in await drain(member, len(mine) - 2)] == mine[2:]

    for at, expected in ((base + 41_500, range(42, 60)), (base - 1, range(60)), (base + 59_000, [59])):
        await member.seek_to_timestamp(at)
        got = await drain(member, len(expected))
        assert sorted(r.value["i"] for r in got) == list(expected)
        assert all(r.timestamp >= at for r in got)

    await member.seek_to_timestamp(base + 3_600_000)
    assert await member.getmany(timeout_ms=300) == []
    await log.produce(topic, {"i": 60}, key="k0")
    assert [r.value for r in await drain(member, 1)] == [{"i": 60}]
    assert await member.committed(tp) == mine[-1] + 1


async def test_seek_requires_an_assigned_partition(log: KafkaLog, uid: str) -> None:
    topic = f"{uid}.q"
    await log.ensure_topics([TopicSpec(topic)])
    member = await joined(log, f"{uid}-g", [topic])
    with pytest.raises(PartitionNotAssignedError):
        await member.seek((topic, 5), 0)
    with pytest.raises(PartitionNotAssignedError):
        await member.commit({(topic, 5): 0})
    with pytest.raises(ValueError):
        await member.seek((topic, 0), -1)


# undecodable records


async def test_undecodable_records_go_to_the_callback_and_consumption_goes_on(
    log: KafkaLog, config: KafkaConfig, undecodable: Undecodable, uid: str
) -> None:
    topic = f"{uid}.raw"
    await log.ensure_topics([TopicSpec(topic)])
    raw = AIOKafkaProducer(bootstrap_servers=config.bootstrap)
    await raw.start()
    try:
        for value, key in (
            (orjson.dumps({"n": 0}), b"ok"),
            (b"{not json", None),
            (b"[1, 2]", None),
            (orjson.dumps({"n": 3}), b"ok"),
            (orjson.dumps({"n": 4}), b"\xff\xfe"),
            (None, b"tombstone"),
        ):
            await raw.send_and_wait(topic, value, key=key)
    finally:
        await raw.stop()

    member = await joined(log, f"{uid}-g", [topic])
    got = await drain(member, 2)
    got += await member.getmany(timeout_ms=300)
    assert [(r.offset, r.value) for r in got] == [(0, {"n": 0}), (3, {"n": 3})]
    assert [(t, p, o, raw) for t, p, o, raw, _ in undecodable.calls] == [
        (topic, 0, 1, b"{not json"),
        (topic, 0, 2, b"[1, 2]"),
        (topic, 0, 4, orjson.dumps({"n": 4})),
        (topic, 0, 5, b""),
    ]
    reasons = [reason for *_, reason in undecodable.calls]
    assert "JSONDecodeError" in reasons[0] and "not an object" in reasons[1]
    assert "UnicodeDecodeError" in reasons[2] and "tombstone" in reasons[3]

    await member.commit({(topic, 0): got[-1].offset + 1})
    assert await member.committed((topic, 0)) == 6

    await log.produce(topic, {"n": 6})
    assert [r.value for r in await drain(member, 1)] == [{"n": 6}]


async def test_a_failing_or_async_callback_does_not_stop_the_consumer(config: KafkaConfig, uid: str) -> None:
    seen: list[int] = []

    async def callback(topic: str, partition: int, offset: int, raw: bytes, reason: str) -> None:
        seen.append(offset)
        if offset == 0:
            raise RuntimeError("dead-letter store down")

    log = KafkaLog(config, on_undecodable=callback, **FAST_GROUPS)
    await log.connect()
    try:
        topic = f"{uid}.raw"
        await log.ensure_topics([TopicSpec(topic)])
        raw = AIOKafkaProducer(bootstrap_servers=config.bootstrap)
        await raw.start()
        try:
            await raw.send_and_wait(topic, b"x")
            await raw.send_and_wait(topic, b"y")
        finally:
            await raw.stop()
        await log.produce(topic, {"ok": True})
        member = await joined(log, f"{uid}-g", [topic])
        assert [r.value for r in await drain(member, 1)] == [{"ok": True}]
        assert seen == [0, 1]
    finally:
        await log.close()


# lifecycle and errors


async def test_stop_is_safe_twice_and_close_stops_members(config: KafkaConfig, uid: str) -> None:
    log = KafkaLog(config, **FAST_GROUPS)
    await log.connect()
    topic = f"{uid}.q"
    await log.ensure_topics([TopicSpec(topic)])
    never_started = log.consumer(f"{uid}-a", [topic])
    await never_started.stop()
    member = await joined(log, f"{uid}-b", [topic])
    await log.close()
    await log.close()
    await member.stop()
    with pytest.raises(TransportClosedError):
        await member.getmany()
    with pytest.raises(TransportClosedError):
        await log.produce(topic, {})


async def test_unreachable_bootstrap_is_one_line_naming_service_servers_and_remedy(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    monkeypatch.setenv("FXFLOW_TEST_KAFKA_USER", "svc-user")
    monkeypatch.setenv("FXFLOW_TEST_KAFKA_PASSWORD", secret)
    servers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    auth = KafkaAuth(mechanism="SCRAM-SHA-512", username_env="FXFLOW_TEST_KAFKA_USER", password_env="FXFLOW_TEST_KAFKA_PASSWORD")
    for config in (KafkaConfig(bootstrap=servers), KafkaConfig(bootstrap=servers, auth=auth)):
        log = KafkaLog(config, service="data-bridge")
        with caplog.at_level(logging.DEBUG), pytest.raises(UserError) as caught:
            await log.connect()
        message = str(caught.value)
        assert "\n" not in message
        assert "data-bridge" in message and "fxrun infra up" in message
        assert all(server in message for server in servers)
        assert secret not in message and secret not in repr(log)
        assert not any(secret in r.getMessage() for r in caplog.records)
        await log.close()


async def test_missing_credential_env_var_is_named_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXFLOW_TEST_NO_SUCH_VAR", raising=False)
    monkeypatch.setenv("FXFLOW_TEST_KAFKA_USER", "svc-user")
    auth = KafkaAuth(username_env="FXFLOW_TEST_KAFKA_USER", password_env="FXFLOW_TEST_NO_SUCH_VAR")
    log = KafkaLog(KafkaConfig(bootstrap=["127.0.0.1:9"], auth=auth))
    with pytest.raises(UserError, match="FXFLOW_TEST_NO_SUCH_VAR is not set"):
        await log.connect()
