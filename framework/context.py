"""What a node sees of the world: publish on its ports, its tables, its clock, its log.

``publish(port, message)`` is the whole output API: the runtime has already resolved the
port to NATS subject templates, Kafka topics and tables from the topology, so a node never
names a subject, a topic or a database client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from framework.clock import Clock
from framework.contracts import BoundaryValidator, Contract, ValidationMode
from framework.deadletter import DeadLetters
from framework.metrics import ServiceMetrics
from framework.stores.base import KeyValueStore, Store, StoreError
from framework.stores.batch import BatchWriter
from framework.topology.model import Instrument
from framework.transport.base import LogTransport, PubSubTransport, Record

# StoreError is what a table operation raises when its store fails; nodes catch it from here.
__all__ = ["NodeContext", "OutputRoute", "StoreError", "TableHandle"]


@dataclass(slots=True)
class OutputRoute:
    """Everything one output port is wired to, resolved once at start."""

    port: str
    contracts: tuple[Contract, ...]
    subjects: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = field(default_factory=list)
    topics: list[tuple[str, str | None]] = field(default_factory=list)
    writers: list[BatchWriter] = field(default_factory=list)
    time_field: str | None = None
    """The contract's event-time field: Kafka records are stamped with it, so replay by time is by event time."""


class TableHandle:
    """A declared table: query it; inserts go through the batched writer; kv tables also
    claim keys and keep latest values."""

    def __init__(self, name: str, store: Store, writer: BatchWriter | None) -> None:
        self.name = name
        self.store = store
        self._writer = writer

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``sql`` may use ``{table}`` for this table's name and ``{name:Type}`` parameters."""
        return await self.store.query(sql.replace("{table}", self.name), parameters)

    async def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self._writer is None:
            raise PermissionError(f"table {self.name!r} is read-only for this service (declare it under an output)")
        for row in rows:
            await self._writer.add(row)

    def _kv(self) -> KeyValueStore:
        if not isinstance(self.store, KeyValueStore):
            raise TypeError(
                f"table {self.name!r} is in store {getattr(self.store, 'name', '?')!r} ({self.store.kind}), which is not "
                "key-value: claim / put_latest / get_latest need an engine: kv table in a redis store"
            )
        return self.store

    async def claim(self, keys: Sequence[str], ttl_ms: int | None = None) -> list[bool]:
        """Mark ``keys`` seen; True for each key that was new (the table's retention is the TTL)."""
        return await self._kv().claim(self.name, keys, ttl_ms)

    async def put_latest(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        await self._kv().put_latest(self.name, key, value, ttl_ms)

    async def get_latest(self, key: str) -> Any | None:
        return await self._kv().get_latest(self.name, key)


class NodeContext:
    def __init__(
        self,
        service: str,
        *,
        clock: Clock,
        pubsub: PubSubTransport,
        log: LogTransport,
        validator: BoundaryValidator,
        dead_letters: DeadLetters,
        metrics: ServiceMetrics,
        routes: dict[str, OutputRoute],
        tables: dict[str, TableHandle],
        pairs: Sequence[str],
        timeframes: Sequence[str],
        instruments: Mapping[str, Instrument],
        data_dir: Any,
        replay_topics: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.service = service
        self.clock = clock
        self.log = logging.getLogger(f"fxflow.{service}")
        self.metrics = metrics
        self.pairs = list(pairs)
        self.timeframes = list(timeframes)
        self.instruments = dict(instruments)
        self.data_dir = data_dir
        self._pubsub = pubsub
        self._log = log
        self._validator = validator
        self._validating = validator.mode is not ValidationMode.OFF
        self._dead_letters = dead_letters
        self._routes = routes
        self._pending_dead_letters: set[asyncio.Task[None]] = set()
        self._tables = tables
        self._replay_topics = dict(replay_topics or {})
        self.input_complete = False
        """True once every source of a bounded run has finished: a node may then close what
        it holds open (an aggregator its last buckets), as a batch job would at end of input."""

    async def publish(self, port: str, message: dict[str, Any], **values: Any) -> bool:
        """Validate ``message`` against the port's contract and send it everywhere the port is wired.

        ``values`` fill subject placeholders the message itself does not carry. Returns
        False when the message was dead-lettered instead (invalid, or a subject could not
        be rendered); the node keeps running either way.
        """
        route = self._routes.get(port)
        if route is None:
            raise KeyError(f"{self.service}: publish on {port!r}, which is not a wired output port ({', '.join(self._routes)})")
        if route.contracts and self._validating:
            reason = self._check(route.contracts, message)
            if reason is not None:
                await self.dead_letter(reason, message, origin=f"publish:{port}", contract=route.contracts[0].ref)
                return False
        if (route.subjects or route.topics) and not await self._send(route, message, values):
            return False
        self.metrics.published += 1
        for writer in route.writers:
            await writer.add(message)
        return True

    async def publish_many(self, port: str, messages: Sequence[dict[str, Any]], **values: Any) -> int:
        """:meth:`publish` for a batch (a downloaded file, a backfill page); returns how many were published.

        Each message is validated, routed to the port's subjects and topics as one
        :meth:`publish` would; the table writers take the valid ones in one step, which is
        what makes bulk loads several times faster. Invalid messages are dead-lettered.
        """
        route = self._routes.get(port)
        if route is None:
            raise KeyError(f"{self.service}: publish on {port!r}, which is not a wired output port ({', '.join(self._routes)})")
        accepted: list[dict[str, Any]] = []
        for message in messages:
            if route.contracts and self._validating:
                reason = self._check(route.contracts, message)
                if reason is not None:
                    await self.dead_letter(reason, message, origin=f"publish:{port}", contract=route.contracts[0].ref)
                    continue
            if route.subjects or route.topics:
                if not await self._send(route, message, values):
                    continue
            accepted.append(message)
        self.metrics.published += len(accepted)
        for writer in route.writers:
            await writer.add_many(accepted)
        return len(accepted)

    async def _send(self, route: OutputRoute, message: dict[str, Any], values: Mapping[str, Any]) -> bool:
        fields = {**message, **values} if values else message
        for template, render in route.subjects:
            try:
                subject = render(fields)
            except KeyError as exc:
                await self.dead_letter(str(exc.args[0]), message, origin=f"publish:{route.port}:{template}")
                return False
            await self._pubsub.publish(subject, message)
        stamp = message.get(route.time_field) if route.time_field else None
        for topic, key_field in route.topics:
            key = fields.get(key_field) if key_field else None
            sent = await self._log.send(
                topic, message, key=None if key is None else str(key), timestamp_ms=stamp if isinstance(stamp, int) else None
            )
            if not sent.done() or sent.exception() is not None:
                sent.add_done_callback(functools.partial(self._archived, topic, message))
        return True

    def _archived(self, topic: str, message: dict[str, Any], sent: asyncio.Future[Any]) -> None:
        """A record the log did not acknowledge is dead-lettered with the reason, never lost."""
        if sent.cancelled() or sent.exception() is None:
            return
        reason = f"archive to {topic} failed: {type(sent.exception()).__name__}: {sent.exception()}"
        self._pending_dead_letters.add(
            task := asyncio.ensure_future(self.dead_letter(reason, message, origin=f"kafka:{topic}"))
        )
        task.add_done_callback(self._pending_dead_letters.discard)

    def _check(self, contracts: tuple[Contract, ...], message: Mapping[str, Any]) -> str | None:
        reason = None
        for contract in contracts:
            reason = self._validator.check(contract, message)
            if reason is None:
                return None
        return f"contract {contracts[0].ref}: {reason}"

    async def replay(
        self, port: str, start_ms: int, end_ms: int, *, idle_ms: int = 500, batch: int = 1000
    ) -> AsyncIterator[list[Record]]:
        """Records of input ``port``'s Kafka topics stamped ``start_ms <= ts < end_ms``, in batches.

        For ports the topology marks ``replay: true``. A private reader (its own consumer
        group, nothing committed) seeks every partition to ``start_ms`` and stops at
        ``end_ms`` or after ``idle_ms`` without new records.
        """
        topics = self._replay_topics.get(port)
        if not topics:
            raise KeyError(f"{self.service}: input port {port!r} has no Kafka topic marked replay: true")
        group = f"{self.service}.replay.{uuid.uuid4().hex[:12]}"
        consumer = self._log.consumer(group, topics, auto_offset_reset="earliest")
        await consumer.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while not consumer.assignment() and loop.time() < deadline:
                await consumer.getmany(timeout_ms=50, max_records=1)
            await consumer.seek_to_timestamp(start_ms)
            done: set[tuple[str, int]] = set()
            idle_until = loop.time() + idle_ms / 1000
            while len(done) < len(consumer.assignment()) and loop.time() < idle_until:
                records = await consumer.getmany(timeout_ms=min(idle_ms, 100), max_records=batch)
                if not records:
                    continue
                idle_until = loop.time() + idle_ms / 1000
                out = []
                for record in records:
                    if record.timestamp >= end_ms:
                        done.add((record.topic, record.partition))
                    elif record.timestamp >= start_ms and (record.topic, record.partition) not in done:
                        out.append(record)
                if out:
                    yield out
        finally:
            await consumer.stop()

    def table(self, name: str) -> TableHandle:
        try:
            return self._tables[name]
        except KeyError:
            raise KeyError(
                f"{self.service}: table {name!r} is not declared for this service (add it to `reads` or an output)"
            ) from None

    async def dead_letter(self, reason: str, payload: Any, origin: str, contract: str | None = None) -> None:
        self.metrics.dead_lettered += 1
        await self._dead_letters.put(self.service, reason, payload, origin, self.clock.now_ms(), contract)

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments[symbol]
