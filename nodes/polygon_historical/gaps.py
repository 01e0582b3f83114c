"""Which bars a table lacks, and the fewest Polygon requests that fetch them (pure functions).

A bucket is *expected* when it has ended inside the scanned window and the FX market is open
for at least part of it (closed from Friday 22:00 to Sunday 22:00 UTC), so a Sunday daily bar
is expected and a Saturday one is not. Missing buckets that follow each other in the expected
sequence (a weekend between them does not separate them) form one request; a request is cut
when it would need more than ``limit`` of Polygon's *base* aggregates (minute bars: ``limit``
counts the base aggregates used to build the answer, not the bars returned).

Buckets the provider was already asked for and had no bar for (``known_empty``) are neither
requested again nor do they separate two missing spans.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from nodes.marketdata.synthetic import WEEK_MS, WEEKEND, in_weekend, since_monday, weekend_end
from nodes.marketdata.timeframes import Buckets, Timeframe

BASE_MS = 60_000
"""Polygon builds every aggregate from minute aggregates; ``limit`` counts those."""
MAX_LIMIT = 50_000

_TIMESPANS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def polygon_span(tf: Timeframe) -> tuple[int, str]:
    """``1m`` → ``(1, "minute")``, ``4h`` → ``(4, "hour")``, ``1d`` → ``(1, "day")``."""
    unit = tf.name[-1]
    return tf.ms // _UNIT_MS[unit], _TIMESPANS[unit]


def market_open_within(start_ms: int, end_ms: int) -> bool:
    """True when the FX market is open for some instant of ``[start_ms, end_ms)``."""
    return not (in_weekend(start_ms) and end_ms <= weekend_end(start_ms))


def next_close(ts_ms: int) -> int:
    """The first Friday 22:00 UTC after ``ts_ms`` (for an instant in the weekend: the next week's)."""
    close = ts_ms - since_monday(ts_ms) + WEEKEND[0]
    return close if ts_ms < close else close + WEEK_MS


def expected_starts(buckets: Buckets, start_ms: int, end_ms: int) -> list[int]:
    """Starts of the buckets lying wholly in ``[start_ms, end_ms)`` while the market is open."""
    out: list[int] = []
    b = buckets.start(start_ms)
    if b < start_ms:
        b = buckets.end(b)
    if buckets.fixed:  # whole open stretches at once: every bucket that starts before the close
        step = buckets.timeframe.ms
        while b + step <= end_ms:
            if market_open_within(b, b + step):
                stop = min(next_close(b), end_ms - step + 1)
                out.extend(range(b, stop, step))
                b = buckets.start(stop - 1) + step
            else:
                b = max(b + step, buckets.start(weekend_end(b)))
        return out
    while (e := buckets.end(b)) <= end_ms:
        if market_open_within(b, e):
            out.append(b)
            b = e
        else:
            b = max(e, buckets.start(weekend_end(b)))
    return out


@dataclass(frozen=True, slots=True)
class RequestRange:
    """One aggregates request: bars starting in ``[start_ms, end_ms)``; ``bars`` of them are missing."""

    start_ms: int
    end_ms: int
    bars: int

    @property
    def to_ms(self) -> int:
        """Polygon's ``to`` is inclusive: the last millisecond of the range."""
        return self.end_ms - 1


def base_weight(buckets: Buckets, start_ms: int) -> int:
    """Base (minute) aggregates a bucket is built from, at least one."""
    return max(1, (buckets.end(start_ms) - start_ms) // BASE_MS)


def request_ranges(
    expected: Sequence[int],
    present: Collection[int],
    buckets: Buckets,
    *,
    limit: int = MAX_LIMIT,
    known_empty: Collection[int] = (),
) -> list[RequestRange]:
    """Merge the missing buckets of ``expected`` into contiguous requests of at most ``limit`` base aggregates."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    ranges: list[RequestRange] = []
    fixed_weight = base_weight(buckets, expected[0]) if buckets.fixed and expected else None
    first: int | None = None
    last = 0
    count = weight = 0

    def close() -> None:
        nonlocal first, count, weight
        if first is not None:
            ranges.append(RequestRange(first, buckets.end(last), count))
        first, count, weight = None, 0, 0

    for b in expected:
        if b in present:
            close()
            continue
        if b in known_empty:
            continue
        w = fixed_weight or base_weight(buckets, b)
        if first is not None and weight + w > limit:
            close()
        if first is None:
            first = b
        last = b
        count += 1
        weight += w
    close()
    return ranges


@dataclass(frozen=True, slots=True)
class GapPlan:
    expected: int
    missing: list[int]
    ranges: list[RequestRange]


def find_gaps(
    buckets: Buckets,
    start_ms: int,
    end_ms: int,
    present: Collection[int],
    *,
    known_empty: Collection[int] = (),
    limit: int = MAX_LIMIT,
) -> GapPlan:
    """The expected buckets of ``[start_ms, end_ms)`` not in ``present`` nor ``known_empty``, and the requests for them."""
    expected = expected_starts(buckets, start_ms, end_ms)
    missing = [b for b in expected if b not in present and b not in known_empty]
    ranges = request_ranges(expected, present, buckets, limit=limit, known_empty=known_empty)
    return GapPlan(len(expected), missing, ranges)
