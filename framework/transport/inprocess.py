"""In-process transports: NATS-style pub/sub and a Kafka-style partitioned log in one process.

:class:`InProcessPubSub` is the demo's hot path. ``publish`` dispatches inline: it awaits
every matching handler before returning, with no queue or task per message (the design of
NautilusTrader's message bus). A handler therefore runs on the publisher's stack; a slow
handler slows its publisher, exactly as it would throttle a single-threaded consumer. With
``wire=True`` every message goes through the NATS codec on the way (see the class).

:class:`InProcessLog` keeps Kafka's contract (keyed partitions with Kafka's own
partitioner, consumer groups with range assignment, explicit commits, replay) and can
persist everything under a directory so a restarted demo resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import numpy as np
import orjson

from framework.subjects import SubjectIndex, validate_pattern
from framework.transport.base import (
    CHUNK_ATTR,
    COUNT_HEADER,
    ISOLATED_ATTR,
    WHOLE_ATTR,
    Handler,
    Headers,
    LogConsumer,
    LogTransport,
    Message,
    NoResponders,
    PartitionNotAssignedError,
    PubSubTransport,
    Record,
    RecordMetadata,
    Subscription,
    TopicPartition,
    TopicSpec,
    TransportClosedError,
    TransportError,
    UnknownTopicError,
    check_consumer_args,
    row_headers,
)
from framework.transport.codec import decode, encode

__all__ = [
    "InProcessConsumer",
    "InProcessLog",
    "InProcessPubSub",
    "LogCorruptError",
    "PartitionNotAssignedError",
    "TransportClosedError",
    "TransportError",
    "UnknownTopicError",
    "murmur2",
    "partition_for_key",
]

logger = logging.getLogger(__name__)


class LogCorruptError(TransportError):
    """A persisted partition file is damaged somewhere other than its torn last line."""


# --- pub/sub --------------------------------------------------------------------------------


async def _discard(subject: str, payload: Message, headers: Headers | None) -> None:
    """The target of a removed entry, so a fan-out already under way skips it."""


class _Subscription(Subscription):
    """A plain subscription: its index entry *is* the subscription, ``target`` the handler."""

    def __init__(self, bus: InProcessPubSub, pattern: str, queue: str | None, handler: Handler) -> None:
        self.pattern = pattern
        self.queue = queue
        self.target: Handler = handler
        self.isolated = getattr(handler, ISOLATED_ATTR, False) is True
        self._bus = bus

    @property
    def active(self) -> bool:
        return self.target is not _discard

    async def unsubscribe(self) -> None:
        if self.active:
            self.target = _discard
            self._bus._remove(self)

    def __repr__(self) -> str:
        return f"<Subscription {self.pattern!r} queue={self.queue!r} active={self.active}>"


class _QueueGroup:
    """The single index entry of all members sharing one ``(pattern, queue)``; round-robin."""

    def __init__(self, pattern: str, queue: str) -> None:
        self.pattern = pattern
        self.queue = queue
        self.members: list[_Subscription] = []
        self.target: Handler = self._deliver
        self.isolated = False
        self._next = 0

    async def _deliver(self, subject: str, payload: Message, headers: Headers | None) -> None:
        members = self.members
        member = members[self._next % len(members)]
        self._next += 1
        await member.target(subject, payload, headers)


class _QueueUnion:
    """Queue groups of one queue name on different patterns that all match a subject.

    NATS picks one member per queue *name* among every matching subscription, whatever
    pattern each member subscribed with; this joins those groups for one routed subject.
    """

    def __init__(self, groups: list[_QueueGroup]) -> None:
        self.groups = groups
        self.pattern = "|".join(g.pattern for g in groups)
        self.queue = groups[0].queue
        self.target: Handler = self._deliver
        self.isolated = False
        self._next = 0

    async def _deliver(self, subject: str, payload: Message, headers: Headers | None) -> None:
        members = [m for g in self.groups for m in g.members]
        member = members[self._next % len(members)]
        self._next += 1
        await member.target(subject, payload, headers)


_Entry = _Subscription | _QueueGroup | _QueueUnion


def _join_queues(entries: tuple[_Entry, ...]) -> tuple[_Entry, ...]:
    by_queue: dict[str, list[_QueueGroup]] = {}
    for entry in entries:
        if isinstance(entry, _QueueGroup):
            by_queue.setdefault(entry.queue, []).append(entry)
    if all(len(groups) == 1 for groups in by_queue.values()):
        return entries
    joined: list[_Entry] = []
    seen: set[str] = set()
    for entry in entries:
        if isinstance(entry, _QueueGroup) and len(by_queue[entry.queue]) > 1:
            if entry.queue not in seen:
                seen.add(entry.queue)
                joined.append(_QueueUnion(by_queue[entry.queue]))
        else:
            joined.append(entry)
    return tuple(joined)
_ROUTE_CACHE_SIZE = 100_000


def _responder(entry: _Entry) -> Handler:
    """The handler that answers a request: the subscriber, or the next member of a queue group."""
    if isinstance(entry, _Subscription):
        return entry.target
    members = entry.members if isinstance(entry, _QueueGroup) else [m for g in entry.groups for m in g.members]
    member = members[entry._next % len(members)]
    entry._next += 1
    return member.target


class InProcessPubSub(PubSubTransport):
    """NATS semantics inside one process, with inline (synchronous-await) delivery.

    Delivery order equals publish order per subscriber. Once :meth:`close` has begun,
    ``publish`` raises (also from handlers still running, where it is logged like any handler
    error). Do not call :meth:`close` from inside a handler: it waits for that very delivery.

    ``wire=False``: payload and headers objects are handed to every subscriber as they are
    (not copied), so handlers must not mutate them; the fastest, for backtests.
    ``wire=True``: the payload is encoded once with the NATS codec (:mod:`framework.transport.codec`)
    and each subscriber gets its own decoded copy, headers copied likewise (``None`` when
    empty, as from NATS). A payload NATS cannot carry raises
    :class:`~framework.transport.codec.EncodeError` at publish, subscribers or not; a
    subscriber sees what it would over NATS (tuples as lists, NaN as None) and cannot change
    what another one sees.
    """

    def __init__(self, *, wire: bool = False) -> None:
        self.wire = wire
        if wire:
            self.publish = self._publish_wire  # type: ignore[method-assign]
        self._index: SubjectIndex[_Entry] = SubjectIndex()
        self._routes: dict[str, tuple[_Entry, ...]] = {}
        self._groups: dict[tuple[str, str], _QueueGroup] = {}
        self._subscriptions: set[_Subscription] = set()
        self._open = False
        self._inflight = 0
        self._drained: asyncio.Event | None = None

    async def connect(self) -> None:
        self._open = True
        self._drained = None

    async def close(self) -> None:
        self._open = False
        self._routes.clear()
        if self._inflight:
            if self._drained is None:
                self._drained = asyncio.Event()
            await self._drained.wait()
        self._drop_all()

    def publish(self, subject: str, payload: Message, headers: Headers | None = None) -> Awaitable[None]:  # type: ignore[override]
        """Deliver inline. A lone :func:`~framework.transport.base.isolated` subscriber gets the
        publisher's await directly (the hot path of the runtime); everything else goes
        through :meth:`_fan_out`, which guards each subscriber and counts in-flight work."""
        try:
            entries = self._routes[subject]
        except (KeyError, TypeError):
            entries = self._route(subject)
        if len(entries) == 1:
            entry = entries[0]
            if entry.isolated:
                return entry.target(subject, payload, headers)
        return self._fan_out(entries, subject, payload, headers)

    def _publish_wire(self, subject: str, payload: Message, headers: Headers | None = None) -> Awaitable[None]:
        """:meth:`publish` through the codec (``wire=True``), with a decoded copy per subscriber."""
        try:
            entries = self._routes[subject]
        except (KeyError, TypeError):
            entries = self._route(subject)
        data = encode(payload, subject)
        if len(entries) == 1:
            entry = entries[0]
            if entry.isolated:
                return entry.target(subject, decode(data), dict(headers) if headers else None)
        return self._fan_out(entries, subject, payload, headers, data)

    async def _fan_out(
        self, entries: tuple[_Entry, ...], subject: str, payload: Message, headers: Headers | None, data: bytes | None = None
    ) -> None:
        """Deliver to each entry in turn; with ``data`` (the wire), each gets its own decoded copy."""
        self._inflight += 1
        try:
            for entry in entries:
                try:
                    if data is None:
                        await entry.target(subject, payload, headers)
                    else:
                        await entry.target(subject, decode(data), dict(headers) if headers else None)
                except Exception:
                    logger.exception("subscriber of %r (queue %r) failed on %r", entry.pattern, entry.queue, subject)
        finally:
            self._inflight -= 1
            if self._drained is not None and not self._inflight:
                self._drained.set()

    async def publish_chunk(self, subject: str, chunk: Any, headers: Headers | None = None) -> None:
        """Subscribers that take chunks (the runtime's) get it whole; the others its rows, in order.

        With ``wire=True`` the rows go through the codec first (a value NATS could not carry
        fails here too) and chunk subscribers get a chunk rebuilt from the decoded rows."""
        try:
            entries = self._routes[subject]
        except (KeyError, TypeError):
            entries = self._route(subject)
        await self._deliver_chunk(subject, chunk, headers, entries)

    async def publish_parts(self, parts: list[tuple[str, Any, Headers | None, Any]], whole: Any) -> None:
        """One publication whose rows go to several subjects: ``parts`` of ``whole`` grouped by subject, each
        ``(subject, part, headers, index)`` with ``index`` the part's row positions in ``whole``.

        As :meth:`publish_chunk` of each part, except for a subscriber that takes publications whole
        (:data:`~framework.transport.base.WHOLE_ATTR`, a batch handler) reached by several parts: it gets one
        chunk of all their rows, in the publication's order, where the first of them is delivered. A batch
        handler of ``bars.>`` then sees each instant's bars of every pair together, as live delivery in time
        order would, not one pair's run of a thousand bars and then the next pair's."""
        routes: list[tuple[_Entry, ...]] = []
        reached: dict[int, list[int]] = {}
        for k, (subject, _, _, _) in enumerate(parts):
            try:
                entries = self._routes[subject]
            except (KeyError, TypeError):
                entries = self._route(subject)
            routes.append(entries)
            for entry in entries:
                if isinstance(entry, _Subscription) and getattr(entry.target, WHOLE_ATTR, False):
                    reached.setdefault(id(entry.target), []).append(k)
        merged = {target: ks for target, ks in reached.items() if len(ks) > 1}
        done: set[int] = set()
        for k, ((subject, part, headers, _), entries) in enumerate(zip(parts, routes)):
            others = tuple(e for e in entries if not (isinstance(e, _Subscription) and id(e.target) in merged))
            if others:
                await self._deliver_chunk(subject, part, headers, others)
            for entry in entries:
                key = id(entry.target) if isinstance(entry, _Subscription) else None
                if key is None or key not in merged or key in done:
                    continue
                done.add(key)
                index = np.sort(np.concatenate([parts[j][3] for j in merged[key]]))
                first = {h: v for h, v in (headers or {}).items() if h != COUNT_HEADER} or None  # one chunk, its own rows
                await self._deliver_chunk(subject, whole.take(index), first, (entry,))

    async def _deliver_chunk(self, subject: str, chunk: Any, headers: Headers | None, entries: tuple[_Entry, ...]) -> None:
        rows: list[Message] | None = None
        if self.wire:
            data = [encode(row, subject) for row in chunk.rows()]
            rows = [decode(d) for d in data]
            chunk = type(chunk).from_rows(rows, chunk.names).timed(chunk.times)
        per_row: list[Headers | None] | None = None
        for entry in entries:
            target = entry.target if isinstance(entry, _Subscription) else _responder(entry)
            try:
                if getattr(target, CHUNK_ATTR, False):
                    await target(subject, chunk, headers)
                    continue
                rows = rows if rows is not None else chunk.rows()
                per_row = per_row if per_row is not None else row_headers(headers, len(rows))
                for row, row_hdrs in zip(rows, per_row):
                    await target(subject, dict(row) if self.wire else row, row_hdrs)
            except Exception:
                logger.exception("subscriber of %r (queue %r) failed on %r", entry.pattern, entry.queue, subject)

    async def request(self, subject: str, payload: Message, headers: Headers | None = None, timeout: float = 5.0) -> Message:
        try:
            entries = self._routes[subject]
        except (KeyError, TypeError):
            entries = self._route(subject)
        entries = tuple(e for e in entries if e.target is not _discard)
        if not entries:
            raise NoResponders(f"no responder for a request on {subject!r}")
        reply: Message | None = None
        for entry in entries:  # as on NATS, every subscriber gets the request; the first reply is the answer
            target = _responder(entry)
            answer = getattr(target, "request", None)
            result = await asyncio.wait_for(answer(subject, payload, headers) if answer else target(subject, payload, headers), timeout)
            if reply is None and isinstance(result, dict):
                reply = result
        if reply is None:
            raise TransportError(f"no subscriber of {subject!r} replied (their handlers returned no dict)")
        return reply

    def _route(self, subject: str) -> tuple[_Entry, ...]:
        """The slow path of ``publish``: state check, validation and index lookup, memoised.

        The memo is a plain dict read inline by ``publish`` (cheaper than a method call on
        the index); it is cleared on every (un)subscribe and on close, so a closed bus
        always reaches this check.
        """
        if not self._open:
            raise TransportClosedError(f"publish to {subject!r} on a closed in-process pub/sub")
        entries = _join_queues(self._index.lookup(subject))
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        self._routes[subject] = entries
        return entries

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None, *, owner: str | None = None
    ) -> Subscription:
        if not self._open:
            raise TransportClosedError(f"subscribe to {pattern!r} on a closed in-process pub/sub")
        validate_pattern(pattern)
        if queue is not None and (not queue or any(c.isspace() for c in queue)):
            raise ValueError(f"invalid queue group name {queue!r}")
        sub = _Subscription(self, pattern, queue, handler)
        self._subscriptions.add(sub)
        self._routes.clear()
        if queue is None:
            self._index.add(pattern, sub)
            return sub
        group = self._groups.get((pattern, queue))
        if group is None:
            group = self._groups[(pattern, queue)] = _QueueGroup(pattern, queue)
            self._index.add(pattern, group)
        group.members.append(sub)
        return sub

    def _remove(self, sub: _Subscription) -> None:
        if sub not in self._subscriptions:
            return
        self._subscriptions.discard(sub)
        self._routes.clear()
        if sub.queue is None:
            self._index.remove(sub.pattern, sub)
            return
        key = (sub.pattern, sub.queue)
        group = self._groups[key]
        group.members.remove(sub)
        if not group.members:
            group.target = _discard
            del self._groups[key]
            self._index.remove(sub.pattern, group)

    def _drop_all(self) -> None:
        """Forget every subscription, so a closed bus keeps no handler alive."""
        for entry in (*self._subscriptions, *self._groups.values()):
            entry.target = _discard
        self._subscriptions.clear()
        self._groups.clear()
        self._routes.clear()
        self._index = SubjectIndex()


# --- Kafka partitioner ----------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_MURMUR_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (seed ``0x9747b28c``), returning the same signed 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _M32
    body = length & ~3
    for i in range(0, body, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _MURMUR_M) & _M32
        k ^= k >> 24
        k = (k * _MURMUR_M) & _M32
        h = ((h * _MURMUR_M) & _M32) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[body + 2] << 16
    if tail >= 2:
        h ^= data[body + 1] << 8
    if tail >= 1:
        h ^= data[body]
        h = (h * _MURMUR_M) & _M32
    h ^= h >> 13
    h = (h * _MURMUR_M) & _M32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: str, partitions: int) -> int:
    """Kafka's DefaultPartitioner for a keyed record: ``toPositive(murmur2(utf8(key))) % n``."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


# --- log ------------------------------------------------------------------------------------

_EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
DEFAULT_MAX_RECORDS = 500
"""``getmany`` batch cap when ``max_records`` is None (aiokafka's ``max_poll_records``)."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_topic_name(name: str) -> None:
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-], not '.' or '..' (Kafka's rule)"
        )


class _Partition:
    """Retained records of one partition; ``start`` is the log start offset, ``end`` the next."""

    __slots__ = ("records", "start", "end", "pending", "path", "file")

    def __init__(self, path: Path | None) -> None:
        self.records: list[Record] = []
        self.start = 0
        self.end = 0
        self.pending: list[bytes] = []
        self.path = path
        self.file: BinaryIO | None = None

    def index_of(self, timestamp_ms: int) -> int:
        """Offset of the first retained record at or after ``timestamp_ms`` (else ``end``)."""
        for record in self.records:
            if record.timestamp >= timestamp_ms:
                return record.offset
        return self.end

    def expire(self, cutoff_ms: int) -> None:
        """Drop the prefix of records older than ``cutoff_ms``; offsets are never reused."""
        records = self.records
        n = 0
        while n < len(records) and records[n].timestamp < cutoff_ms:
            n += 1
        if n:
            del records[:n]
            self.start += n

    def write_pending(self) -> None:
        """Append the buffered lines in one ``write``, so a crash tears at most the last line."""
        if not self.pending:
            return
        assert self.path is not None
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the log
        self.file.write(b"".join(self.pending))
        self.pending.clear()

    def close_file(self, sync: bool) -> None:
        if self.file is not None:
            if sync:
                os.fsync(self.file.fileno())
            self.file.close()
            self.file = None


class _Topic:
    __slots__ = ("spec", "partitions", "round_robin", "members")

    def __init__(self, spec: TopicSpec, partitions: list[_Partition]) -> None:
        self.spec = spec
        self.partitions = partitions
        self.round_robin = 0
        self.members: set[InProcessConsumer] = set()


class _Group:
    __slots__ = ("name", "committed", "members")

    def __init__(self, name: str, committed: dict[TopicPartition, int] | None = None) -> None:
        self.name = name
        self.committed: dict[TopicPartition, int] = committed or {}
        self.members: list[InProcessConsumer] = []


def _range_assign(group: _Group, topics: Mapping[str, _Topic]) -> dict[InProcessConsumer, set[TopicPartition]]:
    """Kafka's RangeAssignor: per topic, contiguous partition ranges over members in join order."""
    result: dict[InProcessConsumer, set[TopicPartition]] = {m: set() for m in group.members}
    wanted = {t for m in group.members for t in m.topics}
    for name in sorted(wanted):
        members = [m for m in group.members if name in m.topics]
        per, extra = divmod(len(topics[name].partitions), len(members))
        first = 0
        for i, member in enumerate(members):
            count = per + (1 if i < extra else 0)
            result[member].update((name, p) for p in range(first, first + count))
            first += count
    return result


class InProcessLog(LogTransport):
    """Kafka semantics in one process, optionally persisted under ``directory``.

    On disk: ``topics.json`` (the declared specs), ``topics/<topic>/<partition>.jsonl``
    (one orjson line per record, append-only) and ``groups/<group>.json`` (committed
    offsets, replaced atomically on every commit). Appends are buffered and written every
    ``flush_every`` records, on commit, ``flush()`` and ``close()``; written lines survive a
    killed process, and ``close()`` also fsyncs. A torn last line is dropped on reopen.

    ``now_ms`` supplies record timestamps and the retention clock (wall clock by default).
    ``max_records`` bounds every partition: beyond it the oldest records go (offsets are
    never reused), so a long backtest's log does not grow without end.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        flush_every: int = 1000,
        now_ms: Callable[[], int] = _wall_ms,
        max_records: int | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_records = max_records
        self._flush_every = max(1, flush_every)
        self._now_ms = now_ms
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._dirty: set[_Partition] = set()
        self._unwritten = 0
        self._open = False

    # lifecycle

    async def connect(self) -> None:
        if self._open:
            return
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        for group in list(self._groups.values()):
            for member in list(group.members):
                await member.stop()
        self._write_pending()
        for topic in self._topics.values():
            for part in topic.partitions:
                part.close_file(sync=True)
        self._open = False
        if self.directory is not None:
            self._topics.clear()
            self._groups.clear()

    async def flush(self) -> None:
        self._write_pending()

    # topics and producing

    async def ensure_topics(self, topics: Iterable[TopicSpec]) -> None:
        self._require_open()
        changed = False
        for spec in topics:
            changed |= self._ensure_topic(spec)
        if changed and self.directory is not None:
            _write_json_atomic(self.directory / "topics.json", [_spec_to_json(t.spec) for t in self._topics.values()])

    def _ensure_topic(self, spec: TopicSpec) -> bool:
        _check_topic_name(spec.name)
        if spec.partitions < 1:
            raise ValueError(f"topic {spec.name!r}: partitions must be >= 1, got {spec.partitions}")
        topic = self._topics.get(spec.name)
        if topic is None:
            parts = [_Partition(self._partition_path(spec.name, p)) for p in range(spec.partitions)]
            self._topics[spec.name] = _Topic(spec, parts)
            return True
        if topic.spec.partitions != spec.partitions:
            raise TransportError(
                f"topic {spec.name!r} exists with {topic.spec.partitions} partitions but is declared "
                f"with {spec.partitions}: changing the count would move keys to other partitions"
            )
        if topic.spec == spec:
            return False
        topic.spec = spec
        return True

    async def produce(
        self,
        topic: str,
        value: Message,
        key: str | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        self._require_open()
        t = self._topic(topic)
        n = len(t.partitions)
        if key is None:
            p = t.round_robin % n
            t.round_robin += 1
        else:
            p = partition_for_key(key, n)
        part = t.partitions[p]
        ts = self._now_ms() if timestamp_ms is None else int(timestamp_ms)
        hdrs: Mapping[str, str] = dict(headers) if headers else _EMPTY_HEADERS
        record = Record(topic, p, part.end, key, value, ts, hdrs)
        if part.path is not None:
            self._append_line(part, record)
        part.records.append(record)
        part.end += 1
        if t.spec.retention_ms is not None:
            part.expire(self._now_ms() - t.spec.retention_ms)
        if self.max_records is not None and len(part.records) > self.max_records:
            drop = len(part.records) - self.max_records
            del part.records[:drop]
            part.start += drop
        for member in t.members:
            member._wakeup.set()
        return RecordMetadata(topic, p, record.offset, ts)

    def _append_line(self, part: _Partition, record: Record) -> None:
        row = {
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": record.key,
            "headers": dict(record.headers),
            "value": record.value,
        }
        part.pending.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        self._dirty.add(part)
        self._unwritten += 1
        if self._unwritten >= self._flush_every:
            self._write_pending()

    def _write_pending(self) -> None:
        for part in self._dirty:
            part.write_pending()
        self._dirty.clear()
        self._unwritten = 0

    async def read(
        self, topics: Iterable[str], start_ms: int, end_ms: int | None = None, *, batch: int = 1000, slack_ms: int = 0
    ) -> AsyncIterator[list[Record]]:
        self._require_open()
        stop = None if end_ms is None else end_ms + slack_ms
        plan: list[tuple[TopicPartition, int, int]] = []
        for name in dict.fromkeys(topics):
            for p in range(len(self._topic(name).partitions)):
                part = self._live_partition((name, p))
                plan.append(((name, p), part.index_of(start_ms), part.end))
        for tp, position, end in plan:
            while position < end:
                part = self._live_partition(tp)
                position = max(position, part.start)
                chunk = part.records[position - part.start : min(end, position + batch) - part.start]
                if not chunk:
                    break
                position += len(chunk)
                out = []
                for record in chunk:
                    if stop is not None and record.timestamp >= stop:
                        position = end
                        break
                    if record.timestamp >= start_ms and (end_ms is None or record.timestamp < end_ms):
                        out.append(record)
                if out:
                    yield out
                await asyncio.sleep(0)

    # consumer groups

    def consumer(
        self,
        group: str,
        topics: Iterable[str],
        *,
        auto_offset_reset: str = "earliest",
    ) -> InProcessConsumer:
        check_consumer_args(group, auto_offset_reset)
        return InProcessConsumer(self, group, frozenset(topics), auto_offset_reset)

    def _join(self, member: InProcessConsumer) -> None:
        self._require_open()
        for name in member.topics:
            self._topic(name)
        group = self._groups.get(member.group)
        if group is None:
            group = self._groups[member.group] = _Group(member.group)
        group.members.append(member)
        for name in member.topics:
            self._topics[name].members.add(member)
        self._rebalance(group)

    def _leave(self, member: InProcessConsumer) -> None:
        group = self._groups[member.group]
        group.members.remove(member)
        for name in member.topics:
            self._topics[name].members.discard(member)
        member._assign({})
        self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        for member, tps in _range_assign(group, self._topics).items():
            member._assign({tp: self._start_position(group, member, tp) for tp in tps})

    def _start_position(self, group: _Group, member: InProcessConsumer, tp: TopicPartition) -> int:
        """Where a member starts on a newly assigned partition (kept ones keep their position)."""
        if tp in member._positions:
            return member._positions[tp]
        committed = group.committed.get(tp)
        return committed if committed is not None else self._reset_position(tp, member.auto_offset_reset)

    def _reset_position(self, tp: TopicPartition, policy: str) -> int:
        part = self._live_partition(tp)
        return part.start if policy == "earliest" else part.end

    def _live_partition(self, tp: TopicPartition) -> _Partition:
        """The partition with retention applied as of now (retention is enforced lazily)."""
        topic = self._topics[tp[0]]
        part = topic.partitions[tp[1]]
        if topic.spec.retention_ms is not None:
            part.expire(self._now_ms() - topic.spec.retention_ms)
        return part

    def _commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        committed = self._groups[group].committed
        committed.update(offsets)
        if self.directory is not None:
            self._write_pending()
            rows = [[t, p, o] for (t, p), o in sorted(committed.items())]
            _write_json_atomic(self._group_path(group), {"group": group, "offsets": rows})

    def _committed(self, group: str, tp: TopicPartition) -> int | None:
        g = self._groups.get(group)
        return None if g is None else g.committed.get(tp)

    # helpers

    def _require_open(self) -> None:
        if not self._open:
            raise TransportClosedError("the in-process log is not connected (call connect()) or was closed")

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            declared = ", ".join(sorted(self._topics)) or "none"
            raise UnknownTopicError(
                f"unknown topic {name!r}: topics must be declared in the topology "
                f"(ensure_topics) before use; declared: {declared}"
            )
        return topic

    def _partition_path(self, topic: str, partition: int) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / "topics" / topic / f"{partition}.jsonl"

    def _group_path(self, group: str) -> Path:
        assert self.directory is not None
        return self.directory / "groups" / f"{urllib.parse.quote(group, safe='')}.json"

    # persistence

    def _load(self) -> None:
        assert self.directory is not None
        meta = self.directory / "topics.json"
        if meta.exists():
            for row in orjson.loads(meta.read_bytes()):
                spec = _spec_from_json(row)
                self._ensure_topic(spec)
                for p, part in enumerate(self._topics[spec.name].partitions):
                    _load_partition(part, spec.name, p)
        groups = self.directory / "groups"
        if groups.is_dir():
            for path in sorted(groups.glob("*.json")):
                doc = orjson.loads(path.read_bytes())
                offsets = {(t, int(p)): int(o) for t, p, o in doc["offsets"]}
                self._groups[doc["group"]] = _Group(doc["group"], offsets)


class InProcessConsumer(LogConsumer):
    """One member of a consumer group of an :class:`InProcessLog`."""

    def __init__(self, owner: InProcessLog, group: str, topics: frozenset[str], auto_offset_reset: str) -> None:
        self.group = group
        self.topics = topics
        self.auto_offset_reset = auto_offset_reset
        self._log = owner
        self._running = False
        self._positions: dict[TopicPartition, int] = {}
        self._order: list[TopicPartition] = []
        self._turn = 0
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        return f"<InProcessConsumer group={self.group!r} topics={sorted(self.topics)} running={self._running}>"

    async def start(self) -> None:
        if not self._running:
            self._log._join(self)
            self._running = True

    async def stop(self) -> None:
        if self._running:
            self._running = False
            self._log._leave(self)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def _assign(self, positions: dict[TopicPartition, int]) -> None:
        self._positions = positions
        self._order = sorted(positions)
        self._wakeup.set()

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> list[Record]:
        """Records from the assigned partitions; waits up to ``timeout_ms`` for the first one.

        Returns ``[]`` if the member is stopped (or the log closed) while waiting.
        """
        self._require_running()
        limit = DEFAULT_MAX_RECORDS if max_records is None else max_records
        if limit < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, timeout_ms) / 1000
        while True:
            self._wakeup.clear()
            records = self._fetch(limit)
            remaining = deadline - loop.time()
            if records or remaining <= 0 or not self._running:
                return records
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return self._fetch(limit) if self._running else []

    def _fetch(self, limit: int) -> list[Record]:
        """Take up to ``limit`` records, starting at a rotating partition for fairness."""
        out: list[Record] = []
        order = self._order
        if not order:
            return out
        first = self._turn % len(order)
        self._turn += 1
        for tp in order[first:] + order[:first]:
            part = self._log._live_partition(tp)
            pos = self._positions[tp]
            if pos < part.start or pos > part.end:
                pos = self._log._reset_position(tp, self.auto_offset_reset)
            i = pos - part.start
            taken = part.records[i : i + limit - len(out)]
            self._positions[tp] = pos + len(taken)
            out.extend(taken)
            if len(out) >= limit:
                break
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._require_running()
        if offsets is None:
            offsets = dict(self._positions)
        else:
            for tp, offset in offsets.items():
                self._require_assigned(tp, "commit")
                if offset < 0:
                    raise ValueError(f"cannot commit negative offset {offset} for {tp}")
        self._log._commit(self.group, offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._log._committed(self.group, tp)

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self._require_assigned(tp, "seek")
        if offset < 0:
            raise ValueError(f"cannot seek {tp} to negative offset {offset}")
        self._positions[tp] = offset
        self._wakeup.set()

    async def seek_to_timestamp(self, timestamp_ms: int) -> None:
        self._require_running()
        for tp in self._order:
            self._positions[tp] = self._log._live_partition(tp).index_of(timestamp_ms)
        self._wakeup.set()

    def _require_running(self) -> None:
        if not self._running:
            raise TransportClosedError(f"consumer of group {self.group!r} is not started (or was stopped)")

    def _require_assigned(self, tp: TopicPartition, action: str) -> None:
        self._require_running()
        if tp not in self._positions:
            raise PartitionNotAssignedError(
                f"cannot {action} {tp}: not assigned to this member of group {self.group!r} "
                f"(assigned: {sorted(self._positions)})"
            )


# --- persistence helpers --------------------------------------------------------------------


def _spec_to_json(spec: TopicSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "partitions": spec.partitions,
        "retention_ms": spec.retention_ms,
        "cleanup_policy": spec.cleanup_policy,
    }


def _spec_from_json(row: Mapping[str, Any]) -> TopicSpec:
    return TopicSpec(
        name=row["name"],
        partitions=int(row["partitions"]),
        retention_ms=row.get("retention_ms"),
        cleanup_policy=row.get("cleanup_policy", "delete"),
    )


def _write_json_atomic(path: Path, doc: Any) -> None:
    """Replace ``path`` in one step (tmp + rename), so a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    os.replace(tmp, path)


def _load_partition(part: _Partition, topic: str, partition: int) -> None:
    """Read a partition file back; drop (and truncate away) a torn unterminated last line."""
    path = part.path
    if path is None or not path.exists():
        return
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        logger.warning(
            "%s: dropping torn last line (%d bytes) of %s[%d], left by an interrupted write",
            path,
            len(data) - complete,
            topic,
            partition,
        )
        with open(path, "r+b") as f:
            f.truncate(complete)
    for lineno, line in enumerate(data[:complete].splitlines(), 1):
        if line:
            part.records.append(_record_from_line(line, topic, partition, path, lineno))
    if part.records:
        part.start = part.records[0].offset
        part.end = part.records[-1].offset + 1


def _record_from_line(line: bytes, topic: str, partition: int, path: Path, lineno: int) -> Record:
    try:
        row = orjson.loads(line)
        return Record(
            topic=topic,
            partition=partition,
            offset=int(row["offset"]),
            key=row["key"],
            value=row["value"],
            timestamp=int(row["timestamp"]),
            headers=row["headers"] or _EMPTY_HEADERS,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LogCorruptError(f"{path}:{lineno}: unreadable record line ({exc})") from exc
