"""The simulation driver: one loop owns simulated time, so the same input gives the same run.

On simulated time (the demo and backtest profiles) every delivery of the run goes into one
first-in first-out queue, and every handler runs to completion before the next one starts:
a handler's publications wait their turn behind what was already queued (breadth first; a
cycle of services is never nested). Whoever hands the first message to an idle queue
drains it, once the message is in the queue of every subscriber (:meth:`SimulationDriver.handed`):
a source's bar reaches the risk gate and the broker before the signal the features of that bar
make reaches them.

Time is the :class:`~framework.clock.SimulatedClock`'s heap: the next event time of each
source (``wait_until``), the timers of the nodes (callbacks), and sleepers (``sleep``). The
driver moves time only when nothing can happen at the present time any more: the queue is
empty and every source is parked on the clock or finished. Then it takes the earliest
entry, ordered by (time, timers before sources, arrival): a source resumes (and runs alone
until it parks again), a timer fires through the queue. A source runs alone from its start
to its first park too, in the order of the topology, so two sources never interleave by
chance, whatever their I/O. Timers and sleepers never move time by themselves: once every
source has finished or only sleeps, nothing more happens and the run can end.

A handler must not wait on the simulated clock (the driver waits for it to finish); a
source should (``wait_until`` each event's time). Work a handler sends to a thread is
awaited like any other: the queue waits for it.

**Timed chunks** (``ctx.publish_batch(port, chunk, at=times)``: history a source hands on
ahead of time, each row stamped with when it becomes known) keep that order with batches in
between. A batch handler takes such a chunk whole at once and computes ahead; what it
derives carries its rows' times (``at`` passed on), and what it publishes without times
waits for the chunk's last time. A single-message handler (the stateful ones: a risk gate,
an order book, a broker) gets each row only when the clock reaches the row's time: a
publication's rows are one entry of the clock's heap, holding time back like a source; at a
row's time the row is queued for every single-message subscriber of the publication at once
(as a publication at that time would be) and the queue is drained before time moves on. A
source's publication returns once the clock has passed its last row. So a chunk of twenty
thousand bars goes through features and inference (vectorised) at once and reaches the risk
gate and the broker bar by bar: each bar reaches every stateful node, and what it sets off
(the fills at its open, their order events) is handled, before that bar's signal arrives and
before the next bar. (A bar-by-bar replay interleaves the same deliveries by the depth of
the path that made them instead: there a bar's signal overtakes the order events of its fills.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from framework.chunk import Chunk
from framework.clock import DRIVING, SimulatedClock
from framework.transport.base import COUNT_HEADER, ID_HEADER, PubSubTransport, isolated

if TYPE_CHECKING:
    from framework.runtime.dispatch import Deliver
    from framework.runtime.host import Handle, ServiceHost
    from framework.runtime.offload import Then, Work

log = logging.getLogger("fxflow.runtime")


class _Timer:
    __slots__ = ("driver", "seconds_ms", "fire", "entry", "cancelled")

    def __init__(self, driver: SimulationDriver, seconds_ms: int, fire: Callable[[], Awaitable[None]]) -> None:
        self.driver = driver
        self.seconds_ms = seconds_ms
        self.fire = fire
        self.cancelled = False
        self.entry = driver.clock.call_at(driver.clock.now_ms() + seconds_ms, self._due)

    def _due(self) -> Awaitable[None]:
        if not self.cancelled:
            self.entry = self.driver.clock.call_at(self.driver.clock.now_ms() + self.seconds_ms, self._due)
        return self.fire()

    def cancel(self) -> None:
        self.cancelled = True
        self.entry.cancelled = True


class _Rows:
    """A timed chunk on its way to the single-message handlers of one publication: at ``times[i]`` row i is
    queued for each of them (in the order of their subscriptions), then the queue is drained, as if the row
    had been published at that time."""

    __slots__ = ("driver", "chunk", "rows", "targets", "headers", "ids", "times", "next", "seq")

    def __init__(self, driver: SimulationDriver, handle: Handle, origin: str, chunk: Chunk, headers: Any) -> None:
        assert chunk.times is not None
        self.driver = driver
        self.chunk = chunk
        self.rows = chunk.rows()
        self.targets: list[tuple[Handle, str]] = [(handle, origin)]
        self.headers = headers
        self.ids: tuple[str, int] | None = None
        if headers and COUNT_HEADER in headers:  # each row's id: the chunk's first, counted on (row_headers)
            prefix, _, number = headers[ID_HEADER].rpartition("-")
            self.headers = {k: v for k, v in headers.items() if k != COUNT_HEADER}
            self.ids = (f"{prefix}-", int(number))
        self.times: list[int] = chunk.times.tolist()
        self.next = 0
        self.seq = driver.clock.next_seq()
        driver.clock.call_at(self.times[0], self._due, DRIVING, self.seq)

    def _due(self) -> Awaitable[None]:
        i = self.next
        self.next = i + 1
        if self.next < len(self.rows):
            self.driver.clock.call_at(self.times[self.next], self._due, DRIVING, self.seq)
        headers = self.headers
        if self.ids is not None:
            headers = {**headers, ID_HEADER: f"{self.ids[0]}{self.ids[1] + i}"}
        row = self.rows[i]
        queue = self.driver._queue
        for handle, origin in self.targets:
            queue.append((handle, origin, row, headers, None))
        return self.driver.enqueued()


class _Handed:
    """A bus whose publications go through :meth:`SimulationDriver.handed`; everything else is the bus's own."""

    timed_delivery = True
    """Timed chunks are delivered row by row at their times by the driver (the publisher need not pace them)."""

    def __init__(self, bus: PubSubTransport, driver: SimulationDriver) -> None:
        self._bus = bus
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(self, subject: str, payload: Any, headers: Any = None) -> None:
        await self._driver.handed(self._bus.publish(subject, payload, headers))

    async def publish_chunk(self, subject: str, chunk: Any, headers: Any = None) -> None:
        self._driver.rows = None  # a new publication: its rows go to its subscribers together
        await self._driver.handed(self._bus.publish_chunk(subject, chunk, headers))

    async def publish_parts(self, parts: Any, whole: Any) -> None:
        """A chunk's parts per subject, handed together (every subscriber has its part before any of them runs)."""
        self._driver.rows = None
        await self._driver.handed(self._bus.publish_parts(parts, whole))

    async def settle(self, until_ms: int) -> None:
        await self._driver.settle(until_ms)


