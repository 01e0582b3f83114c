"""The generic runtime: topology → registry → contracts → nodes on transports and stores.

Start-up order follows the dependency graph (an edge runs from a publisher to each service
that consumes its output): every subscription is live before any node starts, then nodes
start consumers-first so nothing a producer emits at start-up is lost; shutdown stops
producers first so in-flight messages drain downstream, then flushes table batches,
commits log offsets and closes transports.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from framework.clock import Clock, SimulatedClock, WallClock
from framework.context import NodeContext, OutputRoute, TableHandle
from framework.contracts import BoundaryValidator, Contract, ContractRegistry
from framework.deadletter import TRANSPORT_SERVICE, DeadLetters
from framework.durations import parse_seconds
from framework.errors import UserError
from framework.metrics import ServiceMetrics
from framework.node import Node, timer_seconds
from framework.refill import Watermarks, refill
from framework.registry import NodeSpec, Registry
from framework.sequencing import SequencedInput
from framework.stores.base import Store, open_store
from framework.stores.batch import BatchWriter
from framework.stores.columns import columns_from_contract
from framework.subjects import intersects
from framework.topology.model import Service, Topology
from framework.topology.templates import compile_renderer
from framework.transport.base import (
    LogConsumer,
    LogTransport,
    PubSubTransport,
    Record,
    Subscription,
    TopicSpec,
    TransportError,
    isolated,
)
from framework.wiring import Endpoint, Wiring, resolve

log = logging.getLogger("fxflow.runtime")
ANY_CONTRACT = "any"
REFILL_MARGIN_MS = 5_000
"""Read this much more of the archive before a table's watermark than ``archive_wait`` alone asks."""
_starting: contextvars.ContextVar[tuple[str, asyncio.Task[Any] | None] | None] = contextvars.ContextVar("fxflow_starting", default=None)


def _starting_here() -> str | None:
    """The service whose ``on_start`` is running on this very task (tasks it spawns inherit the context, not the role)."""
    state = _starting.get()
    if state is not None and state[1] is asyncio.current_task():
        return state[0]
    return None


def dependency_order(wiring: Wiring, services: Sequence[str]) -> list[str]:
    """Publishers before their consumers.

    Services on a cycle (execution ⇄ broker) form one strongly connected component; the
    components are ordered topologically and a component keeps declaration order inside,
    so a service downstream of a cycle still comes after every member of it.
    """
    outs: dict[str, list[Endpoint]] = {s: [] for s in services}
    ins: dict[str, list[Endpoint]] = {s: [] for s in services}
    for e in wiring.endpoints:
        if e.service in outs:
            (outs if e.direction == "out" else ins)[e.service].append(e)
    edges: dict[str, list[str]] = {s: [] for s in services}
    for a in services:
        for b in services:
            if a != b and any(_reaches(o, i) for o in outs[a] for i in ins[b]):
                edges[a].append(b)
    return order_graph(list(services), edges)


def order_graph(nodes: list[str], edges: dict[str, list[str]]) -> list[str]:
    """Topological order of ``nodes`` with cycles collapsed (Tarjan), stable by position."""
    position = {n: i for i, n in enumerate(nodes)}
    component: dict[str, int] = {}
    components: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(root: str) -> None:
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = len(components)
                    members.append(member)
                    if member == node:
                        break
                components.append(sorted(members, key=position.__getitem__))

    for n in nodes:
        if n not in index:
            visit(n)
    successors: dict[int, set[int]] = {c: set() for c in range(len(components))}
    indegree = dict.fromkeys(range(len(components)), 0)
    for a in nodes:
        for b in edges[a]:
            ca, cb = component[a], component[b]
            if ca != cb and cb not in successors[ca]:
                successors[ca].add(cb)
                indegree[cb] += 1
    first = {c: position[members[0]] for c, members in enumerate(components)}
    ready = sorted((c for c, d in indegree.items() if d == 0), key=first.__getitem__)
    order: list[str] = []
    while ready:
        c = ready.pop(0)
        order.extend(components[c])
        for succ in successors[c]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
        ready.sort(key=first.__getitem__)
    return order


