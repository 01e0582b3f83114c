"""What a node sees of the world: publish on its ports, its tables, its clock, its log.

``publish(port, message)`` is the whole output API: the runtime has already resolved the
port to NATS subject templates, Kafka topics and tables from the topology, so a node never
names a subject, a topic or a database client.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.chunk import Chunk
from framework.chunk_validation import ChunkValidator
from framework.clock import Clock
from framework.contracts import BoundaryValidator, Contract, ValidationMode
from framework.deadletter import DeadLetters
from framework.metrics import ServiceMetrics
from framework.stores.base import KeyValueStore, Store, StoreError
from framework.stores.batch import BatchWriter
from framework.topology.model import Account, Instrument
from framework.topology.templates import placeholders
from framework.transport.base import COUNT_HEADER, ID_HEADER, LogTransport, PubSubTransport, Record

# StoreError is what a table operation raises when its store fails; nodes catch it from here.
__all__ = ["CAUSE_HEADER", "ID_HEADER", "PRODUCER_HEADER", "NodeContext", "OutputRoute", "StoreError", "TableHandle"]

PRODUCER_HEADER = "fxflow-service"
"""Header naming the service that archived a record (a refill takes back only its own records)."""
CAUSE_HEADER = "fxflow-cause"
"""Header holding the id of the message whose handling published this one (none for a source's own)."""

Item = tuple[list[str], dict[str, Any], dict[str, str]]
_HANDLED = object()
"""``caused_by`` not given: the cause is the message being handled."""
"""A message on its way out: its subjects, the message, its headers."""


@dataclass(slots=True)
class OutputRoute:
    """Everything one output port is wired to, resolved once at start."""

    port: str
    contracts: tuple[Contract, ...]
    subjects: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = field(default_factory=list)
    topics: list[tuple[str, str | None]] = field(default_factory=list)
    writers: list[BatchWriter] = field(default_factory=list)
    traced: list[BatchWriter] = field(default_factory=list)
    """The writers (a subset of ``writers``) of tables that declare ``trace: true``: their rows
    also get the message's id and its cause (``msg_id``, ``cause_id``), for ``fxrun trace``."""
    time_field: str | None = None
    """The contract's event-time field."""


def _by_subject(
    template: str, render: Callable[[Mapping[str, Any]], str], chunk: Chunk
) -> list[tuple[str, Chunk, np.ndarray | None]]:
    """The chunk's rows grouped by the subject the template gives each (in order of first
    appearance), with the positions of each group's rows (None: the whole chunk)."""
    names = placeholders(template)
    if not names:
        return [(render({}), chunk, None)]
    missing = [n for n in names if n not in chunk]
    if missing:
        raise KeyError(f"subject template {template!r} needs a value for {missing[0]!r}")
    columns = [chunk[n] for n in names]
    if all(bool((c == c[0]).all()) for c in columns):  # one subject for the whole chunk: the common case, no row loop
        return [(render({n: c[:1].tolist()[0] for n, c in zip(names, columns)}), chunk, None)]
    keys = list(zip(*(c.tolist() for c in columns)))
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    if len(groups) == 1:
        return [(render(dict(zip(names, keys[0]))), chunk, None)]
    out = []
    for key, rows in groups.items():
        index = np.asarray(rows)
        out.append((render(dict(zip(names, key))), chunk.take(index), index))
    return out


def outbox_settle(ctx: NodeContext, sends: list[tuple[str, asyncio.Future[Any]]], message: dict[str, Any]) -> None:
    """Dead-letter ``message`` for each of its archive sends the log refused (now, or when it answers)."""
    for topic, sent in sends:
        if sent.done():
            ctx._archive_failed(topic, message, sent)
        else:
            sent.add_done_callback(functools.partial(ctx._archive_failed, topic, message))


class _Outbox:
    """One output port's messages between their archive send and their real-time delivery.

    Messages leave in the order they were published: each waits for its log
    acknowledgement, at most until ``archive_wait`` after it was sent, then goes to its
    subjects and tables. A record the log refuses is dead-lettered and still delivered in
    real time (the dead letter keeps it for the archive); one still unacknowledged at the
    deadline is delivered and dead-lettered later if its delivery then fails.
    """

    __slots__ = ("ctx", "route", "entries", "task")

    def __init__(self, ctx: NodeContext, route: OutputRoute) -> None:
        self.ctx = ctx
        self.route = route
        self.entries: deque[tuple[list[tuple[str, asyncio.Future[Any]]], float, Item]] = deque()
        self.task: asyncio.Future[None] | None = None

    async def put(self, items: list[tuple[list[tuple[str, asyncio.Future[Any]]], Item]]) -> None:
        """Deliver ``(sends, item)`` pairs in order once archived (at once when they already are)."""
        if not self.entries and all(sent.done() for sends, _ in items for _, sent in sends):
            for sends, item in items:
                self._settle(sends, item[1])
            await self.ctx._deliver_many(self.route, [item for _, item in items])
            return
        deadline = asyncio.get_running_loop().time() + self.ctx._archive_wait
        self.entries.extend((sends, deadline, item) for sends, item in items)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def _settle(self, sends: list[tuple[str, asyncio.Future[Any]]], message: dict[str, Any]) -> None:
        outbox_settle(self.ctx, sends, message)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        entries = self.entries
        while entries:
            sends, deadline, item = entries[0]
            waiting = [sent for _, sent in sends if not sent.done()]
            if waiting and (left := deadline - loop.time()) > 0:
                await asyncio.wait(waiting, timeout=left)
            entries.popleft()
            self._settle(sends, item[1])
            try:
                await self.ctx._deliver_many(self.route, [item])
            except Exception as exc:
                reason = f"delivery after archiving failed: {type(exc).__name__}: {exc}"
                await self.ctx.dead_letter(reason, item[1], origin=f"publish:{self.route.port}")

    async def drain(self) -> None:
        while self.task is not None and not self.task.done():
            await asyncio.shield(self.task)


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

    async def query_frame(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """:meth:`query` as a pandas DataFrame, typed columns straight from the store where it can
        (ClickHouse), for the bulk reads of batch work (feature backfills, training sets)."""
        sql = sql.replace("{table}", self.name)
        query_df = getattr(self.store, "query_df", None)
        if query_df is not None:
            return await query_df(sql, parameters)
        import pandas

        return pandas.DataFrame(await self.store.query(sql, parameters))

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

    async def seen(self, keys: Sequence[str]) -> list[bool]:
        """For each key, whether it was claimed (within the TTL); claims nothing."""
        return await self._kv().seen(self.name, keys)

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
        account: Account | None = None,
        data_dir: Any,
        replay_topics: Mapping[str, tuple[str, ...]] | None = None,
        archive_wait: float = 2.0,
        id_epoch: str = "0",
    ) -> None:
        self.service = service
        self.clock = clock
        self.log = logging.getLogger(f"fxflow.{service}")
        self.metrics = metrics
        self.pairs = list(pairs)
        self.timeframes = list(timeframes)
        self.instruments = dict(instruments)
        self._account = account or Account()
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
        self._archive_wait = archive_wait
        self._outboxes: dict[str, _Outbox] = {}
        self._ids = itertools.count(1)
        self._chunk_validators: dict[str, ChunkValidator] = {}
        self._id_prefix = f"{service}-{id_epoch}-"
        self._cause: str | None = None
        self.artifacts: Any = None
        self.config_hash: str = ""
        """The run's configuration hash (:mod:`framework.confighash`): the topology that reproduces a result."""
        self.system: Any = None
        """The run as a whole, read-only (:class:`~framework.runtime.introspect.SystemView`): the
        topology's services and links, and the counters of the services of this process."""
        self._offloader: Any = None
        self._background_hook: Callable[..., Awaitable[None]] | None = None
        """The artifact store (models, agents), where the topology declares one."""
        self.input_complete = False
        """True once every source of a bounded run has finished: a node may then close what
        it holds open (an aggregator its last buckets), as a batch job would at end of input."""
        self._fail_hook: Callable[[str], None] | None = None

    @property
    def current_id(self) -> str | None:
        """The id of the message being handled now (None in a timer or a source's loop): a node
        that publishes later what a message made it do passes it as ``caused_by``."""
        return self._cause

    async def publish(self, port: str, message: dict[str, Any], caused_by: str | None | object = _HANDLED, **values: Any) -> bool:
        """Validate ``message`` against the port's contract and send it everywhere the port is wired.

        ``values`` fill subject placeholders the message itself does not carry. Returns
        False when the message was dead-lettered instead (invalid, or a subject could not
        be rendered); the node keeps running either way. The message's cause is the message
        being handled, or ``caused_by`` (see :attr:`current_id`).

        A port with a Kafka archive commits there first: the message goes to its subjects
        and tables once the log has acknowledged it (or ``archive_wait`` has passed), so a
        crash can never leave something on NATS or in a table that the archive lacks, and
        tables can be refilled from the archive after a crash (see :mod:`framework.refill`).
        Messages of one port keep their order; the handler does not wait for the
        acknowledgement (the in-process log acknowledges at once, so nothing changes there).
        """
        route = self._routes.get(port) or self._route(port)
        if route.contracts and self._validating:
            reason = self._check(route.contracts, message)
            if reason is not None:
                await self.dead_letter(reason, message, origin=f"publish:{port}", contract=route.contracts[0].ref)
                return False
        if values or len(route.subjects) != 1:
            subjects = self._render(route, message, values)
            if type(subjects) is str:
                await self.dead_letter(subjects, message, origin=f"publish:{port}")
                return False
        else:  # the common case, inline: one subject template filled from the message
            template, render = route.subjects[0]
            try:
                subjects = [render(message)]
            except KeyError as exc:
                await self.dead_letter(f"{exc.args[0]} (subject {template})", message, origin=f"publish:{port}")
                return False
        self.metrics.published += 1
        cause = self._cause if caused_by is _HANDLED else caused_by
        headers = {ID_HEADER: f"{self._id_prefix}{next(self._ids)}"} if cause is None else {
            ID_HEADER: f"{self._id_prefix}{next(self._ids)}", CAUSE_HEADER: cause}  # fmt: skip
        if route.topics:
            await self._archive(route, [(subjects, message, headers)], values)
            return True
        publish = self._pubsub.publish
        for subject in subjects:
            await publish(subject, message, headers)
        if route.writers:
            await self._write(route, ((subjects, message, headers),))
        return True

    async def publish_many(self, port: str, messages: Sequence[dict[str, Any]], **values: Any) -> int:
        """:meth:`publish` for a batch (a downloaded file, a backfill page); returns how many were published.

        Each message is validated and routed as one :meth:`publish` would; the table writers
        take the valid ones in one step, which is what makes bulk loads several times
        faster. Invalid messages are dead-lettered.
        """
        route = self._route(port)
        accepted: list[Item] = []
        for message in messages:
            if route.contracts and self._validating:
                reason = self._check(route.contracts, message)
                if reason is not None:
                    await self.dead_letter(reason, message, origin=f"publish:{port}", contract=route.contracts[0].ref)
                    continue
            subjects = self._render(route, message, values)
            if type(subjects) is str:
                await self.dead_letter(subjects, message, origin=f"publish:{port}")
            else:
                accepted.append((subjects, message, self._stamp()))
        self.metrics.published += len(accepted)
        if route.topics:
            await self._archive(route, accepted, values)
        else:
            await self._deliver_many(route, accepted)
        return len(accepted)

    async def publish_batch(self, port: str, chunk: Chunk, *, at: Sequence[int] | np.ndarray | None = None, **values: Any) -> int:
        """Publish a :class:`~framework.chunk.Chunk` of messages on ``port``; returns how many rows went out.

        Validated per column (rows that fail are dead-lettered, the rest go on). A subscriber
        of the runtime in this process gets the chunk whole (a batch handler takes it as it is;
        a single-message handler takes its rows in order), so a backtest moves columns, not
        dicts, from node to node; the port's tables take its rows, its Kafka topics too, first
        (a log that acknowledges at once lets the chunk go on whole; Kafka's acknowledgements
        send the rows on one by one through the port's outbox, as :meth:`publish_many` does).
        On NATS the rows travel as messages, as every other consumer expects. ``values`` (subject
        placeholders the rows do not carry) send the rows one by one, as :meth:`publish_many`.

        **Timed chunks**: ``at`` (or a chunk's :attr:`~framework.chunk.Chunk.times`) gives the
        time each row becomes known, non-decreasing, none before now: history handed on ahead of
        time, as if each row were published when the clock reads its time. On the simulation
        driver the chunk goes out at once: a batch handler takes it whole and computes ahead
        (what it publishes for a row carries that row's time: pass ``at`` on), a single-message
        handler gets each row when the clock reaches its time, in event-time order with
        everything else (:mod:`framework.runtime.simulation`), and a source's call returns once
        the clock has passed the last row, as if it had published them one by one. Elsewhere
        (the wall clock) the rows whose time has come go at once and the others, a group per
        time, when the clock reads it.
        """
        route = self._routes.get(port) or self._route(port)
        if at is not None:
            chunk = chunk.timed(at)
        if not len(chunk):
            return 0
        if route.contracts and self._validating:
            failed = self._chunk_validator(route).check(chunk)
            if failed:
                rows = chunk.rows()
                for index, reason in failed:
                    await self.dead_letter(f"contract {route.contracts[0].ref}: {reason}", rows[index], origin=f"publish:{port}",
                                           contract=route.contracts[0].ref)  # fmt: skip
                keep = np.ones(len(chunk), dtype=bool)
                keep[[i for i, _ in failed]] = False
                chunk = chunk.take(keep)
                if not len(chunk):
                    return 0
        times = chunk.times
        if values:
            if times is not None:
                raise ValueError(f"{self.service}: a timed chunk on {port!r} cannot take subject values (put them in its columns)")
            return await self.publish_many(port, chunk.rows(), **values)
        if times is None:
            await self._send_chunk(route, chunk)
        elif getattr(self._pubsub, "timed_delivery", False):
            await self._send_chunk(route, chunk)
            await self._pubsub.settle(int(times[-1]))
        else:
            await self._paced(route, chunk, times)
        return len(chunk)

    async def _paced(self, route: OutputRoute, chunk: Chunk, times: np.ndarray) -> None:
        """A timed chunk on the wall clock: what is due now at once, the rest when its time comes."""
        due = int(np.searchsorted(times, self.clock.now_ms(), side="right"))
        if due:
            await self._send_chunk(route, chunk.take(slice(0, due)).timed(None))
        while due < len(times):
            t = int(times[due])
            end = int(np.searchsorted(times, t, side="right"))
            await self.clock.wait_until(t)
            await self._send_chunk(route, chunk.take(slice(due, end)).timed(None))
            due = end

    async def _send_chunk(self, route: OutputRoute, chunk: Chunk) -> None:
        """``chunk`` to the port's Kafka topics (acknowledged first), then its subjects and tables.

        A log that acknowledges at once (in-process) lets the chunk go on whole; one that does not (Kafka) hands
        the rows to the port's outbox, which delivers each once acknowledged, as :meth:`publish_many` does, so
        the handler never waits for the log."""
        n = len(chunk)
        groups: list[list[tuple[str, Chunk, int, np.ndarray | None]]] = []
        ids: list[int] | None = None
        for k, (template, render) in enumerate(route.subjects):
            groups.append([])
            for subject, part, index in _by_subject(template, render, chunk):
                first = self._next_ids(len(part))
                groups[k].append((subject, part, first, index))
                if k == 0 and (route.topics or route.traced):
                    if index is None:
                        ids = list(range(first, first + n))
                    else:
                        ids = ids if ids is not None else [0] * n
                        for j, i in enumerate(index.tolist()):
                            ids[i] = first + j
        if ids is None and (route.topics or route.traced):  # no subject: ids of their own
            first = self._next_ids(n)
            ids = list(range(first, first + n))
        cause = self._cause
        rows = chunk.rows() if route.topics or route.writers else []
        self.metrics.published += n
        if route.topics:
            assert ids is not None
            heads = [{ID_HEADER: f"{self._id_prefix}{i}"} if cause is None else {ID_HEADER: f"{self._id_prefix}{i}", CAUSE_HEADER: cause}
                     for i in ids]  # fmt: skip
            sends = await self._archive_rows(route, rows, heads, chunk.times)
            outbox = self._outboxes.get(route.port)
            if (outbox is not None and outbox.entries) or any(not sent.done() for row in sends for _, sent in row):
                if outbox is None:
                    outbox = self._outboxes[route.port] = _Outbox(self, route)
                await outbox.put([(sent, (self._render(route, row, {}), row, head)) for sent, row, head in zip(sends, rows, heads)])
                return
            for row_sends, row in zip(sends, rows):
                outbox_settle(self, row_sends, row)
        whole = getattr(self._pubsub, "publish_parts", None)
        for group in groups:  # one subject template's parts
            sends = []
            for subject, part, first, index in group:
                headers = {ID_HEADER: f"{self._id_prefix}{first}", COUNT_HEADER: str(len(part))}
                if cause is not None:
                    headers[CAUSE_HEADER] = cause
                sends.append((subject, part, headers, index))
            if whole is not None and len(sends) > 1:  # a batch subscriber of several of the subjects: one chunk
                await whole(sends, chunk)
                continue
            for subject, part, headers, _ in sends:
                await self._pubsub.publish_chunk(subject, part, headers)
        if route.writers:
            traced = rows
            if route.traced:
                assert ids is not None
                prefix = self._id_prefix
                traced = [{**row, "msg_id": f"{prefix}{i}", "cause_id": cause} for row, i in zip(rows, ids)]
            for writer in route.writers:
                await writer.add_many(traced if writer in route.traced else rows)

    def _next_ids(self, n: int) -> int:
        """Reserve ``n`` message ids; the first one's number."""
        first = next(self._ids)
        if n > 1:
            self._ids = itertools.count(first + n)
        return first

    async def _archive_rows(self, route: OutputRoute, rows: Sequence[dict[str, Any]], heads: Sequence[dict[str, str]],
                            times: np.ndarray | None) -> list[list[tuple[str, asyncio.Future[Any]]]]:  # fmt: skip
        """Send ``rows`` (with their ids, ``heads``) to the port's topics, stamped with when each became known;
        each row's sends."""
        stamps = times.tolist() if times is not None else None
        out: list[list[tuple[str, asyncio.Future[Any]]]] = []
        for k, message in enumerate(rows):
            stamp = stamps[k] if stamps is not None else self.known_time(message, route.time_field)
            headers = {PRODUCER_HEADER: self.service, **heads[k]}
            sends = []
            for topic, key_field in route.topics:
                key = message.get(key_field) if key_field else None
                sends.append((topic, await self._log.send(topic, message, key=None if key is None else str(key), headers=headers,
                                                          timestamp_ms=stamp)))  # fmt: skip
            out.append(sends)
        return out

    def _chunk_validator(self, route: OutputRoute) -> ChunkValidator:
        validator = self._chunk_validators.get(route.port)
        if validator is None:
            validator = self._chunk_validators[route.port] = ChunkValidator(route.contracts[0])
        return validator

    def _route(self, port: str) -> OutputRoute:
        route = self._routes.get(port)
        if route is None:
            raise KeyError(f"{self.service}: publish on {port!r}, which is not a wired output port ({', '.join(self._routes)})")
        return route

    @staticmethod
    def _render(route: OutputRoute, message: dict[str, Any], values: Mapping[str, Any]) -> list[str] | str:
        """The concrete subjects of ``message``, or why one cannot be rendered (a str)."""
        if not route.subjects:
            return []
        fields = {**message, **values} if values else message
        out = []
        for template, render in route.subjects:
            try:
                out.append(render(fields))
            except KeyError as exc:
                return f"{exc.args[0]} (subject {template})"
        return out

    async def _archive(self, route: OutputRoute, accepted: Sequence[Item], values: Mapping[str, Any]) -> None:
        items = []
        for item in accepted:
            message = item[1]
            stamp = self.known_time(message, route.time_field)
            fields = {**message, **values} if values else message
            headers = {PRODUCER_HEADER: self.service, **item[2]}
            sends = []
            for topic, key_field in route.topics:
                key = fields.get(key_field) if key_field else None
                sent = await self._log.send(
                    topic, message, key=None if key is None else str(key), headers=headers, timestamp_ms=stamp
                )
                sends.append((topic, sent))
            items.append((sends, item))
        outbox = self._outboxes.get(route.port)
        if outbox is None:
            outbox = self._outboxes[route.port] = _Outbox(self, route)
        await outbox.put(items)

    def known_time(self, message: Mapping[str, Any], time_field: str | None) -> int | None:
        """When ``message`` became known: the clock's time. Kafka records are stamped with it,
        never with a future event time (brokers refuse those), so replays by time follow the
        order in which things were learnt; the event's own time stays in the payload. Before
        a simulated clock has its first event, the message's own time stands in."""
        clock = self.clock
        if getattr(clock, "started", True):
            return clock.now_ms()
        stamp = message.get(time_field) if time_field else None
        return stamp if isinstance(stamp, int) else None

    async def _deliver_many(self, route: OutputRoute, items: Sequence[Item]) -> None:
        publish = self._pubsub.publish
        for subjects, message, headers in items:
            for subject in subjects:
                await publish(subject, message, headers)
        if route.writers:
            await self._write(route, items)

    @staticmethod
    async def _write(route: OutputRoute, items: Sequence[Item]) -> None:
        rows = [message for _, message, _ in items]
        traced = [{**message, "msg_id": h.get(ID_HEADER), "cause_id": h.get(CAUSE_HEADER)} for _, message, h in items] if route.traced else rows
        for writer in route.writers:
            batch = traced if writer in route.traced else rows
            if len(batch) == 1:
                await writer.add(batch[0])
            else:
                await writer.add_many(batch)

    # --- causation --------------------------------------------------------------------

    def _stamp(self) -> dict[str, str]:
        """Headers of a new message: its id, and the id of the message being handled (its cause,
        set by the runtime in ``_cause`` while a handler runs)."""
        cause = self._cause
        if cause is None:
            return {ID_HEADER: f"{self._id_prefix}{next(self._ids)}"}
        return {ID_HEADER: f"{self._id_prefix}{next(self._ids)}", CAUSE_HEADER: cause}

    async def offload(self, fn: Callable[..., Any], *args: Any, process: bool = False) -> Any:
        """``fn(*args)`` off the event loop: in a thread, or with ``process=True`` in a worker
        process (CPU-heavy work such as training; ``fn`` must be a module-level function and its
        arguments picklable). The handler waits for the result; other nodes keep running."""
        if self._offloader is None:
            raise RuntimeError(f"{self.service}: offload needs the runtime")
        return await self._offloader.run(fn, *args, process=process)

    async def background(
        self,
        fn: Callable[..., Any],
        *args: Any,
        then: Callable[[Any], Awaitable[None]],
        failed: Callable[[Exception], Awaitable[None]] | None = None,
        process: bool = False,
        name: str | None = None,
    ) -> None:
        """Start :meth:`offload` work and return at once; its result reaches ``then`` later as a
        delivery of its own through this node's mailbox (never during another handler), with
        the message being handled now as its cause. An exception goes to ``failed`` (default:
        counted and logged as a handler failure). Live the node keeps handling messages
        meanwhile; on simulated time the work takes its turn in the run's queue, so the result
        arrives at the same point of every run (see :mod:`framework.runtime.offload`)."""
        if self._background_hook is None or self._offloader is None:
            raise RuntimeError(f"{self.service}: background work needs the runtime")
        offloader = self._offloader

        async def work() -> Any:
            return await offloader.run(fn, *args, process=process)

        await self._background_hook(name or getattr(fn, "__name__", "work"), work, then, failed)

    async def request(self, port: str, message: dict[str, Any], *, timeout: float = 5.0, **values: Any) -> dict[str, Any]:
        """Send ``message`` on output ``port`` to the one service answering there, and return its reply.

        Live this is NATS request/reply; in-process the responder's handler runs and its return
        value is the reply (on simulated time within this very step, so replies are as
        deterministic as the rest). Raises :class:`~framework.transport.base.NoResponders` when
        nobody answers, TimeoutError after ``timeout`` seconds."""
        route = self._route(port)
        if route.contracts and self._validating:
            reason = self._check(route.contracts, message)
            if reason is not None:
                raise ValueError(f"{self.service}: request on {port!r} refused by its contract: {reason}")
        subjects = self._render(route, message, values)
        if type(subjects) is str or len(subjects) != 1:
            raise ValueError(f"{self.service}: a request needs output {port!r} bound to exactly one NATS subject")
        self.metrics.published += 1
        return await self._pubsub.request(subjects[0], message, self._stamp(), timeout)

    def _archive_failed(self, topic: str, message: dict[str, Any], sent: asyncio.Future[Any]) -> None:
        """A record the log did not acknowledge is dead-lettered with the reason, never lost."""
        if sent.cancelled() or sent.exception() is None:
            return
        reason = f"archive to {topic} failed: {type(sent.exception()).__name__}: {sent.exception()}"
        self._pending_dead_letters.add(
            task := asyncio.ensure_future(self.dead_letter(reason, message, origin=f"kafka:{topic}"))
        )
        task.add_done_callback(self._pending_dead_letters.discard)

    async def drain(self) -> None:
        """Wait until every message published so far has reached its subjects and table writers."""
        for outbox in list(self._outboxes.values()):
            await outbox.drain()
        if self._pending_dead_letters:
            await asyncio.gather(*self._pending_dead_letters, return_exceptions=True)

    async def flush(self, *ports: str) -> bool:
        """Make what ``ports`` (default: all) published so far durable: archived, published, and
        written to their tables. True when every row is written (False: a writer is closing
        with rows it could not write; they are spilled, never dropped)."""
        routes = [self._route(p) for p in ports] if ports else list(self._routes.values())
        for route in routes:
            outbox = self._outboxes.get(route.port)
            if outbox is not None:
                await outbox.drain()
        ok = True
        for writer in {id(w): w for route in routes for w in route.writers}.values():
            ok = await writer.flush() and ok
        return ok

    def _check(self, contracts: tuple[Contract, ...], message: Mapping[str, Any]) -> str | None:
        reason = None
        for contract in contracts:
            reason = self._validator.check(contract, message)
            if reason is None:
                return None
        return f"contract {contracts[0].ref}: {reason}"

    async def replay(
        self, port: str, start_ms: int, end_ms: int, *, batch: int = 1000, slack_ms: int = 5_000
    ) -> AsyncIterator[list[Record]]:
        """Records of input ``port``'s Kafka topics stamped ``start_ms <= ts < end_ms``, in batches.

        For ports the topology marks ``replay: true``. Records are stamped with the time
        they became known (:meth:`known_time`); a private reader with no consumer group
        positions every partition by time and reads to where the log ended when the
        replay began (see :meth:`LogTransport.read`).
        """
        topics = self._replay_topics.get(port)
        if not topics:
            raise KeyError(f"{self.service}: input port {port!r} has no Kafka topic marked replay: true")
        async for records in self._log.read(topics, start_ms, end_ms, batch=batch, slack_ms=slack_ms):
            yield records

    def table(self, name: str) -> TableHandle:
        try:
            return self._tables[name]
        except KeyError:
            raise KeyError(
                f"{self.service}: table {name!r} is not declared for this service (add it to `reads` or an output)"
            ) from None

    def fail(self, reason: str) -> None:
        """Declare the run's outcome a failure: a bounded job (a backtest, a download) could not do its work. The
        node goes on as it sees fit (a source usually returns); once the run has stopped, ``fxrun`` prints ``reason``
        and exits 1, so a script or a parent process (a sweep) can tell a failed run from one that finished."""
        if self._fail_hook is None:  # a context outside a runtime (a node's own test): the log says it
            self.log.error("the run failed: %s", reason)
            return
        self._fail_hook(reason)

    async def dead_letter(self, reason: str, payload: Any, origin: str, contract: str | None = None) -> None:
        self.metrics.dead_lettered += 1
        await self._dead_letters.put(self.service, reason, payload, origin, self.clock.now_ms(), contract)

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments[symbol]

    @property
    def account(self) -> Account:
        """The topology's trading account (currency, starting balance, leverage, stop-out)."""
        return self._account
