"""From the topology to running parts: stores and tables, table writers, each service's host and context.

Everything here happens once, at start: the topology's names are resolved to contracts,
subjects, topics and writers, so nothing on the hot path looks anything up by name.
"""

from __future__ import annotations

import functools

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from framework.artifacts import ArtifactStore, StoreTable, files_stores, metadata_table_name, metadata_table_problem
from framework.context import NodeContext, OutputRoute, TableHandle
from framework.contracts import Contract
from framework.durations import parse_seconds
from framework.errors import UserError
from framework.metrics import ServiceMetrics
from framework.refill import Watermarks, refill
from framework.runtime.dispatch import Deliver
from framework.runtime.host import ServiceHost
from framework.sequencing import SequencedInput
from framework.stores.base import open_store
from framework.stores.batch import BatchWriter
from framework.stores.columns import columns_from_contract
from framework.subjects import covers
from framework.topology.templates import compile_renderer
from framework.transport.base import Record, isolated

if TYPE_CHECKING:
    from framework.runtime.core import Runtime

log = logging.getLogger("fxflow.runtime")
ANY_CONTRACT = "any"
REFILL_MARGIN_MS = 5_000
"""Read this much more of the archive before a table's watermark than ``archive_wait`` alone asks."""
TRACE_COLUMNS = {"msg_id": "str?", "cause_id": "str?"}
"""What a table declaring ``trace: true`` keeps of each row's message: its id and its cause's id."""


def contracts_of(rt: Runtime, refs: Sequence[str]) -> tuple[Contract, ...]:
    if ANY_CONTRACT in refs:
        return ()
    return tuple(rt.contracts.resolve(r) for r in refs)


async def open_tables(rt: Runtime) -> None:
    """Connect the stores the selected services use and create their tables (idempotent);
    open the artifact store (the first ``kind: files`` store) and its metadata table."""
    used: dict[str, set[str]] = {}
    for e in rt.wiring.endpoints:
        if e.kind == "table" and e.service in rt.services:
            used.setdefault(e.name, set()).add(e.service)
    files = files_stores(rt.topology)
    artifact_store = next(iter(files), None)
    if artifact_store is not None:
        problem = metadata_table_problem(rt.topology, artifact_store)
        if problem is not None:
            raise UserError(problem, path=f"stores.{artifact_store}")
        used.setdefault(metadata_table_name(files[artifact_store]), set())
    configs: dict[str, object] = {}
    for table_name in used:
        table = rt.topology.tables[table_name]
        store = rt.stores.get(table.store)
        if store is None:
            config = rt.topology.stores[table.store]
            shared = next((rt.stores[n] for n, c in configs.items() if c == config), None)
            if shared is None:
                shared = open_store(table.store, config, str(rt.data_dir))
                await shared.connect()
            store = rt.stores[table.store] = shared
            configs[table.store] = config
        if table.contract:
            contract = rt.contracts.resolve(table.contract)
            columns, time_column = columns_from_contract(contract), contract.time_field
        else:
            columns, time_column = dict(table.columns or {}), None
        if table.trace:
            columns = {**columns, **TRACE_COLUMNS}
        if rt.topology.runtime.retention == "off" and table.retention:
            table = table.model_copy(update={"retention": None})
        await store.ensure_table(table_name, table, columns, time_column)
    if artifact_store is not None:
        config = files[artifact_store]
        table_name = metadata_table_name(config)
        metadata = StoreTable(rt.stores[rt.topology.tables[table_name].store], table_name)
        rt.artifacts = ArtifactStore.from_config(artifact_store, config, metadata, rt.clock, data_dir=rt.data_dir)


def writer_for(rt: Runtime, service: str, table_name: str) -> BatchWriter:
    key = (service, table_name)
    writer = rt.writers.get(key)
    if writer is None:
        settings = rt.topology.runtime
        table = rt.topology.tables[table_name]
        writer = rt.writers[key] = BatchWriter(
            rt.stores[table.store],
            table_name,
            batch_size=settings.batch_size,
            interval=parse_seconds(settings.batch_interval),
            spill_dir=rt.data_dir / "spill" / service,
        )
        writer.start()
    return writer


