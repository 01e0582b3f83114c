"""Gap detection of the Polygon historical downloader: expected buckets, missing spans, request ranges."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from nodes.marketdata.timeframes import Buckets, timeframe
from nodes.polygon_historical.gaps import (
    RequestRange,
    base_weight,
    expected_starts,
    find_gaps,
    market_open_within,
    polygon_span,
    request_ranges,
)

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp() * 1000)


FRI = ms("2026-10-30T00:00:00Z")  # a Friday; the market closes at 22:00
SAT = FRI + DAY
SUN = FRI + 2 * DAY  # reopens at 22:00
MON = FRI + 3 * DAY


@pytest.mark.parametrize(
    ("name", "span"),
    [("1m", (1, "minute")), ("5m", (5, "minute")), ("15m", (15, "minute")), ("30m", (30, "minute")),
     ("1h", (1, "hour")), ("4h", (4, "hour")), ("1d", (1, "day")), ("1w", (1, "week"))],
)
def test_timeframes_map_to_polygon_multiplier_and_timespan(name: str, span: tuple[int, str]) -> None:
    assert polygon_span(timeframe(name)) == span


def test_market_is_closed_from_friday_22_to_sunday_22() -> None:
    assert market_open_within(FRI + 21 * HOUR, FRI + 22 * HOUR)
    assert not market_open_within(FRI + 22 * HOUR, FRI + 23 * HOUR)
    assert not market_open_within(SAT, SUN)
    assert not market_open_within(SUN + 21 * HOUR, SUN + 22 * HOUR)
    assert market_open_within(SUN + 21 * HOUR, SUN + 23 * HOUR)  # a bucket the reopening falls in
    assert market_open_within(SUN, MON)  # Sunday's daily bar holds 22:00-24:00


def test_hourly_buckets_skip_the_weekend() -> None:
    got = expected_starts(Buckets("1h"), FRI + 20 * HOUR, MON + HOUR)
    assert got == [FRI + 20 * HOUR, FRI + 21 * HOUR, SUN + 22 * HOUR, SUN + 23 * HOUR, MON]


def test_minute_buckets_around_the_close_and_the_reopening() -> None:
    got = expected_starts(Buckets("1m"), FRI + 21 * HOUR + 58 * MIN, SUN + 22 * HOUR + 2 * MIN)
    assert got == [FRI + 21 * HOUR + 58 * MIN, FRI + 21 * HOUR + 59 * MIN, SUN + 22 * HOUR, SUN + 22 * HOUR + MIN]


def test_four_hour_and_daily_buckets_that_straddle_the_close_are_expected() -> None:
    four = expected_starts(Buckets("4h"), FRI + 16 * HOUR, MON + 4 * HOUR)
    assert four == [FRI + 16 * HOUR, FRI + 20 * HOUR, SUN + 20 * HOUR, MON]
    daily = expected_starts(Buckets("1d"), FRI - DAY, MON + DAY)
    assert daily == [FRI - DAY, FRI, SUN, MON]  # no Saturday


def test_every_week_has_open_hours() -> None:
    weeks = expected_starts(Buckets("1w"), MON - 14 * DAY, MON + 7 * DAY)
    assert weeks == [MON - 14 * DAY, MON - 7 * DAY, MON]


def test_only_whole_buckets_inside_the_window() -> None:
    start, end = MON + 10 * HOUR + 30 * MIN, MON + 14 * HOUR + 59 * MIN
    assert expected_starts(Buckets("1h"), start, end) == [MON + 11 * HOUR, MON + 12 * HOUR, MON + 13 * HOUR]
    assert expected_starts(Buckets("1d"), start, end) == []


def test_the_still_open_bucket_is_never_a_gap() -> None:
    now = MON + 10 * HOUR + 30 * MIN
    buckets = Buckets("1h")
    plan = find_gaps(buckets, now - 3 * HOUR, buckets.start(now), present=set())
    assert plan.missing == [MON + 8 * HOUR, MON + 9 * HOUR]
    assert plan.ranges == [RequestRange(MON + 8 * HOUR, MON + 10 * HOUR, 2)]
    assert plan.ranges[0].to_ms == MON + 10 * HOUR - 1  # Polygon's `to` is inclusive


def test_contiguous_missing_spans_become_one_request_each() -> None:
    buckets = Buckets("1h")
    expected = [MON + i * HOUR for i in range(10)]
    present = {MON + 3 * HOUR, MON + 4 * HOUR, MON + 7 * HOUR}
    assert request_ranges(expected, present, buckets) == [
        RequestRange(MON, MON + 3 * HOUR, 3),
        RequestRange(MON + 5 * HOUR, MON + 7 * HOUR, 2),
        RequestRange(MON + 8 * HOUR, MON + 10 * HOUR, 2),
    ]
    assert request_ranges(expected, set(expected), buckets) == []


def test_a_weekend_does_not_split_a_missing_span() -> None:
    buckets = Buckets("1h")
    plan = find_gaps(buckets, FRI + 20 * HOUR, MON + 2 * HOUR, present={MON + HOUR})
    assert plan.missing == [FRI + 20 * HOUR, FRI + 21 * HOUR, SUN + 22 * HOUR, SUN + 23 * HOUR, MON]
    assert plan.ranges == [RequestRange(FRI + 20 * HOUR, MON + HOUR, 5)]


def test_requests_respect_the_limit_of_base_aggregates() -> None:
    minutes = Buckets("1m")
    expected = [MON + i * MIN for i in range(250)]
    ranges = request_ranges(expected, set(), minutes, limit=100)
    assert [(r.start_ms, r.end_ms, r.bars) for r in ranges] == [
        (MON, MON + 100 * MIN, 100), (MON + 100 * MIN, MON + 200 * MIN, 100), (MON + 200 * MIN, MON + 250 * MIN, 50)
    ]
    hours = Buckets("1h")  # each hourly bar is built from 60 minute aggregates
    assert base_weight(hours, MON) == 60
    ranges = request_ranges([MON + i * HOUR for i in range(25)], set(), hours, limit=600)
    assert [r.bars for r in ranges] == [10, 10, 5]
    days = Buckets("1d")  # a daily bar needs 1440 base aggregates: more than the limit, so one per request
    assert [r.bars for r in request_ranges([MON, MON + DAY], set(), days, limit=1000)] == [1, 1]


def test_known_empty_buckets_are_neither_requested_nor_a_break() -> None:
    buckets = Buckets("1m")
    expected = [MON + i * MIN for i in range(6)]
    known = {MON + 2 * MIN, MON + 5 * MIN}
    plan = find_gaps(buckets, MON, MON + 6 * MIN, present={MON + 4 * MIN}, known_empty=known)
    assert plan.expected == len(expected)
    assert plan.missing == [MON, MON + MIN, MON + 3 * MIN]
    assert plan.ranges == [RequestRange(MON, MON + 4 * MIN, 3)]


@pytest.mark.parametrize("seed", range(25))
def test_ranges_cover_exactly_the_missing_buckets(seed: int) -> None:
    rng = random.Random(seed)
    tf = rng.choice(["1m", "5m", "1h", "4h", "1d"])
    buckets = Buckets(tf)
    start = FRI - rng.randrange(0, 5) * DAY + rng.randrange(0, DAY)
    end = start + rng.randrange(1, 40) * buckets.timeframe.ms * (3 if tf in ("1m", "5m") else 1) + DAY
    expected = expected_starts(buckets, start, end)
    step = buckets.timeframe.ms
    first = start + (-start) % step
    assert expected == [b for b in range(first, end - step + 1, step) if market_open_within(b, b + step)]
    present = {b for b in expected if rng.random() < 0.4}
    known = {b for b in expected if b not in present and rng.random() < 0.1}
    limit = rng.choice([1, 50, 300, 5000, 50_000])
    plan = find_gaps(buckets, start, end, present, known_empty=known, limit=limit)
    covered = [b for r in plan.ranges for b in expected if r.start_ms <= b < r.end_ms]
    requested = [b for b in covered if b not in known]
    assert requested == plan.missing == [b for b in expected if b not in present and b not in known]
    assert not present & set(covered)  # no present bar is downloaded again
    assert all(sum(base_weight(buckets, b) for b in expected if r.start_ms <= b < r.end_ms and b not in known) <= max(
        limit, base_weight(buckets, r.start_ms)) for r in plan.ranges)
    assert all(r.bars == sum(1 for b in plan.missing if r.start_ms <= b < r.end_ms) for r in plan.ranges)
    # minimal: two consecutive requests are split either by a present bar or by the limit
    for a, b in zip(plan.ranges, plan.ranges[1:]):
        between = [x for x in expected if a.end_ms <= x < b.start_ms]
        weight = sum(base_weight(buckets, x) for x in plan.missing if a.start_ms <= x < b.end_ms)
        assert any(x in present for x in between) or weight > limit
    assert all(b >= start and buckets.end(b) <= end and market_open_within(b, buckets.end(b)) for b in expected)
