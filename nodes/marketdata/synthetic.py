"""Seeded synthetic quotes: realistic levels, spreads, sessions and weekends, reproducible per hour.

Every UTC hour of every symbol is generated on its own from ``(seed, symbol, hour)``: the mid
price at each hour boundary comes from a deterministic slow walk, and the path inside the hour
is a Brownian bridge between the two boundaries. So any hour can be produced alone (the
Dukascopy simulator serves hour files in any order), the same hour is identical every time,
and the series is continuous across hours.

Activity follows the trading sessions (quiet late New York / early Asia, busiest in the
London–New York overlap) and spreads widen when it is quiet. Nothing is quoted from Friday
22:00 to Sunday 22:00 UTC, nor on 25 December and 1 January.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import NamedTuple

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
WEEKEND = (4 * DAY_MS + 22 * HOUR_MS, 6 * DAY_MS + 22 * HOUR_MS)
"""Friday 22:00 to Sunday 22:00 UTC, as offsets from Monday 00:00."""

TYPICAL: dict[str, tuple[float, float, int]] = {
    "EURUSD": (1.0850, 0.8, 5), "GBPUSD": (1.2650, 1.2, 5), "USDJPY": (149.50, 1.0, 3), "USDCHF": (0.8850, 1.5, 5),
    "AUDUSD": (0.6550, 1.0, 5), "USDCAD": (1.3650, 1.5, 5), "NZDUSD": (0.6050, 1.6, 5), "EURGBP": (0.8580, 1.2, 5),
    "EURJPY": (162.20, 1.8, 3), "GBPJPY": (189.10, 2.5, 3), "AUDJPY": (97.90, 2.0, 3), "EURCHF": (0.9600, 1.8, 5),
    "EURAUD": (1.6550, 2.2, 5), "XAUUSD": (2650.0, 25.0, 2), "XAGUSD": (31.0, 2.5, 3),
}
"""Symbol → (typical mid, typical spread in pips, quote digits)."""

SESSION_ACTIVITY = (
    0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 1.1,  # 00-07 UTC: Asia
    1.4, 1.4, 1.3, 1.2,  # 08-11: London
    1.6, 1.9, 1.9, 1.8, 1.5,  # 12-16: London / New York overlap
    1.1, 1.0, 0.9, 0.8,  # 17-20: New York
    0.4, 0.3, 0.4,  # 21-23: the quiet roll-over hours
)
"""Relative quote rate per UTC hour; spreads scale with 1/sqrt(activity)."""

HOURLY_VOL = 0.0012
"""Typical relative move of the mid in one hour (about 12 pips on EURUSD)."""


class Quote(NamedTuple):
    symbol: str
    ts: int
    bid: float
    ask: float


def since_monday(ts_ms: int) -> int:
    return (ts_ms + 3 * DAY_MS) % WEEK_MS  # 1970-01-01 was a Thursday


def in_weekend(ts_ms: int) -> bool:
    return WEEKEND[0] <= since_monday(ts_ms) < WEEKEND[1]


def weekend_end(ts_ms: int) -> int:
    """The Sunday 22:00 UTC that ends the weekend containing ``ts_ms``."""
    return ts_ms - since_monday(ts_ms) + WEEKEND[1]


def is_holiday(ts_ms: int) -> bool:
    day = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return (day.month, day.day) in ((12, 25), (1, 1))


def market_closed(hour_start_ms: int) -> bool:
    return in_weekend(hour_start_ms) or is_holiday(hour_start_ms)


def pip_of(digits: int) -> float:
    """The usual pip for a quote precision: 5 → 0.0001, 3 → 0.01, 2 → 0.01 (gold)."""
    return {5: 1e-4, 4: 1e-4, 3: 1e-2, 2: 1e-2, 1: 1e-1}.get(digits, 10.0 ** -(digits - 1))


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


class SyntheticQuotes:
    """Deterministic quotes for a set of symbols (see the module docstring)."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int = 7,
        mean_interval_ms: int = 2000,
        digits: Mapping[str, int] | None = None,
        pips: Mapping[str, float] | None = None,
    ) -> None:
        if mean_interval_ms < 1:
            raise ValueError("mean_interval_ms must be at least 1")
        self.symbols = list(symbols)
        self.seed = seed
        self.mean_interval_ms = mean_interval_ms
        self.digits = {s: (digits or {}).get(s, TYPICAL.get(s, (1.0, 2.0, 5))[2]) for s in self.symbols}
        self.pips = {s: (pips or {}).get(s, pip_of(self.digits[s])) for s in self.symbols}

    def mid_at_hour(self, symbol: str, hour_start_ms: int) -> float:
        """The mid at an hour boundary: a slow deterministic walk around the typical level."""
        typical = TYPICAL.get(symbol, (1.0, 2.0, 5))[0]
        hour = hour_start_ms // HOUR_MS
        day = hour // 24
        x = 0.0
        for period_days, weight in ((97, 0.03), (23, 0.012), (5, 0.006)):
            phase = _rng(self.seed, symbol, "phase", period_days).random() * 2 * math.pi
            x += weight * math.sin(2 * math.pi * hour / (period_days * 24) + phase)
        x += HOURLY_VOL * 0.7 * _rng(self.seed, symbol, "h", hour).gauss(0, 1)
        x += HOURLY_VOL * 1.5 * _rng(self.seed, symbol, "d", day).gauss(0, 1)
        return typical * math.exp(x)

    def hour(self, symbol: str, hour_start_ms: int) -> list[Quote]:
        """The quotes of one symbol in one UTC hour (empty when the market is closed)."""
        hour_start_ms -= hour_start_ms % HOUR_MS
        if market_closed(hour_start_ms):
            return []
        rng = _rng(self.seed, symbol, "ticks", hour_start_ms // HOUR_MS)
        activity = SESSION_ACTIVITY[(hour_start_ms // HOUR_MS) % 24]
        mean_gap = self.mean_interval_ms / activity
        times: list[int] = []
        t = rng.expovariate(1 / mean_gap)
        while t < HOUR_MS:
            times.append(int(t))
            t += 1 + rng.expovariate(1 / mean_gap)
        if not times:
            return []
        start_mid = self.mid_at_hour(symbol, hour_start_ms)
        end_mid = self.mid_at_hour(symbol, hour_start_ms + HOUR_MS)
        digits, pip = self.digits[symbol], self.pips[symbol]
        typical_spread = TYPICAL.get(symbol, (1.0, 2.0, 5))[1] * pip / math.sqrt(activity)
        point = 10.0 ** -digits
        step = HOURLY_VOL / math.sqrt(len(times) + 1)
        walk, w, prev_t = [], 0.0, 0
        for ts in times:
            w += rng.gauss(0, step * math.sqrt((ts - prev_t + 1) / (HOUR_MS / (len(times) + 1))))
            walk.append(w)
            prev_t = ts
        final = walk[-1] + rng.gauss(0, step)
        log_ratio = math.log(end_mid / start_mid)
        quotes = []
        for ts, w in zip(times, walk):
            frac = ts / HOUR_MS
            bridge = w - frac * final + frac * log_ratio
            mid = start_mid * math.exp(bridge)
            spread = max(point, rng.lognormvariate(math.log(typical_spread), 0.3))
            if rng.random() < 0.0005:
                spread *= 8
            bid = round(mid - spread / 2, digits)
            ask = round(max(bid + point, mid + spread / 2), digits)
            quotes.append(Quote(symbol, hour_start_ms + ts, bid, ask))
        return quotes

    def between(self, start_ms: int, end_ms: int) -> Iterator[Quote]:
        """Every quote of every symbol with ``start_ms <= ts < end_ms``, in time order (ties by symbol order)."""
        hour = start_ms - start_ms % HOUR_MS
        while hour < end_ms:
            streams = [
                [(q.ts, i, q) for q in self.hour(symbol, hour) if start_ms <= q.ts < end_ms]
                for i, symbol in enumerate(self.symbols)
            ]
            for _, _, quote in heapq.merge(*streams):
                yield quote
            hour += HOUR_MS
