"""One service in a run: its node, how messages reach it, and its supervision.

Every message, timer firing and request for a node goes through the runtime's dispatch
(:mod:`framework.runtime.dispatch` live, :mod:`framework.runtime.simulation` on simulated
time), so a node handles one thing at a time. A handler that fails dead-letters its message;
repeated failures, a crash of ``run()`` or a failed ``on_start`` restart the node with
backoff while the other services go on; after ``max_restarts`` it is given up.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from framework.chunk import Chunk
from framework.context import ID_HEADER, NodeContext, OutputRoute
from framework.errors import UserError
from framework.metrics import ServiceMetrics
from framework.node import BATCH_ATTR, Node, timer_seconds
from framework.refill import Watermarks
from framework.registry import NodeSpec
from framework.runtime.buffering import InputBuffer
from framework.runtime.state import restore_state, save_state
from framework.sequencing import SequencedInput
from framework.topology.model import Service
from framework.transport.base import LogConsumer, Subscription, row_headers

if TYPE_CHECKING:
    from framework.runtime.core import Runtime

log = logging.getLogger("fxflow.runtime")

Handle = Callable[[str, Any, Any], Awaitable[Any]]
"""``await handle(origin, message, headers)``: one unit of a node's work; returns a request's reply."""

_starting: contextvars.ContextVar[tuple[str, asyncio.Task[Any] | None] | None] = contextvars.ContextVar("fxflow_starting", default=None)


def headline_of(service: str, node: Node, final: bool = False) -> dict[str, Any] | None:
    """``node.headline(final)`` as a plain dict; a headline that fails is logged, never the run's problem."""
    try:
        figures = node.headline(final)
        return dict(figures) if figures else None
    except Exception as exc:
        log.debug("service %s: headline failed: %s: %s", service, type(exc).__name__, exc)
        return None


def starting_here() -> str | None:
    """The service whose ``on_start`` is running on this very task (tasks it spawns inherit the context, not the role)."""
    state = _starting.get()
    if state is not None and state[1] is asyncio.current_task():
        return state[0]
    return None