def _make_clock(settings: Any) -> Clock:
    if settings.clock == "simulated":
        return SimulatedClock()
    from framework.params import utc_ms

    origin = utc_ms(settings.clock_origin) if settings.clock_origin else None
    return WallClock(settings.clock_speed, origin)


def _not_running_reason(host: ServiceHost) -> str:
    if host.metrics.state == "failed":
        return f"service {host.name} gave up after repeated failures (see its last_error)"
    starting = _starting_here()
    if starting is not None:
        return f"published by {starting} during its on_start, before {host.name} had started (a start-up cycle)"
    return f"service {host.name} is stopping"


def _reaches(out: Endpoint, inp: Endpoint) -> bool:
    if out.kind != inp.kind:
        return False
    if out.kind == "kafka":
        return out.name == inp.name
    return any(intersects(p, s) for p in inp.subjects for s in out.subjects)


@dataclass
class ServiceHost:
    """One service: its node instance, its wiring, its supervision (restart with backoff)."""

    name: str
    service: Service
    spec: NodeSpec
    node_cls: type[Node]
    params: Any
    ctx: NodeContext
    metrics: ServiceMetrics
    runtime: Runtime
    node: Node | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    consumers: list[LogConsumer] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    consume_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    routes: dict[str, OutputRoute] = field(default_factory=dict)
    sequenced: list[SequencedInput] = field(default_factory=list)
    watermarks: Watermarks | None = None
    consecutive_failures: int = 0
    finished: bool = False
    restarting: bool = False
    healthy_since: float = 0.0
    closing: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _signal_change(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def gone(self) -> bool:
        """The node will not run again in this process (stopping, or given up)."""
        return self.closing or self.runtime.halting or self.metrics.state == "failed"

    async def wait_for_node(self) -> Node | None:
        """The running node, once it is (re)started; ``None`` if it will not run again.

        A message that arrives while its node starts or restarts waits for it instead of
        being turned away (a consumer group's backlog at start-up, a JetStream redelivery).
        Inline in-process delivery from another node's ``on_start`` cannot wait (that
        start is what the waiting would block), so it gets ``None`` too.
        """
        while self.node is None or self.restarting:
            if self.gone or _starting_here() is not None:
                return None
            waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(self.runtime.halt_event.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        return self.node

    def handler_for(self, port: str) -> Callable[[str, dict[str, Any], Any], Awaitable[None]]:
        method = self.node_cls.handlers().get(port)
        if method is None:
            raise UserError(f"service {self.name!r}: node {self.spec.name!r} has no handler for input port {port!r}")
        params = inspect.signature(getattr(self.node_cls, method)).parameters
        wants_origin = len(params) >= 3
        metrics = self.metrics
        per_port = metrics.per_port
        perf = time.perf_counter

        async def deliver(origin: str, message: dict[str, Any], headers: Any = None) -> None:
            metrics.received += 1
            per_port[port] = per_port.get(port, 0) + 1
            node = self.node
            if node is None or self.restarting:
                node = await self.wait_for_node()
                if node is None:
                    reason = _not_running_reason(self)
                    await self.ctx.dead_letter(reason, message, origin)
                    return
            started = perf()
            try:
                fn = getattr(node, method)
                await (fn(message, origin) if wants_origin else fn(message))
                self.consecutive_failures = 0
            except Exception as exc:
                await self._failed(exc, message, origin)
            finally:
                metrics.observe_latency(perf() - started)

        return isolated(deliver)

    async def _failed(self, exc: Exception, message: Any, origin: str) -> None:
        self.metrics.errors += 1
        self.metrics.last_error = f"{type(exc).__name__}: {exc}"
        self.consecutive_failures += 1
        first = self.metrics.errors == 1
        log.error(
            "service %s (node %s): handler failed on %s: %s: %s",
            self.name,
            self.spec.name,
            origin,
            type(exc).__name__,
            exc,
            exc_info=exc if first or log.isEnabledFor(logging.DEBUG) else None,
        )
        await self.ctx.dead_letter(f"handler error: {type(exc).__name__}: {exc}", message, origin)
        if self.consecutive_failures >= self.runtime.topology.runtime.restart.failures_before_restart:
            self.schedule_restart(f"{self.consecutive_failures} consecutive handler failures")

    async def start(self) -> None:
        node = self.node_cls(self.ctx, self.params)
        token = _starting.set((self.name, asyncio.current_task()))
        try:
            await node.on_start()
        finally:
            _starting.reset(token)
        self.node = node
        self.healthy_since = time.monotonic()
        self._signal_change()
        for method, interval in self.node_cls.timers().items():
            seconds = timer_seconds(interval, self.params)
            self.tasks.append(asyncio.create_task(self._timer(method, seconds), name=f"{self.name}.{method}"))
        if self.node_cls.overrides_run():
            self.finished = False
            self.tasks.append(asyncio.create_task(self._run(), name=f"{self.name}.run"))
        self.metrics.state = "running"

    async def _timer(self, method: str, seconds: float) -> None:
        clock = self.ctx.clock
        while True:
            await clock.sleep(seconds)
            node = self.node
            if node is None:
                continue
            try:
                await getattr(node, method)()
            except Exception as exc:
                await self._failed(exc, None, f"timer:{method}")

    async def _run(self) -> None:
        assert self.node is not None
        try:
            await self.node.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.errors += 1
            self.metrics.last_error = f"{type(exc).__name__}: {exc}"
            log.error("service %s (node %s): run() crashed: %s: %s", self.name, self.spec.name, type(exc).__name__, exc, exc_info=exc)
            self.schedule_restart(f"run() crashed: {exc}")
            return
        self.finished = True
        self.metrics.state = "finished"
        self.runtime.notify_finished()

    def schedule_restart(self, reason: str) -> None:
        if not self.restarting:
            self.restarting = True
            self._signal_change()
            self.runtime.spawn(self._restart(reason), f"{self.name}.restart")

    async def _restart(self, reason: str) -> None:
        policy = self.runtime.topology.runtime.restart
        self.metrics.state = "restarting"
        healthy_for = time.monotonic() - self.healthy_since if self.node is not None else 0.0
        await self.stop_node(cancel_current=False)
        if self.metrics.restarts and healthy_for >= policy.reset_after_s:
            log.info("service %s: ran %.0fs without failing since its last restart; restart budget reset", self.name, healthy_for)
            self.metrics.restarts = 0
        if self.metrics.restarts >= policy.max_restarts:
            self._give_up(f"giving up after {self.metrics.restarts} restarts ({reason}); the other services keep running")
            return
        delay = min(policy.backoff_initial * (2 ** self.metrics.restarts), policy.backoff_max)
        log.warning("service %s: restarting in %.2fs (%s)", self.name, delay, reason)
        try:
            await asyncio.wait_for(self.runtime.halt_event.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass
        if self.runtime.halting or self.closing:
            log.warning("service %s: not restarted, the runtime is stopping (%s)", self.name, reason)
            self.restarting = False
            self.metrics.state = "stopped"
            self._signal_change()
            return
        self.metrics.restarts += 1
        self.consecutive_failures = 0
        self.restarting = False
        try:
            await self.start()
        except Exception as exc:
            self.metrics.errors += 1
            self.metrics.last_error = f"{type(exc).__name__}: {exc}"
            log.error("service %s (node %s): on_start failed: %s: %s", self.name, self.spec.name, type(exc).__name__, exc, exc_info=exc)
            self.schedule_restart(f"on_start failed: {exc}")

    def _give_up(self, message: str) -> None:
        self.metrics.state = "failed"
        log.error("service %s: %s", self.name, message)
        self.restarting = False
        self.finished = True
        self._signal_change()
        self.runtime.notify_finished()

    async def stop_node(self, cancel_current: bool = True) -> None:
        current = asyncio.current_task()
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        node, self.node = self.node, None
        self._signal_change()
        if node is not None:
            try:
                await node.on_stop()
            except Exception as exc:
                log.error("service %s: on_stop failed: %s", self.name, exc)
        await self.ctx.drain()


class Runtime:
    def __init__(
        self,
        topology: Topology,
        registry: Registry,
        contracts: ContractRegistry,
        *,
        pairs: Sequence[str] | None = None,
        only: Sequence[str] | None = None,
        data_dir: Path | str = ".fxrun",
        pubsub: PubSubTransport | None = None,
        log_transport: LogTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.topology = topology
        self.registry = registry
        self.contracts = contracts
        self.pairs = list(pairs or topology.instruments)
        self.data_dir = Path(data_dir)
        self.wiring = resolve(topology, registry, self.pairs)
        self.services = self._select(only)
        settings = topology.runtime
        self.clock = clock or _make_clock(settings)
        self.pubsub = pubsub
        self.log = log_transport
        self.validator = BoundaryValidator(settings.validation, settings.sample_every)
        self.hosts: dict[str, ServiceHost] = {}
        self.stores: dict[str, Store] = {}
        self._store_configs: dict[str, Any] = {}
        self.writers: dict[tuple[str, str], BatchWriter] = {}
        self.dead_letters: DeadLetters | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._halt = asyncio.Event()
        self._drain = False
        self._started = False
        self._outage_listener = False
        self.order: list[str] = []
        self.observability: Any = None

    def _select(self, only: Sequence[str] | None) -> list[str]:
        chosen = []
        for name, service in self.topology.services.items():
            if only and name not in only:
                continue
            if not service.enabled:
                if only:
                    raise UserError(f"service {name!r} is disabled (enabled: false) and cannot be run")
                continue
            chosen.append(name)
        return chosen

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _open_transports(self) -> None:
        if self.pubsub is None:
            self.pubsub = self._make_pubsub()
        if self.log is None:
            self.log = self._make_log()
        await self.pubsub.connect()
        await self.log.connect()

    @property
    def process_name(self) -> str:
        """How this process names itself to servers and in errors: its services."""
        return ",".join(self.services) or "fxflow"

    def _make_pubsub(self) -> PubSubTransport:
        from framework.transport.factory import make_pubsub

        return make_pubsub(self.topology, service=self.process_name, on_undecodable=self._undecodable)

    def _make_log(self) -> LogTransport:
        from framework.transport.factory import make_log

        return make_log(self.topology, service=self.process_name, data_dir=self.data_dir, on_undecodable=self._undecodable)

    def _undecodable(self, origin: str, raw: bytes, reason: str) -> None:
        """A message no codec could read still reaches the dead letters (it is never only logged)."""
        payload = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else raw
        if self.dead_letters is None:
            log.error("undecodable message on %s before start: %s", origin, reason)
            return
        self.spawn(
            self.dead_letters.put(TRANSPORT_SERVICE, f"undecodable: {reason}", payload, str(origin), self.clock.now_ms()),
            "dead-letter",
        )

    def _contracts_of(self, refs: Sequence[str]) -> tuple[Contract, ...]:
        if ANY_CONTRACT in refs:
            return ()
        return tuple(self.contracts.resolve(r) for r in refs)

    async def _open_tables(self) -> None:
        used: dict[str, set[str]] = {}
        for e in self.wiring.endpoints:
            if e.kind == "table" and e.service in self.services:
                used.setdefault(e.name, set()).add(e.service)
        for table_name in used:
            table = self.topology.tables[table_name]
            store = self.stores.get(table.store)
            if store is None:
                config = self.topology.stores[table.store]
                shared = next((self.stores[n] for n, c in self._store_configs.items() if c == config), None)
                if shared is None:
                    shared = open_store(table.store, config, str(self.data_dir))
                    await shared.connect()
                store = self.stores[table.store] = shared
                self._store_configs[table.store] = config
            if table.contract:
                contract = self.contracts.resolve(table.contract)
                columns, time_column = columns_from_contract(contract), contract.time_field
            else:
                columns, time_column = dict(table.columns or {}), None
            if self.topology.runtime.retention == "off" and table.retention:
                table = table.model_copy(update={"retention": None})
            await store.ensure_table(table_name, table, columns, time_column)

    def _writer(self, service: str, table_name: str) -> BatchWriter:
        key = (service, table_name)
        writer = self.writers.get(key)
        if writer is None:
            settings = self.topology.runtime
            table = self.topology.tables[table_name]
            writer = self.writers[key] = BatchWriter(
                self.stores[table.store],
                table_name,
                batch_size=settings.batch_size,
                interval=parse_seconds(settings.batch_interval),
                spill_dir=self.data_dir / "spill" / service,
            )
            writer.start()
        return writer

    def _build_host(self, name: str) -> ServiceHost:
        service = self.topology.services[name]
        spec = self.registry.get(service.node)
        node_cls = spec.load()
        params = spec.params.model_validate(service.params)
        routes: dict[str, OutputRoute] = {}
        tables: dict[str, TableHandle] = {}
        for port, binding in service.outputs.items():
            declared = spec.outputs.get(port)
            refs = declared.contracts if declared else tuple(binding.contracts)
            route = routes[port] = OutputRoute(port=port, contracts=self._contracts_of(refs))
            key_field = route.contracts[0].key_field if route.contracts else None
            route.subjects = [(t, compile_renderer(t)) for t in binding.subjects]
            route.topics = [(t, self.topology.topics[t].key or key_field) for t in binding.topics]
            route.time_field = route.contracts[0].time_field if route.contracts else None
            for table_name in binding.table_names:
                writer = self._writer(name, table_name)
                route.writers.append(writer)
                tables[table_name] = TableHandle(table_name, writer.store, writer)
        for table_name in service.reads:
            if table_name not in tables:
                store = self.stores[self.topology.tables[table_name].store]
                tables[table_name] = TableHandle(table_name, store, None)
        metrics = ServiceMetrics(name)
        assert self.pubsub is not None and self.log is not None and self.dead_letters is not None
        ctx = NodeContext(
            name,
            clock=self.clock,
            pubsub=self.pubsub,
            log=self.log,
            validator=self.validator,
            dead_letters=self.dead_letters,
            metrics=metrics,
            routes=routes,
            tables=tables,
            pairs=self.pairs,
            timeframes=self.topology.timeframes,
            instruments=self.topology.instruments,
            data_dir=self.data_dir / "services" / name,
            replay_topics={port: tuple(b.topics) for port, b in service.inputs.items() if b.replay and b.topics},
            archive_wait=parse_seconds(self.topology.runtime.archive_wait),
        )
        host = ServiceHost(name, service, spec, node_cls, params, ctx, metrics, self, routes=routes)
        archived = {w.table: w for route in routes.values() if route.topics for w in route.writers}
        if archived:
            host.watermarks = Watermarks(self.data_dir / "services" / name, archived, self.clock)
        return host

    async def _refill(self, host: ServiceHost) -> None:
        """Rows a crash kept from this service's archived tables, written again from the archive."""
        marks = host.watermarks
        if marks is None:
            return
        if not marks.clean:
            assert self.log is not None
            margin = int(parse_seconds(self.topology.runtime.archive_wait) * 1000) + REFILL_MARGIN_MS
            for route in host.routes.values():
                topics = tuple(t for t, _ in route.topics)
                for writer in route.writers if topics else ():
                    mark = marks.marks.get(writer.table)
                    if mark is None:
                        continue
                    count = await refill(host.name, self.log, topics, writer, mark - margin)
                    if count:
                        log.info(
                            "service %s: %d row(s) of %s archived since its last complete write were written again "
                            "(refill after a crash)",
                            host.name, count, writer.table,
                        )  # fmt: skip
        marks.save(clean=False)  # from here on, a crash needs a refill

    def _sequenced(self, host: ServiceHost, port: str, deliver: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``deliver``, made exactly-once and gap-filled when the port's NATS input has an archive
        to replay from and its contract numbers the messages (see :mod:`framework.sequencing`)."""
        binding = host.service.inputs[port]
        if not (binding.replay and binding.topics and binding.subjects):
            return deliver
        declared = host.spec.inputs.get(port)
        refs = declared.contracts if declared else tuple(binding.contracts)
        contract = next(iter(self._contracts_of(refs)), None)
        if contract is None or contract.sequence_field is None:
            return deliver
        topics = tuple(binding.topics)
        log_transport = self.log
        assert log_transport is not None

        def replay(start_ms: int, end_ms: int) -> AsyncIterator[list[Record]]:
            return log_transport.read(topics, start_ms, end_ms, slack_ms=REFILL_MARGIN_MS)

        sequenced = SequencedInput(
            host.name,
            port,
            deliver,
            replay,
            sequence_field=contract.sequence_field,
            stream_fields=contract.stream_fields,
            time_field=contract.time_field,
            spawn=self.spawn,
        )
        host.sequenced.append(sequenced)
        self._follow_outages()
        return isolated(sequenced)

    def _follow_outages(self) -> None:
        """Once per runtime: after the pub/sub connection comes back, sequenced inputs replay the outage."""
        if self._outage_listener:
            return
        self._outage_listener = True
        assert self.pubsub is not None
        down: list[int] = []

        def changed(up: bool) -> None:
            now = self.clock.now_ms()
            if not up:
                down.append(now)
                return
            start = down.pop() if down else now
            down.clear()
            for host in self.hosts.values():
                for sequenced in host.sequenced:
                    sequenced.outage(start, now)

        self.pubsub.on_connection(changed)

    async def _wire_inputs(self, host: ServiceHost) -> None:
        assert self.pubsub is not None and self.log is not None
        service = host.service
        for port, binding in service.inputs.items():
            deliver = self._sequenced(host, port, host.handler_for(port))
            queue = binding.queue or (host.name if service.replicas > 1 else None)
            patterns = [s for e in self.wiring.of(host.name) if e.port == port and e.kind == "nats" and e.direction == "in" for s in e.subjects]
            for pattern in dict.fromkeys(patterns):
                host.subscriptions.append(await self.pubsub.subscribe(pattern, deliver, queue=queue, owner=host.name))
            if binding.topics and not binding.replay:
                consumer = self.log.consumer(binding.group or host.name, binding.topics)
                await consumer.start()
                host.consumers.append(consumer)
                host.consume_tasks.append(asyncio.create_task(self._consume(host, consumer, deliver), name=f"{host.name}.{port}"))

    async def _consume(self, host: ServiceHost, consumer: LogConsumer, deliver: Callable[..., Awaitable[None]]) -> None:
        """At-least-once: commit only what was handled (or dead-lettered by its handler).

        Nothing is fetched before the node runs, and a record whose node is restarting waits
        for it. If the node will not run again (the process is stopping mid-restart, or the
        node gave up), the loop commits what was handled and leaves the rest uncommitted, so
        the group redelivers it to the next run instead of dead-lettering a backlog. On a
        requested stop the loop ends after the current batch; when the run ends because every
        source finished, it first drains what is already in the log (nothing is left behind
        in a backtest, whose log is not persisted).
        """
        if await host.wait_for_node() is None:
            return
        while True:
            stopping = self._stop.is_set()
            if stopping and not self._drain:
                return
            records = await consumer.getmany(timeout_ms=0 if stopping else 200, max_records=500)
            handled: dict[tuple[str, int], int] = {}
            for record in records:
                if (host.node is None or host.restarting) and await host.wait_for_node() is None:
                    await self._commit(consumer, handled)
                    if host.metrics.state == "failed":
                        log.error("service %s failed; its records from %s stay uncommitted for the next run", host.name, record.topic)
                    return
                await deliver(f"{record.topic}[{record.partition}]@{record.offset}", record.value, record.headers)
                handled[(record.topic, record.partition)] = record.offset + 1
            if records:
                await self._commit(consumer, handled)
            elif stopping:
                return

    @staticmethod
    async def _commit(consumer: LogConsumer, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except TransportError as exc:
            log.warning("commit failed (%s); the group will redeliver those records", exc)

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("runtime already started")
        self._started = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self._open_transports()
        assert self.pubsub is not None and self.log is not None
        self.dead_letters = DeadLetters(self.data_dir / "deadletter", publish=self.pubsub.publish)
        used_topics = {e.name for e in self.wiring.endpoints if e.kind == "kafka" and e.service in self.services}
        await self.log.ensure_topics(
            TopicSpec(name, t.partitions or 1, t.retention_ms, t.cleanup)
            for name, t in self.topology.topics.items()
            if name in used_topics
        )
        await self._open_tables()
        for name in self.services:
            self.hosts[name] = self._build_host(name)
            await self._refill(self.hosts[name])
        self.order = dependency_order(self.wiring, self.services)
        port = self.topology.runtime.metrics_port
        if port is not None:
            from framework.observability import start_observability

            try:
                self.observability = await start_observability(self.metrics, port=port)
            except OSError as exc:
                raise UserError(
                    f"cannot serve metrics on port {port}: {exc.strerror or exc}; pick another port, or 0 for any free one",
                    path="runtime.metrics_port",
                ) from None
            log.info("metrics on http://127.0.0.1:%d/metrics, health on /health", self.observability.port)
        await asyncio.gather(*(self._wire_inputs(self.hosts[name]) for name in self.order))
        for name in reversed(self.order):
            host = self.hosts[name]
            try:
                await host.start()
            except UserError:
                raise
            except Exception as exc:
                # isolated like a failure after start: the others run, this one retries with backoff
                host.metrics.errors += 1
                host.metrics.last_error = f"{type(exc).__name__}: {exc}"
                log.error("service %s (node %s): on_start failed: %s: %s", name, host.spec.name, type(exc).__name__, exc, exc_info=exc)
                host.schedule_restart(f"on_start failed: {exc}")
                continue
            log.info("service %s started (%s)", name, host.spec.name)
        interval = parse_seconds(self.topology.runtime.metrics_interval)
        self.spawn(self._write_metrics_periodically(interval), "metrics")
        if any(h.watermarks is not None for h in self.hosts.values()):
            self.spawn(self._track_watermarks(), "watermarks")
        if isinstance(self.clock, SimulatedClock):
            self.spawn(self._watch_for_stall(), "stall-watch")
        for store in {id(s): s for s in self.stores.values()}.values():
            self.spawn(self._maintain_periodically(store), f"maintain-{store.name}")

    def notify_finished(self) -> None:
        sources = [h for h in self.hosts.values() if h.node_cls.overrides_run()]
        if not sources:
            return
        waiting = [h for h in sources if not h.finished]
        if waiting and self._stalled(waiting):
            log.warning(
                "%s wait(s) for simulated time, but no source is left to move it; stopping",
                ", ".join(h.name for h in waiting),
            )
            waiting = []
        if not waiting:
            log.info("every source has finished; stopping")
            self._drain = True
            for host in self.hosts.values():
                host.ctx.input_complete = True
            self._stop.set()

    def _stalled(self, waiting: list[ServiceHost]) -> bool:
        """Every unfinished source sleeps on the simulated clock: nothing can ever wake it."""
        clock = self.clock
        if not isinstance(clock, SimulatedClock):
            return False
        runs = [next((t for t in h.tasks if t.get_name() == f"{h.name}.run"), None) for h in waiting]
        return all(clock.asleep(task) for task in runs)

    def request_stop(self) -> None:
        self._halt.set()
        self._stop.set()

    @property
    def halting(self) -> bool:
        """A stop was requested (not the drain that follows when every source finished)."""
        return self._halt.is_set()

    @property
    def halt_event(self) -> asyncio.Event:
        return self._halt

    async def wait(self, duration: float | None = None) -> None:
        """Until stop is requested, every source finished, or ``duration`` seconds passed."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=duration)
        except asyncio.TimeoutError:
            pass

    async def run(self, duration: float | None = None) -> None:
        try:
            await self.start()
        except BaseException:
            await self._stop_quietly()
            raise
        try:
            await self.wait(duration)
        finally:
            await self.stop()

    async def _stop_quietly(self) -> None:
        """Release whatever a failed start had opened; the start's own error is what gets reported."""
        try:
            await self.stop()
        except Exception as exc:
            log.debug("cleanup after a failed start: %s", exc)

    async def stop(self) -> None:
        """Producers first: each service stops taking input, finishes what it holds, flushes."""
        if not self._drain:
            self._halt.set()
        self._stop.set()
        if self.observability is not None:
            await self.observability.close()
            self.observability = None
        for name in self.order:
            host = self.hosts[name]
            for sub in host.subscriptions:
                await sub.unsubscribe()
            await asyncio.gather(*host.consume_tasks, return_exceptions=True)
            for sequenced in host.sequenced:
                await (sequenced.drain() if self._drain else sequenced.cancel())
            for consumer in host.consumers:
                await consumer.stop()
            host.closing = True
            host._signal_change()
            await host.stop_node()
            if host.metrics.state != "failed":
                host.metrics.state = "stopped"
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for writer in self.writers.values():
            await writer.close()
        for host in self.hosts.values():
            if host.watermarks is not None:
                host.watermarks.close()
        if self.pubsub is not None:
            await self.pubsub.close()
        if self.log is not None:
            await self.log.flush()
            await self.log.close()
        for store in {id(s): s for s in self.stores.values()}.values():
            await store.close()
        if self.dead_letters is not None:
            self.dead_letters.close()
        self.write_metrics()

    def metrics(self) -> list[dict[str, Any]]:
        """Per-service counters, each with the state of its table writers."""
        out = []
        for name in self.order:
            snapshot = self.hosts[name].metrics.snapshot()
            snapshot["tables"] = [w.stats for (service, _), w in self.writers.items() if service == name]
            if self.hosts[name].sequenced:
                snapshot["sequenced"] = {s.port: s.stats for s in self.hosts[name].sequenced}
            out.append(snapshot)
        return out

    def write_metrics(self) -> None:
        path = self.data_dir / "metrics.json"
        tmp = path.with_suffix(".tmp")
        snapshot = {
            "ts": int(time.time() * 1000),
            "services": self.metrics(),
            "pubsub": self.pubsub.stats() if self.pubsub is not None else {},
        }
        tmp.write_bytes(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str))
        tmp.replace(path)

    async def _maintain_periodically(self, store: Store, every_s: float = 3600.0) -> None:
        """Store housekeeping (PostgreSQL: create partitions ahead, drop expired ones)."""
        while True:
            try:
                await store.maintain()
            except Exception as exc:
                log.error("maintenance of store %s failed (will retry): %s", store.name, exc)
            await asyncio.sleep(every_s)

    async def _watch_for_stall(self, every_s: float = 0.25) -> None:
        """A source may fall asleep on the simulated clock after the last other one finished."""
        while not self._stop.is_set():
            await asyncio.sleep(every_s)
            if any(h.finished for h in self.hosts.values() if h.node_cls.overrides_run()):
                self.notify_finished()

    async def _track_watermarks(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            for host in self.hosts.values():
                if host.watermarks is not None:
                    host.watermarks.tick()

    async def _write_metrics_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.write_metrics()
