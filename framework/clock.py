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
from collections.abc import Callable
from typing import Any


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

    async def wait_started(self) -> None:
        """Return once the clock reads a real time (a simulated clock: when its first event arrives)."""


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


PASSIVE = 0
"""A timer or a sleeper: it fires when event time reaches its deadline, it never moves time itself.
At equal times it goes first, as a backtest's timers fire before the data of their instant."""
DRIVING = 1
"""An event source waiting for its next event's time: what moves simulated time."""
START = -1
"""The deadline of a waiter for the first event time (``wait_started``): it wakes at that time."""


class _Entry:
    __slots__ = ("deadline", "kind", "future", "task", "callback", "cancelled", "woken")

    def __init__(self, deadline: int, kind: int, future: asyncio.Future[None] | None, task: asyncio.Task[Any] | None,
                 callback: Callable[[], Any] | None = None) -> None:  # fmt: skip
        self.deadline = deadline
        self.kind = kind
        self.future = future
        self.task = task
        self.callback = callback
        self.cancelled = False
        self.woken = False


class SimulatedClock(Clock):
    """Time moves only when event time moves.

    Every waiter is an entry in one heap ordered by (deadline, kind, arrival): timers and
    sleepers (``sleep``) due at a millisecond before the event sources waiting for that
    millisecond (``wait_until``), as a backtest fires its timers before the data of their
    instant, then first come, first served.

    Alone (unit tests, a node outside a runtime) the caller of ``wait_until``/``advance_to``
    moves time: every entry due on the way wakes, in order, seeing ``now_ms()`` equal to its
    own deadline. In a runtime on simulated time a :class:`~framework.runtime.simulation.
    SimulationDriver` owns the clock: ``wait_until`` only parks its caller, and the driver
    moves time to the earliest entry once every source is parked and every message sent so
    far has been handled, so several sources interleave exactly in event-time order.
    """

    simulated = True

    def __init__(self, start_ms: int | None = None) -> None:
        self._started = start_ms is not None
        self._now = start_ms or 0
        self._heap: list[tuple[int, int, int, _Entry]] = []
        self._seq = itertools.count()
        self._asleep: dict[asyncio.Task[object], int] = {}
        self.driving = 0
        """Entries of event sources in the heap: while there are none, time cannot move."""
        self.driver: Any = None

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
        await self._park(deadline, PASSIVE)

    async def wait_until(self, ts_ms: int) -> None:
        if self.driver is None:
            await self.advance_to(ts_ms)
        elif not self._started or ts_ms > self._now:
            await self._park(ts_ms, DRIVING)

    async def wait_started(self) -> None:
        if not self._started:
            await self._park(START, PASSIVE)

    async def wait_through(self, ts_ms: int) -> None:
        """Return once the clock reads ``ts_ms`` and everything set to happen by then before this call has
        happened (``wait_until`` returns at once when the clock already reads ``ts_ms``)."""
        if self.driver is None:
            await self.advance_to(ts_ms)
        else:
            await self._park(max(ts_ms, self._now), DRIVING)

    def call_at(self, deadline: int, callback: Callable[[], Any], kind: int = PASSIVE, seq: int | None = None) -> _Entry:
        """Schedule ``callback`` (run by the driver) when time reaches ``deadline``: a timer (``PASSIVE``), or a
        delivery still to make (``DRIVING``: it holds time back like a source). ``seq`` (from :meth:`next_seq`)
        keeps the place an earlier entry took among those of the same time."""
        entry = _Entry(deadline, kind, None, None, callback)
        heapq.heappush(self._heap, (deadline, kind, next(self._seq) if seq is None else seq, entry))
        if kind == DRIVING:
            self.driving += 1
        return entry

    def next_seq(self) -> int:
        """A place in the order of arrival (for :meth:`call_at`)."""
        return next(self._seq)

    async def _park(self, deadline: int, kind: int) -> None:
        task = asyncio.current_task()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = _Entry(deadline, kind, future, task)
        heapq.heappush(self._heap, (deadline, kind, next(self._seq), entry))
        if kind == DRIVING:
            self.driving += 1
        if task is not None:
            self._asleep[task] = self._asleep.get(task, 0) + 1
        if self.driver is not None:
            self.driver.parked()
        try:
            await future
        finally:
            if not future.done():  # cancelled while parked
                entry.cancelled = True
                if kind == DRIVING:
                    self.driving -= 1
            if not entry.woken:
                self._awake(task)

    def _awake(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            left = self._asleep.pop(task, 1) - 1
            if left:
                self._asleep[task] = left

    def _start(self, at_ms: int) -> None:
        """The first event time: entries set before it count from it (they were set at 0)."""
        self._started = True
        shift = at_ms - self._now
        for _, _, _, e in self._heap:
            if e.kind == PASSIVE:
                e.deadline = at_ms if e.deadline == START else e.deadline + shift
        self._heap[:] = [(e.deadline, k, s, e) for _, k, s, e in self._heap]
        heapq.heapify(self._heap)
        self._now = at_ms

    def pop_due(self, until_ms: int | None = None) -> _Entry | None:
        """The earliest entry (due by ``until_ms``, if given), with the clock moved to its deadline.

        Before the first event only an event source's entry can start the clock."""
        heap = self._heap
        while heap and heap[0][3].cancelled:
            heapq.heappop(heap)
        if not self._started:
            first = min((d for d, k, _, e in heap if k == DRIVING and not e.cancelled), default=None)
            if first is None:
                if until_ms is None:
                    return None
                first = until_ms
            self._start(first)
            while heap and heap[0][3].cancelled:
                heapq.heappop(heap)
        if not heap or (until_ms is not None and heap[0][0] > until_ms):
            return None
        deadline, kind, _, entry = heapq.heappop(heap)
        if kind == DRIVING:
            self.driving -= 1
        self._now = max(self._now, deadline)
        return entry

    def wake(self, entry: _Entry) -> None:
        """Resume the task parked in ``entry``; from now on it counts as awake (it is about to run)."""
        if entry.future is not None and not entry.future.done():
            entry.woken = True
            self._awake(entry.task)
            entry.future.set_result(None)

    async def advance_to(self, ts_ms: int) -> None:
        """Move time forward to ``ts_ms`` (never backwards), waking due entries in order.

        Under a driver this waits for that time like an event source would (the driver wakes
        every entry due on the way, letting each finish its step, then this caller)."""
        if self.driver is not None:
            await self.wait_until(ts_ms)
            return
        while (entry := self.pop_due(ts_ms)) is not None:
            if entry.callback is not None:
                result = entry.callback()
                if asyncio.iscoroutine(result):
                    await result
            else:
                self.wake(entry)
                for _ in range(3):
                    await asyncio.sleep(0)
        if not self._started:
            self._start(ts_ms)
        self._now = max(self._now, ts_ms)
        await asyncio.sleep(0)

    @property
    def pending(self) -> int:
        return sum(1 for *_, e in self._heap if not e.cancelled and (e.future is None or not e.future.done()))
