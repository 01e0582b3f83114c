"""One dependency's outages: logged once when they begin and once when they end, counted, paced.

A store, a server connection or a writer that keeps retrying must not log one line per failed
attempt. :class:`Outage` follows the failures of one such thing: the first failed attempt
begins an outage (logged once), an optional reminder says it is still down every
``still_every`` seconds, and the first success ends it (logged once, with its duration and the
number of failed attempts). :meth:`Outage.delay` paces the retries: exponential from
``initial`` doubling to ``maximum``, times a random factor in ``jitter`` so that many clients
restarting at once do not retry in step.

The texts are the caller's (``began``, ``still``, ``ended`` are called with the outage, whose
``attempts``, ``duration`` and ``last_error`` they may show); the levels are ``began_level``
and ``ended_level`` (the reminder logs at ``ended_level``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

Text = Callable[["Outage"], str]


class Outage:
    """Counters: ``failures`` (every failed attempt), ``outages`` (every outage begun); ``attempts``
    are the failed attempts of the current outage, ``since`` its start (monotonic) and
    ``started_at`` the same moment in epoch seconds, both None while up."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        began: Text,
        ended: Text,
        still: Text | None = None,
        still_every: float = 30.0,
        began_level: int = logging.ERROR,
        ended_level: int = logging.WARNING,
        initial: float = 0.2,
        maximum: float = 10.0,
        jitter: tuple[float, float] = (0.75, 1.25),
    ) -> None:
        if initial < 0 or jitter[0] < 0 or jitter[1] < jitter[0]:
            raise ValueError(f"initial must be >= 0 and jitter a range of factors >= 0, got {initial}, {jitter}")
        self.log = log
        self._began, self._ended, self._still = began, ended, still
        self.still_every = still_every
        self.began_level, self.ended_level = began_level, ended_level
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.jitter = jitter
        self.failures = 0
        self.outages = 0
        self.attempts = 0
        self.since: float | None = None
        self.started_at: float | None = None
        self.last_error: str | None = None
        self._reminded = 0.0

    @property
    def down(self) -> bool:
        """True from the first failed attempt of an outage until :meth:`recovered`."""
        return self.since is not None

    @property
    def duration(self) -> float:
        """Seconds since the current outage began (0.0 while up)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def failed(self, error: BaseException | str | None = None) -> bool:
        """One failed attempt; True when it begins an outage (which is then logged)."""
        self.failures += 1
        self.attempts += 1
        if error is not None:
            self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        now = time.monotonic()
        if self.since is None:
            self.since = self._reminded = now
            self.started_at = time.time()
            self.outages += 1
            self.log.log(self.began_level, "%s", self._began(self))
            return True
        if self._still is not None and now - self._reminded >= self.still_every:
            self._reminded = now
            self.log.log(self.ended_level, "%s", self._still(self))
        return False

    def recovered(self) -> bool:
        """A success: ends the outage (logged) if there is one; True if there was."""
        if self.since is None:
            return False
        self.log.log(self.ended_level, "%s", self._ended(self))
        self.since = self.started_at = None
        self.attempts = 0
        return True

    def delay(self, step: int | None = None) -> float:
        """Seconds to wait before the next attempt: ``initial * 2**step``, capped at ``maximum``, jittered.

        ``step`` defaults to the failed attempts of this outage less one, so the first retry
        waits about ``initial``."""
        if step is None:
            step = max(self.attempts - 1, 0)
        base = min(self.maximum, self.initial * 2 ** min(step, 32))
        return base * random.uniform(*self.jitter)
