"""The transport API every implementation provides (in-process now; NATS and Kafka next).

Two halves, as in the seed: a *pub/sub* half with NATS semantics (subjects, ``*``/``>``
wildcards, queue groups, at-most-once) and a *log* half with Kafka semantics (topics of
keyed partitions, consumer groups, committed offsets, replay from an offset or a time).

Payloads are ``dict`` messages at this boundary: a wire transport encodes them, the
in-process one passes them through untouched. The conformance suite in
``tests/conformance`` is written against these classes only, so every implementation
must pass it unchanged.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from framework.errors import FxflowError


class TransportError(FxflowError):
    """Base class of the errors every transport raises on purpose (the conformance suite asserts them)."""


class TransportClosedError(TransportError):
    """The transport (or consumer) is not connected/started, or was closed."""


class UnknownTopicError(TransportError, LookupError):
    """A topic was used that the topology never declared through ``ensure_topics``."""


class NoResponders(TransportError):
    """A request found nobody subscribed to answer it."""


class PartitionNotAssignedError(TransportError, ValueError):
    """``commit``/``seek`` named a partition this group member does not own (any more)."""


Message = dict[str, Any]
Headers = Mapping[str, str]
Handler = Callable[[str, Message, Headers | None], Awaitable[None]]
"""A subscriber callback: ``await handler(subject, payload, headers)``."""

ISOLATED_ATTR = "__fxflow_isolated__"


def isolated(handler: Handler) -> Handler:
    """Mark a handler that never raises and accounts for its own in-flight work.

    A transport may then take its fastest path for it: the in-process bus hands the
    handler's awaitable straight back to the publisher (no wrapper coroutine, no error
    guard) and ``close()`` does not wait for it. The runtime's delivery functions are
    isolated: they catch, count and dead-letter every failure themselves, and the runtime
    stops services before it closes a transport.
    """
    setattr(handler, ISOLATED_ATTR, True)
    return handler


CHUNK_ATTR = "accepts_chunks"
"""Set on a subscriber that takes a whole chunk (the runtime's deliveries); others get its rows."""
WHOLE_ATTR = "takes_publications_whole"
"""Set on a chunk subscriber that takes one publication's rows of several subjects as one chunk, in the
publication's order (a batch handler): see ``InProcessPubSub.publish_parts``."""


ID_HEADER = "fxflow-id"
"""Header holding a message's id (``<service>-<epoch>-<n>``: unique per service and run)."""
COUNT_HEADER = "fxflow-count"
"""A chunk's headers: its rows have ids ``fxflow-id`` .. ``fxflow-id + count - 1`` (same prefix)."""


def row_headers(headers: Headers | None, n: int) -> list[Headers | None]:
    """The headers of each of a chunk's ``n`` rows: the chunk's, with ids counted on from its first."""
    if not headers or COUNT_HEADER not in headers:
        return [headers] * n
    first = headers[ID_HEADER]
    prefix, _, number = first.rpartition("-")
    base = {k: v for k, v in headers.items() if k not in (ID_HEADER, COUNT_HEADER)}
    start = int(number)
    return [{**base, ID_HEADER: f"{prefix}-{start + i}"} for i in range(n)]


class Subscription(abc.ABC):
    """A live subscription; ``unsubscribe`` stops delivery."""

    pattern: str
    queue: str | None

    @abc.abstractmethod
    async def unsubscribe(self) -> None: ...


class PubSubTransport(abc.ABC):
    """NATS semantics: fire-and-forget subjects, wildcards and queue groups."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Drain in-flight deliveries, then disconnect."""

    @abc.abstractmethod
    async def publish(self, subject: str, payload: Message, headers: Headers | None = None) -> None:
        """Publish to a concrete subject (no wildcards)."""

    @abc.abstractmethod
    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None, *, owner: str | None = None
    ) -> Subscription:
        """Subscribe to a pattern; with ``queue`` each message goes to one member of the group.

        ``owner`` names the service the subscription belongs to (default: the transport's
        own service); a durable subscription's server-side state is keyed by it, so it
        survives regrouping services into processes.
        """

    async def flush(self) -> None:
        """Wait until everything published so far has been handed to the server (or delivered)."""

    async def publish_chunk(self, subject: str, chunk: Any, headers: Headers | None = None) -> None:
        """Publish a :class:`~framework.chunk.Chunk` on ``subject``: its rows, in order, as messages.

        A chunk's headers give the first row's id and ``fxflow-count``; each row gets its own
        id (:func:`row_headers`). The in-process bus hands the chunk whole to subscribers that
        take chunks (``accepts_chunks``)."""
        for row, row_hdrs in zip(chunk.rows(), row_headers(headers, len(chunk))):
            await self.publish(subject, row, row_hdrs)

    async def request(self, subject: str, payload: Message, headers: Headers | None = None, timeout: float = 5.0) -> Message:
        """Publish ``payload`` to one subscriber of ``subject`` and return its reply.

        The subscriber's handler returns the reply (a dict); a handler object with a
        ``request`` attribute is called through it (the runtime's mailbox deliveries, which
        return only once the reply exists). Raises :class:`NoResponders` when nobody is
        subscribed, TimeoutError after ``timeout`` seconds."""
        raise NotImplementedError(f"{type(self).__name__} does not do request/reply")

    def on_connection(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(False)`` when the connection to the server drops and ``listener(True)``
        when it is back: subscribers may have missed what was published in between (a
        transport that cannot lose its connection, like the in-process bus, never calls it)."""
        listeners: list[Callable[[bool], None]] = self.__dict__.setdefault("_connection_listeners", [])
        listeners.append(listener)

    def _connection_changed(self, up: bool) -> None:
        for listener in self.__dict__.get("_connection_listeners", ()):
            try:
                listener(up)
            except Exception:  # a listener's failure must not break the transport's reconnect
                logging.getLogger(__name__).exception("connection listener failed")

    def stats(self) -> dict[str, Any]:
        """Connection health (disconnects, reconnects, gaps…) for the metrics; empty when there is none."""
        return {}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A log topic as the topology declares it."""

    name: str
    partitions: int = 1
    retention_ms: int | None = None
    cleanup_policy: str = "delete"


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int
    timestamp: int


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Record(NamedTuple):
    """One log record as a consumer sees it. ``timestamp`` is Unix epoch milliseconds.

    A named tuple because consumers build one per record on the hot path: a tuple is about
    three times cheaper to construct than a frozen dataclass.
    """

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Message
    timestamp: int
    headers: Mapping[str, str] = _NO_HEADERS


TopicPartition = tuple[str, int]


class LogConsumer(abc.ABC):
    """A member of a consumer group. Offsets are committed explicitly (at-least-once)."""

    group: str

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group; uncommitted records will be redelivered to the group."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abc.abstractmethod
    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> list[Record]:
        """Fetch the next records of the assigned partitions, waiting up to ``timeout_ms``."""

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (next offset to read, Kafka style) or everything fetched so far."""

    @abc.abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None: ...

    @abc.abstractmethod
    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move the fetch position of an assigned partition (replay)."""

    @abc.abstractmethod
    async def seek_to_timestamp(self, timestamp_ms: int) -> None:
        """Move every assigned partition to the first record at or after ``timestamp_ms``."""


OFFSET_RESETS = ("earliest", "latest")


def check_consumer_args(group: str, auto_offset_reset: str) -> None:
    """The argument rules every ``LogTransport.consumer`` enforces (the conformance suite relies on them)."""
    if auto_offset_reset not in OFFSET_RESETS:
        raise ValueError(f"auto_offset_reset must be one of {OFFSET_RESETS}, got {auto_offset_reset!r}")
    if not group:
        raise ValueError("consumer group name must not be empty")


class LogTransport(abc.ABC):
    """Kafka semantics: keyed partitions, consumer groups, committed offsets, replay."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ensure_topics(self, topics: Iterable[TopicSpec]) -> None:
        """Create missing topics as declared (idempotent)."""

    @abc.abstractmethod
    async def produce(
        self,
        topic: str,
        value: Message,
        key: str | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append one record; records with the same key land in the same partition, in order."""

    @abc.abstractmethod
    def consumer(
        self,
        group: str,
        topics: Iterable[str],
        *,
        auto_offset_reset: str = "earliest",
    ) -> LogConsumer:
        """A new (not yet started) member of consumer group ``group``."""

    async def send(
        self,
        topic: str,
        value: Message,
        key: str | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Hand a record over without waiting for its acknowledgement (the streaming path).

        Returns a future of its metadata; a failed delivery fails the future. ``flush``
        waits for every outstanding send. The default produces synchronously.
        """
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(await self.produce(topic, value, key, headers, timestamp_ms))
        return future

    async def flush(self) -> None:
        """Wait until every produced record is durable (acknowledged)."""

    @abc.abstractmethod
    def read(
        self, topics: Iterable[str], start_ms: int, end_ms: int | None = None, *, batch: int = 1000, slack_ms: int = 0
    ) -> AsyncIterator[list[Record]]:
        """Records of ``topics`` stamped ``start_ms <= timestamp < end_ms``, in batches (replay).

        A private reader with no consumer group (no join, nothing committed): every
        partition is positioned by time and read up to the end offset it had when the
        read began. A partition stops early at its first record stamped at or after
        ``end_ms + slack_ms`` (timestamps may be slightly out of order across producers).
        """
