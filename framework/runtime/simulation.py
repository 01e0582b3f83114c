"""The simulation driver: one loop owns simulated time, so the same input gives the same run.

On simulated time (the demo and backtest profiles) every delivery of the run goes into one
first-in first-out queue, and every handler runs to completion before the next one starts:
a handler's publications wait their turn behind what was already queued (breadth first; a
cycle of services is never nested). Whoever hands the first message to an idle queue
drains it.

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
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from framework.clock import SimulatedClock
from framework.transport.base import isolated

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


class SimulationDriver:
    """Owns the simulated clock and the run's single delivery queue (see the module docstring)."""

    simulated = True

    def __init__(self, clock: SimulatedClock | None = None) -> None:
        self.clock = clock or SimulatedClock()
        self.clock.driver = self
        self._queue: deque[tuple[Any, str, Any, Any, asyncio.Future[Any] | None]] = deque()
        self._draining = False
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

        async def deliver(origin: str, message: Any, headers: Any = None) -> None:
            queue.append((handle, origin, message, headers, None))
            if not self._draining:
                await self._drain()

        async def request(origin: str, message: Any, headers: Any = None) -> Any:
            """A direct call: the reply is part of the requester's step (deterministic, not queued)."""
            return await handle(origin, message, headers)

        deliver.request = request  # type: ignore[attr-defined]
        return isolated(deliver)

    async def _drain(self) -> None:
        self._draining = True
        queue = self._queue
        popleft = queue.popleft
        n = 0
        try:
            while queue:
                handle, origin, message, headers, _ = popleft()
                n += 1
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
        clock = self.clock
        waiting = {task for _, task in self._entering}
        return any(not t.done() and not clock.asleep(t) and t not in waiting for t in self._sources)

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
