"""The run: start the services in dependency order, keep them going, stop them cleanly.

Start-up follows the dependency graph (:mod:`framework.runtime.graph`): every subscription is
live before any node starts, then nodes start consumers-first, so nothing a producer emits
at start-up is lost; shutdown stops producers first, so in-flight messages drain
downstream, then flushes table batches, commits log offsets and closes transports.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from framework.clock import Clock, SimulatedClock, WallClock
from framework.confighash import config_hash
from framework.contracts import BoundaryValidator, ContractRegistry
from framework.deadletter import TRANSPORT_SERVICE, DeadLetters
from framework.durations import parse_seconds
from framework.errors import UserError
from framework.registry import Registry
from framework.runtime import assembly
from framework.runtime.buffering import InputBuffer
from framework.runtime.consume import consume
from framework.runtime.dispatch import LiveDispatch, Stopwatch
from framework.runtime.graph import dependency_order
from framework.runtime.host import ServiceHost
from framework.runtime.introspect import SystemView
from framework.runtime.offload import Offloader
from framework.runtime.progress import RunProgress
from framework.runtime.simulation import SimulationDriver
from framework.stores.base import Store
from framework.stores.batch import BatchWriter
from framework.topology.model import Topology
from framework.transport.base import CHUNK_ATTR, WHOLE_ATTR, LogTransport, PubSubTransport, TopicSpec
from framework.wiring import resolve

log = logging.getLogger("fxflow.runtime")


def make_clock(settings: Any) -> Clock:
    if settings.clock == "simulated":
        return SimulatedClock()
    from framework.params import utc_ms

    origin = utc_ms(settings.clock_origin) if settings.clock_origin else None
    return WallClock(settings.clock_speed, origin)


SIMULATED_GC_THRESHOLDS = (50_000, 20, 10)
"""The cycle collector's thresholds while a run is on simulated time. Python's default (700 allocations) starts a young
collection every few messages of a backtest, which allocates millions of short-lived message dicts: measured over 100,000
bars of the reference backtest, collections took 5.3-5.6 s at the default and ~1 s with these, at the same peak memory
(~775 MB). Nothing waits on a pause there; a live run keeps the default (a young collection of 50,000 objects would be a
pause of milliseconds on the path from signal to order)."""


class _SimulatedCollector:
    """The thresholds are the process's: several simulated runs in one process (tests, a sweep's runs in one process)
    share one setting, and the thresholds from before the first are restored when the last ends."""

    def __init__(self) -> None:
        self.runs = 0
        self.saved: tuple[int, ...] = ()
        """The thresholds the first of the current runs found."""

    def enter(self) -> None:
        if not self.runs:
            self.saved = gc.get_threshold()
            gc.set_threshold(*SIMULATED_GC_THRESHOLDS)
        self.runs += 1

    def leave(self) -> None:
        self.runs -= 1
        if not self.runs:
            gc.set_threshold(*self.saved)


_SIMULATED_COLLECTOR = _SimulatedCollector()


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
        self.config_hash = config_hash(topology, self.pairs, self.data_dir)
        """``ctx.config_hash``: the resolved topology and pairs, hashed (:mod:`framework.confighash`)."""
        self.services = self._select(only)
        settings = topology.runtime
        self.clock = clock or make_clock(settings)
        self.dispatch: LiveDispatch | SimulationDriver
        if isinstance(self.clock, SimulatedClock):
            self.dispatch = SimulationDriver(self.clock)
            self.dispatch.idle_callback = self._simulation_idle
            self.id_epoch = "sim"  # the same ids in every run of the same input
        else:
            self.dispatch = LiveDispatch(self.clock)
            self.id_epoch = _base36(int(time.time() * 1000))
        self.stopwatch = None if isinstance(self.dispatch, SimulationDriver) else Stopwatch()
        self.offloader = Offloader(self.topology.runtime.workers)
        """Live, inline delivery nests handlers, whose time it subtracts; simulated delivery never nests."""
        self.pubsub = pubsub
        self.log = log_transport
        self.validator = BoundaryValidator(settings.validation, settings.sample_every)
        self.hosts: dict[str, ServiceHost] = {}
        self.stores: dict[str, Store] = {}
        self.writers: dict[tuple[str, str], BatchWriter] = {}
        self.dead_letters: DeadLetters | None = None
        self.artifacts: Any = None
        """The artifact store (``ctx.artifacts``), when the topology declares a ``kind: files`` store."""
        self.outage_listener = False
        self._background: set[asyncio.Task[Any]] = set()
        self._tuned_collector = False
        """This run raised the collector's thresholds (:data:`SIMULATED_GC_THRESHOLDS`); it gives them back at stop."""
        self.failures: list[str] = []
        """What services declared failed (a bounded job that could not do its work): ``fxrun`` exits 1 after the run."""
        self._stop = asyncio.Event()
        self._halt = asyncio.Event()
        self._drain = False
        self._started = False
        self.order: list[str] = []
        self.observability: Any = None
        self._stopped: set[str] = set()
        self.system = SystemView(self)
        """What nodes see of the run as a whole (``ctx.system``)."""
        self.progress = RunProgress(self)
        """How far the run is (simulated time, messages, the nodes' headlines): ``fxrun``'s progress and summary."""
        read = {t for name in self.services for b in topology.services[name].inputs.values() for t in b.topics}
        self.archived_topics = set(topology.topics) if settings.archive else read
        """Topics the run's ports send to: all of them, or (``runtime.archive: false``) the ones a service reads."""

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

    # --- transports -------------------------------------------------------------------

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

    # --- start ------------------------------------------------------------------------

    async def _wire_inputs(self, host: ServiceHost) -> None:
        assert self.pubsub is not None and self.log is not None
        service = host.service
        for port, binding in service.inputs.items():
            handle = host.handler_for(port)
            deliver = self.dispatch.deliverer(host, handle)
            if binding.buffer is not None and not isinstance(self.dispatch, SimulationDriver):
                buffer = host.buffers[port] = InputBuffer(deliver, binding.buffer, f"{host.name}.{port}")
                deliver = buffer.callback()
            deliver = assembly.sequenced(self, host, port, deliver)
            setattr(deliver, CHUNK_ATTR, True)  # the in-process bus may hand it a whole chunk
            setattr(deliver, WHOLE_ATTR, bool(getattr(handle, "batch", False)))  # and a batch handler one per publication
            queue = binding.queue or (host.name if service.replicas > 1 else None)
            for pattern in assembly.input_patterns(self, host.name, port):
                host.subscriptions.append(await self.pubsub.subscribe(pattern, deliver, queue=queue, owner=host.name))
            if binding.topics and not binding.replay:
                consumer = self.log.consumer(binding.group or host.name, binding.topics)
                await consumer.start()
                host.consumers.append(consumer)
                host.consume_tasks.append(asyncio.create_task(consume(self, host, consumer, deliver), name=f"{host.name}.{port}"))

    async def start(self) -> None:
        """Open the transports and stores, build and start every service; on a failure close what was opened
        (a store held open would keep its files locked: chdb admits one engine per process)."""
        if self._started:
            raise RuntimeError("runtime already started")
        self._started = True
        try:
            await self._start()
        except BaseException:
            try:
                await self.stop()
            except Exception as exc:
                log.warning("closing after a failed start: %s: %s", type(exc).__name__, exc)
            raise

    async def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self._open_transports()
        assert self.pubsub is not None and self.log is not None
        self.dead_letters = DeadLetters(self.data_dir / "deadletter", publish=self.pubsub.publish)
        used_topics = {
            e.name for e in self.wiring.endpoints if e.kind == "kafka" and e.service in self.services and e.name in self.archived_topics
        }
        await self.log.ensure_topics(
            TopicSpec(name, t.partitions or 1, t.retention_ms, t.cleanup)
            for name, t in self.topology.topics.items()
            if name in used_topics
        )
        await assembly.open_tables(self)
        for name in self.services:
            self.hosts[name] = assembly.build_host(self, name)
            await assembly.refill_host(self, self.hosts[name])
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
        for store in {id(s): s for s in self.stores.values()}.values():
            self.spawn(self._maintain_periodically(store), f"maintain-{store.name}")
        if isinstance(self.dispatch, SimulationDriver):
            self.dispatch.all_started()
        gc.freeze()  # what start-up made (modules, nodes, stores) lives as long as the run: out of the collector's sight
        if isinstance(self.dispatch, SimulationDriver) and not self._tuned_collector:
            self._tuned_collector = True
            _SIMULATED_COLLECTOR.enter()

    # --- the end of a run ---------------------------------------------------------------

    def fail(self, service: str, reason: str) -> None:
        """The run failed in ``service``: it said so (:meth:`NodeContext.fail`), it ran out of restarts, or a bounded run
        ended with it crashed before its input was read. Kept in :attr:`failures`; ``fxrun`` exits 1."""
        log.error("service %s: the run failed: %s", service, reason)
        self.failures.append(f"{service}: {reason}")

    def notify_finished(self) -> None:
        """A source finished (or gave up): a bounded run ends when every source has."""
        self.dispatch.source_finished()
        self._end_if_done()

    def _simulation_idle(self) -> None:
        """The driver has nothing left to do: every source finished or waits for time nothing moves."""
        self._end_if_done()

    def _end_if_done(self) -> None:
        if self._stop.is_set():
            return
        sources = [h for h in self.hosts.values() if h.is_source]
        if not sources:
            if isinstance(self.dispatch, SimulationDriver) and self._started and self.dispatch.quiet():
                log.warning("no source runs here to move simulated time; stopping")
                self._drain = True
                self._stop.set()
            return
        waiting = [h for h in sources if not h.finished]
        if waiting and isinstance(self.dispatch, SimulationDriver) and self.dispatch.quiet():
            log.warning(
                "%s wait(s) for simulated time, but no source is left to move it; stopping",
                ", ".join(h.name for h in waiting),
            )
            for host in waiting:
                if host.restarting or host.node is None:  # crashed (a failed start, run() raised): its input is unread
                    self.fail(host.name, f"stopped before its input was read: {host.metrics.last_error or 'it never started'}")
            waiting = []
        if not waiting:
            log.info("every source has finished; stopping")
            self._drain = True
            for host in self.hosts.values():
                host.ctx.input_complete = True
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def draining(self) -> bool:
        """The run ends because its sources finished: what is queued is handled first."""
        return self._drain

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

    async def run(
        self, duration: float | None = None, *, serve_after: bool = False, ended: Callable[[], None] | None = None
    ) -> None:
        """Start, run until stopped, every source finished or ``duration`` passed, stop.

        With ``serve_after``, a run that ends because its sources finished stops every other
        service as usual (drained, flushed) but keeps its servers (``role: server``: the
        dashboard) serving what the run left until a stop is requested (Ctrl-C); ``ended`` is
        called once the rest has stopped (a summary printed while the servers go on)."""
        try:
            await self.start()
        except BaseException:
            await self._stop_quietly()
            raise
        try:
            await self.wait(duration)
            servers = [h for h in self.hosts.values() if h.spec.role == "server" and h.node is not None]
            if serve_after and servers and self.draining and not self.halting:
                for name in self.order:
                    if self.hosts[name] not in servers:
                        await self._stop_host(self.hosts[name])
                for writer in self.writers.values():
                    await writer.flush()
                self.write_metrics()
                if ended is not None:
                    ended()
                log.info("the run has ended; %s keep(s) serving until Ctrl-C", ", ".join(h.name for h in servers))
                await self._halt.wait()
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
        try:
            if not self._drain:
                self._halt.set()
            self._stop.set()
            if self.observability is not None:
                await self.observability.close()
                self.observability = None
            for name in self.order:
                await self._stop_host(self.hosts[name])
            await self.dispatch.close()
            self.offloader.close()
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
        finally:
            gc.unfreeze()  # also when a stop fails or is cancelled half-way
            if self._tuned_collector:
                self._tuned_collector = False
                _SIMULATED_COLLECTOR.leave()

    async def _stop_host(self, host: ServiceHost) -> None:
        """One service stops taking input, finishes what it holds and stops its node (once)."""
        if host.name in self._stopped:
            return
        self._stopped.add(host.name)
        for sub in host.subscriptions:
            await sub.unsubscribe()
        await asyncio.gather(*host.consume_tasks, return_exceptions=True)
        for wrapped in host.sequenced:
            await (wrapped.drain() if self._drain else wrapped.cancel())
        for buffer in host.buffers.values():
            await buffer.close()
        for consumer in host.consumers:
            await consumer.stop()
        if host.mailbox and not host.busy:  # delivered, not yet handled: handled before the node stops
            await LiveDispatch.run_mailbox(host)
        host.closing = True
        host._signal_change()
        await host.stop_node()
        if host.metrics.state != "failed":
            host.metrics.state = "stopped"

    # --- observing ----------------------------------------------------------------------

    def metrics(self) -> list[dict[str, Any]]:
        """Per-service counters, each with the state of its table writers."""
        out = []
        for name in self.order:
            snapshot = self.hosts[name].metrics.snapshot()
            snapshot["tables"] = [w.stats for (service, _), w in self.writers.items() if service == name]
            if self.hosts[name].sequenced:
                snapshot["sequenced"] = {s.port: s.stats for s in self.hosts[name].sequenced}
            if self.hosts[name].buffers:
                snapshot["buffers"] = {port: b.stats for port, b in self.hosts[name].buffers.items()}
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


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"
