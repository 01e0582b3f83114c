"""Time as nodes see it: the wall clock live, a simulated clock driven by event time in backtests.

Nodes never call ``time.time()`` or ``asyncio.sleep()``: they ask ``ctx.clock``. A source
that replays history calls ``await clock.wait_until(event_ts)`` before publishing each
event; on the wall clock that waits for real time (or not at all for live data, whose time
is already now), on the simulated clock it moves time forward at once and wakes every timer
that fell due on the way, in timestamp order. The same node code therefore runs live, in the
demo and in a backtest.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import itertools
import time


class Clock(abc.ABC):
    simulated: bool = False

    @property
    def live(self) -> bool:
        """True when ``now`` is real time (not simulated, not a paced replay of the past)."""
        return False

    @abc.abstractmethod
    def now_ms(self) -> int:
        """Current time, Unix epoch milliseconds (UTC)."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None: ...

    @abc.abstractmethod
    async def wait_until(self, ts_ms: int) -> None:
        """Return once the clock reads ``ts_ms`` or later."""

    def now(self) -> float:
        return self.now_ms() / 1000.0


class WallClock(Clock):
    """Real time. ``speed`` > 1 compresses waits (replay at N× speed from ``origin_ms``)."""

    def __init__(self, speed: float = 1.0, origin_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = time.time()
        # Live (real time) unless replaying: from ``origin_ms``, or at ``speed`` from now.
        self._live = origin_ms is None and speed == 1.0
        self._origin_ms = int(self._start * 1000) if origin_ms is None else origin_ms

    @property
    def live(self) -> bool:
        return self._live

    def now_ms(self) -> int:
        if self._live:
            return int(time.time() * 1000)
        return self._origin_ms + int((time.time() - self._start) * 1000 * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    async def wait_until(self, ts_ms: int) -> None:
        while (remaining_ms := ts_ms - self.now_ms()) > 0:
            await asyncio.sleep(remaining_ms / 1000.0 / self.speed)


class SimulatedClock(Clock):
    """Time moves only when event time moves (``advance_to`` / ``wait_until``).

    Sleepers are kept in a heap; advancing fires them in deadline order, each seeing
    ``now_ms()`` equal to its own deadline, and yields to the loop so they run before the
    driver publishes the next event.
    """

    simulated = True

    def __init__(self, start_ms: int | None = None) -> None:
        self._started = start_ms is not None
        self._now = start_ms or 0
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._asleep: dict[asyncio.Task[object], int] = {}

    def asleep(self, task: asyncio.Task[object] | None) -> bool:
        """Whether ``task`` is waiting for this clock (only moving event time can wake it)."""
        return task is not None and self._asleep.get(task, 0) > 0

    @property
    def started(self) -> bool:
        """False until the first event time arrives; timers set before then count from it."""
        return self._started

    def now_ms(self) -> int:
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + max(0, int(round(seconds * 1000)))
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        task = asyncio.current_task()
        if task is not None:
            self._asleep[task] = self._asleep.get(task, 0) + 1
        try:
            await future
        finally:
            if task is not None:
                left = self._asleep.pop(task, 1) - 1
                if left:
                    self._asleep[task] = left

    async def wait_until(self, ts_ms: int) -> None:
        await self.advance_to(ts_ms)

    async def advance_to(self, ts_ms: int) -> None:
        """Move time forward to ``ts_ms`` (never backwards), waking due sleepers in order."""
        if not self._started:
            self._started = True
            self._sleepers = [(d + ts_ms - self._now, seq, f) for d, seq, f in self._sleepers]
            heapq.heapify(self._sleepers)
            self._now = ts_ms
        while self._sleepers and self._sleepers[0][0] <= ts_ms:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            for _ in range(3):
                await asyncio.sleep(0)
        self._now = max(self._now, ts_ms)
        await asyncio.sleep(0)

    @property
    def pending(self) -> int:
        return sum(1 for *_, f in self._sleepers if not f.done())
