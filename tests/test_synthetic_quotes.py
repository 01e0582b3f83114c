"""Seeded synthetic quotes: reproducible per hour, continuous across hours, shaped by sessions, closed at weekends."""

from __future__ import annotations

import statistics
from datetime import datetime, timezone

from nodes.marketdata.synthetic import HOUR_MS, SyntheticQuotes, in_weekend, is_holiday, market_closed


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


MONDAY = ms("2026-11-02T00:00:00")


def test_an_hour_is_the_same_alone_in_any_order_and_for_the_same_seed_only() -> None:
    a = SyntheticQuotes(["EURUSD", "XAUUSD"], seed=5)
    b = SyntheticQuotes(["XAUUSD", "EURUSD"], seed=5)
    hour = MONDAY + 13 * HOUR_MS
    b.hour("EURUSD", hour + 5 * HOUR_MS)  # generating another hour first changes nothing
    assert a.hour("EURUSD", hour) == b.hour("EURUSD", hour)
    assert a.hour("EURUSD", hour) != SyntheticQuotes(["EURUSD"], seed=6).hour("EURUSD", hour)
    merged = list(a.between(hour, hour + 2 * HOUR_MS))
    assert [q.ts for q in merged] == sorted(q.ts for q in merged)
    assert {q for q in merged if q.symbol == "EURUSD" and q.ts < hour + HOUR_MS} == set(a.hour("EURUSD", hour))


def test_prices_are_continuous_across_hour_boundaries_and_spreads_are_sane() -> None:
    quotes = SyntheticQuotes(["EURUSD", "USDJPY", "XAUUSD"], seed=1)
    for symbol, pip in (("EURUSD", 1e-4), ("USDJPY", 1e-2), ("XAUUSD", 1e-2)):
        jumps, moves = [], []
        for h in range(8, 16):
            end = quotes.hour(symbol, MONDAY + h * HOUR_MS)
            start = quotes.hour(symbol, MONDAY + (h + 1) * HOUR_MS)
            jumps.append(abs(start[0].bid - end[-1].bid) / end[-1].bid)
            moves.extend(abs(x.bid - y.bid) / y.bid for x, y in zip(end[1:], end))
        assert max(jumps) < 20 * statistics.mean(moves) + 1e-4  # no gap at the boundary beyond a few steps
        ticks = [q for h in range(8, 16) for q in quotes.hour(symbol, MONDAY + h * HOUR_MS)]
        assert all(q.ask > q.bid > 0 for q in ticks)
        assert 0.3 < statistics.median((q.ask - q.bid) / pip for q in ticks) < 60


def test_sessions_shape_activity_and_spreads() -> None:
    quotes = SyntheticQuotes(["EURUSD"], seed=2)
    quiet = [q for d in range(3) for q in quotes.hour("EURUSD", MONDAY + d * 24 * HOUR_MS + 22 * HOUR_MS)]
    busy = [q for d in range(3) for q in quotes.hour("EURUSD", MONDAY + d * 24 * HOUR_MS + 13 * HOUR_MS)]
    assert len(busy) > 3 * len(quiet)
    assert statistics.median(q.ask - q.bid for q in quiet) > statistics.median(q.ask - q.bid for q in busy)


def test_no_quotes_at_weekends_or_on_christmas() -> None:
    quotes = SyntheticQuotes(["EURUSD"], seed=3)
    friday_late, sunday_open = ms("2026-11-06T22:00:00"), ms("2026-11-08T22:00:00")
    assert quotes.hour("EURUSD", friday_late - HOUR_MS)  # Friday 21:00 trades
    assert all(in_weekend(h) and not quotes.hour("EURUSD", h) for h in range(friday_late, sunday_open, HOUR_MS))
    assert quotes.hour("EURUSD", sunday_open) and not in_weekend(sunday_open)
    christmas = ms("2026-12-25T10:00:00")
    assert is_holiday(christmas) and market_closed(christmas) and quotes.hour("EURUSD", christmas) == []
