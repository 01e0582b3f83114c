"""Economic-calendar features of a pair as of a bar's close: time to the next and since the last
high-impact event of its currencies, and the last release's surprise.

An event's *schedule* is taken as known ``horizon`` before it (the weekly calendar is published
days ahead), so ``event_next`` never looks further than that; its *actual* is used from event
time + ``release_lag``, or from when it arrived if that was later (streaming), never before.
Events are kept per (series, ts): a re-published event (its actual filled in) replaces the old one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from framework.durations import parse_ms
from nodes.features.featureset import Events

IMPACT_RANK = {"low": 0, "medium": 1, "high": 2}
TYPE = "economic_calendar"


@dataclass(frozen=True, slots=True)
class Event:
    ts: int
    country: str
    rank: int
    actual: float | None
    forecast: float | None
    previous: float | None
    actual_known_at: int | None = None
    """When the actual arrived (streaming); None: only the declared release lag applies."""


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def currencies(symbol: str) -> tuple[tuple[str, float], ...]:
    """(currency, sign): a surprise for the base currency moves the pair up, for the quote down."""
    return ((symbol[:3], 1.0), (symbol[3:6], -1.0))


class Calendar:
    def __init__(self, params: Events) -> None:
        self.p = params
        self.horizon = float(parse_ms(params.horizon) or 1)
        self.recency = float(parse_ms(params.recency) or 1)
        self.release_lag = parse_ms(params.release_lag) or 0
        self.min_rank = IMPACT_RANK[params.impact]
        self._events: dict[str, dict[tuple[str, int], Event]] = {}
        """country → (series, ts) → event"""
        self._arrays: dict[str, tuple[np.ndarray, ...]] = {}

    def __len__(self) -> int:
        return sum(len(e) for e in self._events.values())

    def _changed(self, country: str) -> None:
        for symbol in [s for s in self._arrays if country in (s[:3], s[3:6])]:
            del self._arrays[symbol]

    def prune(self, before_ms: int) -> None:
        """Forget events before ``before_ms`` (a long-running stream needs only recent ones)."""
        for country, events in self._events.items():
            old = [k for k in events if k[1] < before_ms]
            if old:
                for k in old:
                    del events[k]
                self._changed(country)

    def add(self, event: Mapping[str, Any], arrived_ms: int | None = None) -> bool:
        """Keep an ``external_event.v1`` of type economic_calendar; False when it is not one."""
        if event.get("type") != TYPE or not isinstance(event.get("ts"), int):
            return False
        country, impact = event.get("country"), event.get("impact")
        if not isinstance(country, str) or impact not in IMPACT_RANK:
            return False
        key = (str(event.get("series")), int(event["ts"]))
        actual = _num(event.get("actual", event.get("value")))
        known_at = None
        events = self._events.setdefault(country, {})
        old = events.get(key)
        if actual is not None and arrived_ms is not None:
            known_at = old.actual_known_at if old is not None and old.actual is not None else arrived_ms
        new = Event(key[1], country, IMPACT_RANK[impact], actual, _num(event.get("forecast")), _num(event.get("previous")), known_at)
        if old != new:
            events[key] = new
            self._changed(country)
        return True

    def extend(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.add(event)

    def _for(self, symbol: str) -> tuple[np.ndarray, ...]:
        got = self._arrays.get(symbol)
        if got is not None:
            return got
        sides = dict(currencies(symbol))
        times: list[int] = []
        releases: dict[int, list[Any]] = {}  # event time → [usable from, summed signed surprise]
        chosen = [(k, e) for c in sides for k, e in self._events.get(c, {}).items()]
        for (series, _), e in sorted(chosen):
            if e.rank < self.min_rank:
                continue
            times.append(e.ts)
            if e.actual is None or e.forecast is None:
                continue
            scale = max(abs(e.forecast), abs(e.previous or 0.0))
            if scale == 0.0:
                continue
            usable = e.ts + self.release_lag
            if e.actual_known_at is not None:
                usable = max(usable, e.actual_known_at)
            entry = releases.setdefault(e.ts, [usable, 0.0])
            entry[0] = max(entry[0], usable)
            entry[1] += (e.actual - e.forecast) / scale * sides[e.country]
        event_ts = np.array(sorted(releases), dtype=np.int64)
        usable_at = np.array([releases[t][0] for t in event_ts.tolist()], dtype=np.int64)
        surprise = np.clip(np.array([releases[t][1] for t in event_ts.tolist()], dtype=np.float64), -self.p.surprise_cap, self.p.surprise_cap)
        order = np.lexsort((event_ts, usable_at))
        event_ts, usable_at, surprise = event_ts[order], usable_at[order], surprise[order]
        # among the releases usable by a time, the latest *event*: whatever order their actuals arrived in
        newest = np.maximum.accumulate(np.where(event_ts == np.maximum.accumulate(event_ts), np.arange(len(event_ts)), 0)) if len(event_ts) else event_ts
        got = (np.array(sorted(times), dtype=np.int64), usable_at, event_ts, surprise, newest)
        self._arrays[symbol] = got
        return got

    def compute(self, symbol: str, at: np.ndarray, out: dict[str, np.ndarray]) -> None:
        times, usable_at, event_ts, surprise, newest = self._for(symbol)
        n = len(at)
        nxt = np.ones(n)
        last = np.ones(n)
        sur = np.zeros(n)
        if len(times):
            k = np.searchsorted(times, at, side="left")
            has = k < len(times)
            ahead = (times[np.minimum(k, len(times) - 1)] - at).astype(np.float64)
            nxt = np.where(has, np.minimum(ahead, self.horizon) / self.horizon, 1.0)
            has = k >= 1
            behind = (at - times[np.maximum(k - 1, 0)]).astype(np.float64)
            last = np.where(has, np.minimum(behind, self.recency) / self.recency, 1.0)
        if len(usable_at):
            j = np.searchsorted(usable_at, at, side="left") - 1
            k = newest[np.maximum(j, 0)]
            recent = (j >= 0) & ((at - event_ts[k]) <= self.recency)
            sur = np.where(recent, surprise[k], 0.0)
        out["event_next"], out["event_last"], out["event_surprise"] = nxt, last, sur