@dataclass(eq=False)
class ServiceHost:
    """One service: its node instance, its wiring, its mailbox, its supervision (restart with backoff)."""

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
    timers: list[Any] = field(default_factory=list)
    consumers: list[LogConsumer] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    consume_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    routes: dict[str, OutputRoute] = field(default_factory=dict)
    sequenced: list[SequencedInput] = field(default_factory=list)
    buffers: dict[str, InputBuffer] = field(default_factory=dict)
    watermarks: Watermarks | None = None
    mailbox: deque[Any] = field(default_factory=deque)
    busy: bool = False
    consecutive_failures: int = 0
    finished: bool = False
    restarting: bool = False
    healthy_since: float = 0.0
    closing: bool = False
    final_headline: dict[str, Any] | None = None
    """What the node's ``headline(final=True)`` said when it stopped for good (the run's summary)."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _signal_change(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def is_source(self) -> bool:
        return self.node_cls.overrides_run() and self.spec.role != "server"

    @property
    def run_task(self) -> asyncio.Task[Any] | None:
        return next((t for t in self.tasks if t.get_name() == f"{self.name}.run"), None)

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
            if self.gone or starting_here() is not None:
                return None
            waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(self.runtime.halt_event.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        return self.node

    def _not_running_reason(self) -> str:
        if self.metrics.state == "failed":
            return f"service {self.name} gave up after repeated failures (see its last_error)"
        starting = starting_here()
        if starting is not None:
            return f"published by {starting} during its on_start, before {self.name} had started (a start-up cycle)"
        return f"service {self.name} is stopping"

    # --- work ------------------------------------------------------------------------

    def handler_for(self, port: str) -> Handle:
        """The work of one message on input ``port`` (the dispatch decides when it runs)."""
        method = self.node_cls.handlers().get(port)
        if method is None:
            raise UserError(f"service {self.name!r}: node {self.spec.name!r} has no handler for input port {port!r}")
        params = inspect.signature(getattr(self.node_cls, method)).parameters
        wants_origin = len(params) >= 3
        metrics = self.metrics
        per_port = metrics.per_port
        per_port.setdefault(port, 0)
        stopwatch = self.runtime.stopwatch
        ctx = self.ctx
        perf = time.perf_counter

        batch = bool(getattr(getattr(self.node_cls, method), BATCH_ATTR, False))

        async def handle(origin: str, message: Any, headers: Any = None) -> Any:
            if type(message) is Chunk:
                if not batch:  # a single-message handler takes a chunk's rows in order
                    for row, row_hdrs in zip(message.rows(), row_headers(headers, len(message))):
                        await handle(origin, row, row_hdrs)
                    return None
                count = len(message)
            elif batch:  # a batch handler takes a single message as a chunk of one
                try:
                    message = Chunk.from_rows([message])
                except (TypeError, AttributeError) as exc:
                    metrics.received += 1
                    await ctx.dead_letter(f"not a message for a batch handler: {type(exc).__name__}: {exc}", message, origin)
                    return None
                count = 1
            else:
                count = 1
            metrics.received += count
            per_port[port] += count
            node = self.node
            if node is None or self.restarting:
                node = await self.wait_for_node()
                if node is None:
                    for row in message.rows() if type(message) is Chunk else (message,):
                        await ctx.dead_letter(self._not_running_reason(), row, origin)
                    return None
            cause = ctx._cause
            ctx._cause = headers.get(ID_HEADER) if headers else None
            frame = stopwatch.enter() if stopwatch is not None else perf()
            try:
                if wants_origin:
                    reply = await getattr(node, method)(message, origin)
                else:
                    reply = await getattr(node, method)(message)
                self.consecutive_failures = 0
                return reply
            except Exception as exc:
                await self._failed(exc, message.rows() if type(message) is Chunk else message, origin)
                return None
            finally:
                ctx._cause = cause
                elapsed = stopwatch.leave(frame) if stopwatch is not None else perf() - frame
                metrics.latency_count += 1
                metrics.latency_total_s += elapsed
                if elapsed > metrics.latency_max_s:
                    metrics.latency_max_s = elapsed

        handle.batch = batch  # type: ignore[attr-defined]  # a simulation driver hands a timed chunk whole only to a batch handler
        return handle

    async def callback(self, fn: Callable[[Any], Awaitable[None]] | None, outcome: Any, origin: str, cause: str | None) -> None:
        """Hand a background work's ``outcome`` to ``fn`` (a node method), as a handler would run
        it; an exception with no ``fn`` to take it is a handler failure."""
        node = self.node
        if node is None or self.restarting:
            return
        ctx = self.ctx
        saved, ctx._cause = ctx._cause, cause
        try:
            if fn is None:
                raise outcome
            await fn(outcome)
        except Exception as exc:
            await self._failed(exc, None, origin)
        finally:
            ctx._cause = saved

    def timer_handle(self, method: str) -> Callable[[], Awaitable[None]]:
        async def fire() -> None:
            node = self.node
            if node is None or self.restarting:
                return
            try:
                await getattr(node, method)()
            except Exception as exc:
                await self._failed(exc, None, f"timer:{method}")

        return fire

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

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        node = self.node_cls(self.ctx, self.params)
        restore_state(self, node)
        token = _starting.set((self.name, asyncio.current_task()))
        try:
            await node.on_start()
        finally:
            _starting.reset(token)
        self.node = node
        self.healthy_since = time.monotonic()
        self._signal_change()
        dispatch = self.runtime.dispatch
        for method, interval in self.node_cls.timers().items():
            self.timers.append(dispatch.start_timer(self, method, timer_seconds(interval, self.params)))
        every = getattr(self.node_cls, "snapshot_every", None)
        if every:
            self.timers.append(dispatch.start_timer(self, "", timer_seconds(every, self.params), self._snapshot_now))
        if self.node_cls.overrides_run():
            self.finished = False
            self.tasks.append(dispatch.start_run(self, self._run()))
        self.metrics.state = "running"

    async def _snapshot_now(self) -> None:
        if self.node is not None:
            save_state(self, self.node)

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
        self.runtime.fail(self.name, message)
        self.restarting = False
        self.finished = True
        self._signal_change()
        self.runtime.notify_finished()

    async def stop_node(self, cancel_current: bool = True) -> None:
        current = asyncio.current_task()
        for timer in self.timers:
            timer.cancel()
        self.timers = []
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
            save_state(self, node)
            if self.closing:
                self.final_headline = headline_of(self.name, node, final=True)
        await self.ctx.drain()
