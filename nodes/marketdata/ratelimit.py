"""A rolling-window request limiter for REST clients of rate-limited APIs.

It paces requests to a real server, so it runs on real (monotonic) time, not on the node's
clock: a simulated clock may stand still while requests still go out.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class RateLimiter:
    """At most ``per_minute`` requests in any rolling minute (``None``: no limit).

    Fractional rates work too (``0.5`` allows one request per two minutes).
    """

    def __init__(
        self,
        per_minute: float | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError("requests_per_minute must be positive (or null for no limit)")
        self.per_minute = per_minute
        self.capacity = max(1, int(per_minute)) if per_minute else 0
        self.window = 60.0 * self.capacity / per_minute if per_minute else 0.0
        self._monotonic = monotonic
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waited = 0.0

    async def acquire(self) -> float:
        """Wait for a free slot; returns the seconds waited."""
        if not self.per_minute:
            return 0.0
        async with self._lock:
            waited = 0.0
            while True:
                now = self._monotonic()
                while self._sent and now - self._sent[0] >= self.window:
                    self._sent.popleft()
                if len(self._sent) < self.capacity:
                    self._sent.append(now)
                    self.waited += waited
                    return waited
                delay = self.window - (now - self._sent[0])
                waited += delay
                await self._sleep(delay)
