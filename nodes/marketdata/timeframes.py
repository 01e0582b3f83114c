"""Timeframes and their bucket boundaries: the one definition of "which bar does this instant belong to".

Intraday timeframes (``1m`` … ``4h``, anything shorter than a day) are aligned to UTC
midnight: a ``4h`` bar starts at 00:00, 04:00, … UTC. Daily and weekly bars roll at the
configured :class:`DailyRoll` in its own time zone, so ``17:00 America/New_York`` gives the
usual FX trading day (23 or 25 hours long on daylight-saving changes). A trading day is
named after the date on which it ends; a week starts with the trading day named Monday.

Buckets are half-open ``[start, end)`` in Unix milliseconds.

numpy is imported by the vectorised methods (once per batch), not by this module: the tick
aggregator's spec validates its params with :class:`Timeframe` and :class:`DailyRoll`, and
lint and docs import every spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from framework.timeframes import parse_timeframe

if TYPE_CHECKING:
    import numpy as np

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
_ROLL = re.compile(r"^\s*(\d{1,2}):(\d{2})(?:\s+(\S+))?\s*$")


@dataclass(frozen=True, slots=True)
class DailyRoll:
    """When the trading day ends: ``hour:minute`` in ``tz``."""

    hour: int = 0
    minute: int = 0
    tz: str = "UTC"
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (0 <= self.hour < 24 and 0 <= self.minute < 60):
            raise ValueError(f"daily roll {self.hour:02d}:{self.minute:02d} is not a time of day")
        try:
            object.__setattr__(self, "zone", ZoneInfo(self.tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.tz!r} (use an IANA name such as America/New_York)") from None

    @classmethod
    def parse(cls, text: str) -> DailyRoll:
        """``"17:00 America/New_York"``, ``"00:00 UTC"`` or ``"22:00"`` (UTC)."""
        match = _ROLL.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a daily roll (use HH:MM and an IANA time zone, e.g. '17:00 America/New_York')")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3) or "UTC")

    @property
    def is_utc_midnight(self) -> bool:
        return self.hour == 0 and self.minute == 0 and self.tz in ("UTC", "Etc/UTC", "GMT")

    def boundary(self, day: date) -> int:
        """The end (in Unix ms) of the trading day named ``day``.

        A roll in the afternoon or evening ends the day it is named after (17:00 New York
        ends Monday's trading day on Monday); a roll in the morning, midnight included,
        starts it (00:00 UTC starts Monday's day on Monday).
        """
        on = day if self.hour >= 12 else day + timedelta(days=1)
        local = datetime.combine(on, time(self.hour, self.minute), tzinfo=self.zone)
        return int(local.astimezone(timezone.utc).timestamp() * 1000)

    def day_of(self, ts_ms: int) -> date:
        """The name of the trading day containing ``ts_ms``."""
        local = datetime.fromtimestamp(ts_ms / 1000, tz=self.zone).date()
        for candidate in (local - timedelta(days=1), local, local + timedelta(days=1), local + timedelta(days=2)):
            if ts_ms < self.boundary(candidate):
                return candidate
        raise AssertionError("unreachable: a trading day is at most 25 hours long")


UTC_MIDNIGHT = DailyRoll()


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A bar length. ``calendar`` timeframes (days, weeks) follow the daily roll."""

    name: str
    ms: int
    calendar: bool
    days: int = 0

    @classmethod
    def parse(cls, name: str) -> Timeframe:
        spec = parse_timeframe(name)
        return cls(name, spec.ms, spec.calendar, spec.days)


@lru_cache(maxsize=64)
def timeframe(name: str) -> Timeframe:
    return Timeframe.parse(name)


class Buckets:
    """Bucket boundaries of one timeframe under one daily roll, scalar and vectorised."""

    __slots__ = ("timeframe", "roll", "_bounds_cache")

    def __init__(self, tf: Timeframe | str, roll: DailyRoll = UTC_MIDNIGHT) -> None:
        self.timeframe = timeframe(tf) if isinstance(tf, str) else tf
        self.roll = roll
        self._bounds_cache: dict[date, int] = {}

    def __repr__(self) -> str:
        return f"Buckets({self.timeframe.name}, {self.roll})"

    @property
    def fixed(self) -> bool:
        """True when every bucket has the same length and UTC-aligned boundaries."""
        return not self.timeframe.calendar or (self.roll.is_utc_midnight and self.timeframe.days == 1)

    def _boundary(self, day: date) -> int:
        ms = self._bounds_cache.get(day)
        if ms is None:
            if len(self._bounds_cache) > 4096:
                self._bounds_cache.clear()
            ms = self._bounds_cache[day] = self.roll.boundary(day)
        return ms

    def _day_start(self, day: date) -> int:
        return self._boundary(day - timedelta(days=1))

    def start(self, ts_ms: int) -> int:
        if self.fixed:
            return ts_ms - ts_ms % self.timeframe.ms
        day = self.roll.day_of(ts_ms)
        if self.timeframe.days == 7:
            day -= timedelta(days=day.weekday())
        return self._day_start(day)

    def end(self, start_ms: int) -> int:
        """The end of the bucket that starts at ``start_ms``."""
        if self.fixed:
            return start_ms + self.timeframe.ms
        day = self.roll.day_of(start_ms)
        return self._boundary(day + timedelta(days=self.timeframe.days - 1))

    def bounds(self, ts_ms: int) -> tuple[int, int]:
        start = self.start(ts_ms)
        return start, self.end(start)

    def starts(self, ts: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`start` over int64 Unix-ms timestamps."""
        import numpy as np

        ts = np.asarray(ts, dtype=np.int64)
        if self.fixed or ts.size == 0:
            return ts - ts % self.timeframe.ms
        edges = self.edges(int(ts.min()), int(ts.max()))
        return edges[np.searchsorted(edges, ts, side="right") - 1]

    def ends(self, starts: np.ndarray) -> np.ndarray:
        import numpy as np

        starts = np.asarray(starts, dtype=np.int64)
        if self.fixed or starts.size == 0:
            return starts + self.timeframe.ms
        edges = self.edges(int(starts.min()), int(starts.max()) + 1)
        return edges[np.searchsorted(edges, starts, side="right")]

    def edges(self, first_ms: int, last_ms: int) -> np.ndarray:
        """Every bucket boundary from the start of the bucket holding ``first_ms`` past ``last_ms``."""
        import numpy as np

        edge = self.start(first_ms)
        out = [edge]
        while edge <= last_ms:
            edge = self.end(edge)
            out.append(edge)
        return np.asarray(out, dtype=np.int64)

    def nests_in(self, coarse: Buckets) -> bool:
        """True when every bucket of this timeframe lies inside one bucket of ``coarse``.

        Then the coarse bars can be merged from these bars instead of from the ticks.
        """
        fine = self.timeframe
        if not coarse.timeframe.calendar:
            return not fine.calendar and coarse.timeframe.ms % fine.ms == 0
        if fine.calendar:
            return self.roll == coarse.roll and (fine.days == 1 or fine.days == coarse.timeframe.days)
        year = datetime.now(timezone.utc).year
        sample = [date(year, month, 15) for month in range(1, 13)]
        return all(coarse.roll.boundary(day) % fine.ms == 0 for day in sample)