class SimulationDriver:
    """Owns the simulated clock and the run's single delivery queue (see the module docstring)."""

    simulated = True

    def __init__(self, clock: SimulatedClock | None = None) -> None:
        self.clock = clock or SimulatedClock()
        self.clock.driver = self
        self._queue: deque[tuple[Any, str, Any, Any, asyncio.Future[Any] | None]] = deque()
        self._draining = False
        self._holding = False
        """A publication outside a drain is being handed to its subscribers: they queue, nobody runs yet."""
        self.rows: _Rows | None = None
        """The timed rows of the publication being handed to its subscribers."""
        self._floor: int | None = None
        """While a batch handler takes a timed chunk: its last time, before which nothing it publishes untimed arrives."""
        self._sources: list[asyncio.Task[Any]] = []
        self._entering: deque[tuple[asyncio.Future[None], asyncio.Task[Any]]] = deque()
        self._kick = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.idle_callback: Callable[[], None] | None = None
        self._started_all = False
        self.deliveries = 0
        self.timer_firings = 0

    # --- the queue --------------------------------------------------------------------

    def deliverer(self, host: ServiceHost, handle: Handle) -> Deliver:
        queue = self._queue
        clock = self.clock
        batch = bool(getattr(handle, "batch", False))

        async def deliver(origin: str, message: Any, headers: Any = None) -> None:
            if type(message) is Chunk and message.times is not None:
                if not batch:
                    rows = self.rows
                    if rows is not None and rows.chunk is message and not rows.next:  # another subscriber of this publication
                        rows.targets.append((handle, origin))
                    else:
                        self.rows = _Rows(self, handle, origin, message, headers)
                    self._kick.set()
                    return
            elif self._floor is not None and self._floor > clock.now_ms():
                clock.call_at(self._floor, lambda: self.enqueue(handle, origin, message, headers), DRIVING)
                self._kick.set()
                return
            queue.append((handle, origin, message, headers, None))
            if not self._draining and not self._holding:
                await self._drain()

        async def request(origin: str, message: Any, headers: Any = None) -> Any:
            """A direct call: the reply is part of the requester's step (deterministic, not queued)."""
            return await handle(origin, message, headers)

        deliver.request = request  # type: ignore[attr-defined]
        return isolated(deliver)

    async def handed(self, send: Awaitable[Any]) -> Any:
        """Await a publication (``send``), then drain: every subscriber has the message queued before the first
        one runs. Inside a drain (a handler publishing) the queue already works that way."""
        if self._draining or self._holding:
            return await send
        self._holding = True
        try:
            result = await send
        finally:
            self._holding = False
        if self._queue and not self._draining:
            await self._drain()
        return result

    def publisher(self, bus: PubSubTransport) -> PubSubTransport:
        """The bus as nodes publish on it here: each publication :meth:`handed` to its subscribers."""
        return _Handed(bus, self)

    async def settle(self, until_ms: int) -> None:
        """After a source's timed publication: return once the clock has passed ``until_ms`` (its last row) and
        everything due by then is handled. A handler forwarding derived rows returns at once (it never waits)."""
        if self._draining or self._holding:
            return
        await self.clock.wait_through(until_ms)

    async def enqueue(self, handle: Handle, origin: str, message: Any, headers: Any) -> None:
        """A delivery whose time has come (a deferred message): queued, then drained."""
        self._queue.append((handle, origin, message, headers, None))
        await self.enqueued()

    async def enqueued(self) -> None:
        """Deliveries whose time has come were queued: drain them."""
        if not self._draining and not self._holding:
            await self._drain()

    async def _drain(self) -> None:
        self._draining = True
        queue = self._queue
        popleft = queue.popleft
        n = 0
        try:
            while queue:
                handle, origin, message, headers, _ = popleft()
                n += 1
                if type(message) is Chunk and message.times is not None:  # a batch handler computing ahead
                    floor, self._floor = self._floor, int(message.times[-1])
                    try:
                        await handle(origin, message, headers)
                    finally:
                        self._floor = floor
                else:
                    await handle(origin, message, headers)
        finally:
            self._draining = False
            self.deliveries += n
        self._kick.set()

    # --- timers and sources -----------------------------------------------------------

    def start_timer(
        self, host: ServiceHost, method: str, seconds: float, fire: Callable[[], Awaitable[None]] | None = None
    ) -> _Timer:
        work = fire or host.timer_handle(method)

        async def tick(origin: str, message: Any, headers: Any = None) -> None:
            self.timer_firings += 1
            await work()

        deliver = self.deliverer(host, tick)
        origin = f"timer:{method or 'snapshot'}"
        return _Timer(self, max(1, int(round(seconds * 1000))), lambda: deliver(origin, None))

    def start_run(self, host: ServiceHost, run: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A source: it waits for its turn to start, then runs alone until it parks on the clock.

        A server (``role: server``) is no source: it starts at once and never holds time back."""
        if not host.is_source:
            return asyncio.create_task(run, name=f"{host.name}.run")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def source() -> None:
            await turn
            await run

        task = asyncio.create_task(source(), name=f"{host.name}.run")
        self._entering.append((turn, task))
        self._sources.append(task)
        task.add_done_callback(lambda _: self._kick.set())
        self.start()
        self._kick.set()
        return task

    async def background(self, host: ServiceHost, name: str, work: Work, then: Then, failed: Then | None) -> None:
        """``work`` takes its turn in the run's queue like a delivery: it runs, with the clock held,
        when everything queued before it was handled, and its outcome reaches ``then`` at once."""
        cause = host.ctx._cause

        async def handle(origin: str, message: Any, headers: Any = None) -> None:
            try:
                outcome, fn = await work(), then
            except Exception as exc:
                outcome, fn = exc, failed
            await host.callback(fn, outcome, origin, cause)

        self._queue.append((handle, f"background:{name}", None, None, None))
        if not self._draining:
            await self._drain()

    def all_started(self) -> None:
        """Every service has started: from now on a run with nothing left to do may end."""
        self._started_all = True
        self.start()
        self._kick.set()

    def parked(self) -> None:
        """Called by the clock whenever a task parks on it."""
        self.start()
        self._kick.set()

    def source_finished(self) -> None:
        self._kick.set()

    # --- moving time ----------------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.ensure_future(self._run())

    def _running_sources(self) -> bool:
        """A source that is neither parked on the clock nor finished (nor waiting for its turn to
        start): it still acts at the present time."""
        asleep = self.clock.asleep
        entering = self._entering
        for t in self._sources:
            if not t.done() and not asleep(t) and not (entering and any(t is task for _, task in entering)):
                return True
        return False

    def quiet(self) -> bool:
        """Every source finished or sleeps while nothing moves time: the run has nothing left to do."""
        return (
            self._started_all and not self._entering and not self._running_sources() and not self.clock.driving and not self._queue
        )

    async def _run(self) -> None:
        clock = self.clock
        while True:
            await self._kick.wait()
            self._kick.clear()
            while not self._queue and not self._draining and not self._running_sources():
                if self._entering:
                    turn, _ = self._entering.popleft()
                    turn.set_result(None)  # the next source starts, alone
                    break
                if not clock.driving:
                    if self.idle_callback is not None and self._started_all:
                        self.idle_callback()
                    break
                entry = clock.pop_due()
                if entry is None:
                    break
                if entry.callback is not None:
                    await entry.callback()  # a timer: through the queue, drained here
                    continue
                clock.wake(entry)  # a source (or a test) resumes; it runs until it parks again
                break

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            try:
                await self._loop
            except (asyncio.CancelledError, Exception):
                pass
            self._loop = None
        self.clock.driver = None
