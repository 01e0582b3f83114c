"""Delivery with retries, and one queue and task per network channel.

A notification that fails with a retryable error (429, 5xx, refused or dropped connection,
timeout, SMTP 4xx) is tried again after the server's ``retry_after`` or an exponential back-off
(``base_delay`` doubled each time, at most ``max_delay``), up to ``attempts`` tries; then it is
recorded failed with its last reason. Waits are on the node's clock, through an :class:`Alarm` the
node's ``retry_check`` timer rings, so on simulated time they end exactly when event time gets
there and never hold time back nor keep a finished run alive. Each network channel has its
own :class:`ChannelWorker`: a channel that is down, slow or rate-limited holds up only its own
queue, never the node's handlers or the other channels.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from framework.clock import Clock
from nodes.notifications.channels import DeliveryError, Message, Secrets, Sender


@dataclass(slots=True)
class Note:
    """One notification for one channel."""

    notification_id: str
    ts: int
    channel: str
    event: str
    type: str
    severity: str
    title: str
    text: str
    symbol: str | None = None
    source_subject: str | None = None
    digest: int | None = None

    def message(self) -> Message:
        return Message(self.title, self.text, self.severity, self.type, self.ts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Outcome:
    sent: bool
    attempts: int
    reason: str | None = None
    provider_id: str | None = None


RETRY_AFTER_CAP_S = 3600.0
"""The longest wait a server's ``retry_after`` is honoured for."""


@dataclass(frozen=True, slots=True)
class Backoff:
    attempts: int
    base_s: float
    max_s: float

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before try ``attempt + 1``: the server's ``retry_after`` (at most :data:`RETRY_AFTER_CAP_S`: a
        server asking for days, or for infinity, would hold the channel for good), else base · 2^(attempt-1), capped."""
        if retry_after is not None:
            if not math.isfinite(retry_after) or retry_after > RETRY_AFTER_CAP_S:
                return RETRY_AFTER_CAP_S
            return max(retry_after, 0.0)
        return min(self.base_s * 2 ** (attempt - 1), self.max_s)


class Alarm:
    """Waits until a clock time, ended by :meth:`ring` (the node's timer), never by sleeping on the clock itself.

    A task sleeping on a simulated clock would be woken by the simulation driver, which then waits
    for it as for a source; a delivery doing network I/O is no source. The timer keeps every
    wake-up inside the run's own order of events instead."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def wait_until(self, at_ms: int) -> None:
        if self.clock.now_ms() >= at_ms:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((at_ms, future))
        try:
            await future
        finally:
            self._waiters = [(t, f) for t, f in self._waiters if f is not future]

    def ring(self) -> None:
        """Wake every waiter whose time has come."""
        now = self.clock.now_ms()
        for at_ms, future in self._waiters:
            if at_ms <= now and not future.done():
                future.set_result(None)


async def deliver(
    sender: Sender, note: Note, backoff: Backoff, alarm: Alarm, secrets: Secrets, waiting: Callable[[int | None], None] | None = None
) -> Outcome:
    """Send ``note``, retrying what may succeed later; the reason of a failure is masked.

    ``waiting`` is told the clock time of the next try while the loop waits for it (None once it tries)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            receipt = await sender.send(note.message())
        except DeliveryError as exc:
            reason = secrets.mask(exc.reason)
            if not exc.retryable or attempt >= backoff.attempts:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                return Outcome(False, attempt, reason + tries)
            at_ms = alarm.clock.now_ms() + int(round(backoff.delay(attempt, exc.retry_after) * 1000))
            if waiting is not None:
                waiting(at_ms)
            try:
                await alarm.wait_until(at_ms)
            finally:
                if waiting is not None:
                    waiting(None)
        except Exception as exc:  # a bug or an unforeseen library error: recorded, never raised into the queue
            return Outcome(False, attempt, secrets.mask(f"{type(exc).__name__}: {exc}"))
        else:
            detail = secrets.mask(receipt.detail) if receipt.detail else None
            return Outcome(True, attempt, detail, receipt.provider_id)


Record = Callable[[Note, Outcome], Awaitable[None]]


class ChannelWorker:
    """A network channel's queue, delivered in order by :meth:`run` (one notification at a time)."""

    def __init__(self, name: str, sender: Sender, backoff: Backoff, alarm: Alarm, secrets: Secrets, record: Record, max_queue: int) -> None:
        self.name = name
        self.sender = sender
        self.backoff = backoff
        self.alarm = alarm
        self.secrets = secrets
        self.record = record
        self.max_queue = max_queue
        self.queue: deque[Note] = deque()
        self.retry_at: int | None = None
        """Clock time of the next try of the notification at the head of the queue, while it waits for it."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, note: Note) -> bool:
        """Queue ``note``; False when the queue is full (the caller records it failed)."""
        if len(self.queue) >= self.max_queue:
            return False
        self.queue.append(note)
        self._idle.clear()
        self._wake.set()
        return True

    async def run(self) -> None:
        while True:
            while not self.queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            note = self.queue[0]
            outcome = await deliver(self.sender, note, self.backoff, self.alarm, self.secrets, self._waiting)
            self.queue.popleft()  # only now: a stop during the delivery keeps it queued (and in the snapshot)
            await self.record(note, outcome)

    def _waiting(self, at: int | None) -> None:
        self.retry_at = at

    async def idle(self) -> None:
        """Return once the queue is empty and nothing is being delivered (tests, a graceful stop)."""
        await self._idle.wait()