def build_host(rt: Runtime, name: str) -> ServiceHost:
    service = rt.topology.services[name]
    spec = rt.registry.get(service.node)
    node_cls = spec.load()
    params = spec.params.model_validate(service.params)
    routes: dict[str, OutputRoute] = {}
    tables: dict[str, TableHandle] = {}
    for port, binding in service.outputs.items():
        declared = spec.outputs.get(port)
        refs = declared.contracts if declared else tuple(binding.contracts)
        route = routes[port] = OutputRoute(port=port, contracts=contracts_of(rt, refs))
        key_field = route.contracts[0].key_field if route.contracts else None
        route.subjects = [(t, compile_renderer(t)) for t in binding.subjects]
        route.topics = [(t, rt.topology.topics[t].key or key_field) for t in binding.topics if t in rt.archived_topics]
        route.time_field = route.contracts[0].time_field if route.contracts else None
        for table_name in binding.table_names:
            writer = writer_for(rt, name, table_name)
            route.writers.append(writer)
            if rt.topology.tables[table_name].trace:
                route.traced.append(writer)
            tables[table_name] = TableHandle(table_name, writer.store, writer)
    for table_name in service.reads:
        if table_name not in tables:
            store = rt.stores[rt.topology.tables[table_name].store]
            tables[table_name] = TableHandle(table_name, store, None)
    metrics = ServiceMetrics(name)
    assert rt.pubsub is not None and rt.log is not None and rt.dead_letters is not None
    ctx = NodeContext(
        name,
        clock=rt.clock,
        pubsub=rt.dispatch.publisher(rt.pubsub),
        log=rt.log,
        validator=rt.validator,
        dead_letters=rt.dead_letters,
        metrics=metrics,
        routes=routes,
        tables=tables,
        pairs=rt.pairs,
        timeframes=rt.topology.timeframes,
        instruments=rt.topology.instruments,
        account=rt.topology.account,
        data_dir=rt.data_dir / "services" / name,
        replay_topics={port: tuple(b.topics) for port, b in service.inputs.items() if b.replay and b.topics},
        archive_wait=parse_seconds(rt.topology.runtime.archive_wait),
        id_epoch=rt.id_epoch,
    )
    if rt.artifacts is not None:
        ctx.artifacts = rt.artifacts.for_service(name)
    host = ServiceHost(name, service, spec, node_cls, params, ctx, metrics, rt, routes=routes)
    ctx._offloader = rt.offloader
    ctx.config_hash = rt.config_hash
    ctx.system = rt.system
    ctx._background_hook = functools.partial(rt.dispatch.background, host)
    ctx._fail_hook = functools.partial(rt.fail, name)
    archived = {w.table: w for route in routes.values() if route.topics for w in route.writers}
    if archived:
        host.watermarks = Watermarks(rt.data_dir / "services" / name, archived, rt.clock)
    return host


async def refill_host(rt: Runtime, host: ServiceHost) -> None:
    """Rows a crash kept from this service's archived tables, written again from the archive."""
    marks = host.watermarks
    if marks is None:
        return
    if not marks.clean:
        assert rt.log is not None
        margin = int(parse_seconds(rt.topology.runtime.archive_wait) * 1000) + REFILL_MARGIN_MS
        for route in host.routes.values():
            topics = tuple(t for t, _ in route.topics)
            for writer in route.writers if topics else ():
                mark = marks.marks.get(writer.table)
                if mark is None:
                    continue
                count = await refill(host.name, rt.log, topics, writer, mark - margin)
                if count:
                    log.info(
                        "service %s: %d row(s) of %s archived since its last complete write were written again "
                        "(refill after a crash)",
                        host.name, count, writer.table,
                    )  # fmt: skip
    start = rt.clock.now_ms() if getattr(rt.clock, "started", True) else 0
    for table in marks.writers:  # a first start: complete up to now, so a crash before the first checkpoint refills
        marks.marks.setdefault(table, start)
    marks.save(clean=False)  # from here on, a crash needs a refill


def sequenced(rt: Runtime, host: ServiceHost, port: str, deliver: Deliver) -> Deliver:
    """``deliver``, made exactly-once and gap-filled when the port's NATS input has an archive
    to replay from and its contract numbers the messages (see :mod:`framework.sequencing`)."""
    binding = host.service.inputs[port]
    if not (binding.replay and binding.topics and binding.subjects):
        return deliver
    declared = host.spec.inputs.get(port)
    refs = declared.contracts if declared else tuple(binding.contracts)
    contract = next(iter(contracts_of(rt, refs)), None)
    if contract is None or contract.sequence_field is None:
        return deliver
    topics = tuple(binding.topics)
    log_transport = rt.log
    assert log_transport is not None

    def replay(start_ms: int, end_ms: int) -> AsyncIterator[list[Record]]:
        return log_transport.read(topics, start_ms, end_ms, slack_ms=REFILL_MARGIN_MS)

    wrapped = SequencedInput(
        host.name,
        port,
        deliver,
        replay,
        sequence_field=contract.sequence_field,
        stream_fields=contract.stream_fields,
        time_field=contract.time_field,
        spawn=rt.spawn,
        accepts=subscribed(rt, host, port),
        began_ms=rt.clock.now_ms(),
    )
    host.sequenced.append(wrapped)
    follow_outages(rt)
    return isolated(wrapped)


def input_patterns(rt: Runtime, service: str, port: str) -> list[str]:
    """The subjects (patterns) an input port subscribes to, each once."""
    found = [s for e in rt.wiring.of(service) if e.port == port and e.kind == "nats" and e.direction == "in" for s in e.subjects]
    return list(dict.fromkeys(found))


def subscribed(rt: Runtime, host: ServiceHost, port: str) -> Callable[[Mapping[str, Any]], bool]:
    """Whether a message (read from the port's archive) would have reached ``port`` over NATS:
    one of the binding's subject templates, filled from it, lies within a subject the port subscribes to."""
    patterns = input_patterns(rt, host.name, port)
    renderers = [compile_renderer(t) for t in host.service.inputs[port].subjects]

    def accepts(message: Mapping[str, Any]) -> bool:
        for render in renderers:
            try:
                subject = render(message)
                if any(covers(pattern, subject) for pattern in patterns):
                    return True
            except (KeyError, ValueError):
                continue
        return False

    return accepts


def follow_outages(rt: Runtime) -> None:
    """Once per runtime: after the pub/sub connection comes back, sequenced inputs replay the outage."""
    if rt.outage_listener:
        return
    rt.outage_listener = True
    assert rt.pubsub is not None
    down: list[int] = []

    def changed(up: bool) -> None:
        now = rt.clock.now_ms()
        if not up:
            down.append(now)
            return
        start = down.pop() if down else now
        down.clear()
        for host in rt.hosts.values():
            for wrapped in host.sequenced:
                wrapped.outage(start, now)

    rt.pubsub.on_connection(changed)
