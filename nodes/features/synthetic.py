"""A deterministic synthetic world for the checks and tests: bars, calendar and FRED with their true release times.

Bars are random walks with volatility clustering and a common USD factor (so the basket and
gold correlations mean something), on each timeframe's own grid ending at the same instant,
skipping the FX weekend (Friday 22:00 to Sunday 22:00 UTC). Every external datum carries the
time it really became known, which :meth:`SyntheticWorld.history` uses to cut the world at any
instant, independently of the lags the feature set declares:

- calendar events are published a week ahead, their actual 1 to 10 minutes after the event;
- daily FRED series are released the next business day at 14:00 UTC (a Friday rate on Monday),
  CPIAUCSL on the 10th to 15th of the next month at 13:30 UTC, UNRATE on the first Friday of
  the next month at 13:30 UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

from framework.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from nodes.features.bars import Bars
from nodes.features.engine import History, timeframe_ms
from nodes.features.events import Calendar
from nodes.features.featureset import Events, Macro
from nodes.features.macro import MacroData

END_MS = 1_793_577_600_000
"""2026-11-02T00:00Z, a Monday: the default end of the synthetic history."""
BASE_PRICES = {"EURUSD": 1.08, "GBPUSD": 1.27, "USDJPY": 150.0, "USDCHF": 0.88, "AUDUSD": 0.66, "USDCAD": 1.37, "NZDUSD": 0.6,
               "EURGBP": 0.85, "EURJPY": 162.0, "GBPJPY": 190.0, "AUDJPY": 99.0, "EURCHF": 0.95, "EURAUD": 1.64, "XAUUSD": 2650.0}  # fmt: skip
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "AUD", "CAD", "NZD")
DAILY_SERIES = {"DFF": (4.33, 0.002), "DGS2": (4.1, 0.03), "DGS10": (4.3, 0.03), "DEXUSEU": (1.08, 0.004), "DEXJPUS": (150.0, 0.6), "DEXUSUK": (1.27, 0.005)}
MONTHLY_SERIES = {"CPIAUCSL": (315.0, 0.0025), "UNRATE": (4.1, 0.05)}


def in_weekend(ts: np.ndarray | int) -> Any:
    """FX weekend: Friday 22:00 to Sunday 22:00 UTC (ts: bucket start)."""
    day = (np.asarray(ts) // DAY_MS + 3) % 7  # Monday = 0
    minute = (np.asarray(ts) % DAY_MS) // MINUTE_MS
    return ((day == 4) & (minute >= 22 * 60)) | (day == 5) | ((day == 6) & (minute < 22 * 60))


def grid(timeframe: str, count: int, end_ms: int) -> np.ndarray:
    """The last ``count`` bucket starts of ``timeframe`` before ``end_ms``, weekend buckets left out (intraday)."""
    ms = timeframe_ms(timeframe)
    if ms >= DAY_MS:
        starts = end_ms - ms * np.arange(count, 0, -1, dtype=np.int64)
        return starts[~in_weekend(starts)] if ms == DAY_MS else starts
    out: list[np.ndarray] = []
    have, stop = 0, end_ms
    while have < count:
        chunk = stop - ms * np.arange(2 * (count - have) + 16, 0, -1, dtype=np.int64)
        chunk = chunk[~in_weekend(chunk)]
        out.insert(0, chunk)
        have += len(chunk)
        stop = int(chunk[0]) if len(chunk) else stop - ms * (2 * (count - have) + 16)
    return np.concatenate(out)[-count:]


def _side(symbol: str) -> float:
    return 1.0 if symbol.startswith("USD") else -1.0 if symbol[3:6] == "USD" else 0.0


def synthetic_bars(symbols: Sequence[str], timeframe: str, count: int, seed: int, end_ms: int = END_MS) -> dict[str, Bars]:
    """``count`` bars per symbol on a common grid, with a shared USD factor and volatility clustering."""
    ts = grid(timeframe, count, end_ms)
    n = len(ts)
    ms = timeframe_ms(timeframe)
    rng = np.random.default_rng([seed, ms // MINUTE_MS])
    scale = 1.2e-4 * np.sqrt(ms / MINUTE_MS)
    regime = np.exp(np.convolve(rng.normal(0, 0.35, n + 200), np.ones(50) / 50, mode="full")[200 : 200 + n] * 3)
    usd = rng.normal(0, scale, n) * regime
    out: dict[str, Bars] = {}
    for symbol in symbols:
        r = np.random.default_rng([seed, ms // MINUTE_MS, sum(map(ord, symbol))])
        base = BASE_PRICES.get(symbol, 1.0)
        vol = regime * (2.0 if symbol.startswith("XAU") else 1.0)
        ret = _side(symbol) * usd + r.normal(0, scale, n) * vol
        close = base * np.exp(np.cumsum(ret))
        open_ = np.empty(n)
        open_[0] = base
        open_[1:] = close[:-1] * np.exp(r.normal(0, scale * 0.05, n - 1))
        wick = np.abs(r.normal(0, scale * 0.6, (2, n))) * vol
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        digits = 2 if base > 500 else 3 if base > 20 else 5
        open_, high, low, close = (np.round(x, digits) for x in (open_, high, low, close))
        high = np.maximum.reduce([high, open_, close])
        low = np.minimum.reduce([low, open_, close])
        ticks = np.maximum(1, r.poisson(30 * (ms / MINUTE_MS) ** 0.7 * vol))
        pip = 10.0 ** (2 - digits) if digits < 5 else 1e-4
        spread = pip * (1.0 + 0.3 * np.abs(r.normal(0, 1, n))) * np.sqrt(vol)
        out[symbol] = Bars(
            ts.copy(), ts + ms, open_, high, low, close, ticks.astype(np.float64), spread, spread * 0.7, spread * 1.8
        )
    return out


@dataclass(frozen=True)
class KnownEvent:
    """An external datum with the time it became known (``known_at``), and for calendar events when its actual did."""

    event: dict[str, Any]
    known_at: int
    actual_at: int | None = None


def _next_business_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _ms(day: date, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc).timestamp() * 1000)


def synthetic_fred(series: Sequence[str], start_ms: int, end_ms: int, seed: int) -> list[KnownEvent]:
    out: list[KnownEvent] = []
    first = datetime.fromtimestamp(start_ms / 1000, timezone.utc).date()
    last = datetime.fromtimestamp(end_ms / 1000, timezone.utc).date()
    for sid in series:
        rng = np.random.default_rng([seed, sum(map(ord, sid))])
        if sid in MONTHLY_SERIES:
            level, step = MONTHLY_SERIES[sid]
            month = date(first.year - 2, first.month, 1)
            while month <= last:
                nxt = date(month.year + month.month // 12, month.month % 12 + 1, 1)
                if sid == "UNRATE":
                    release = nxt + timedelta(days=(4 - nxt.weekday()) % 7)
                    level += rng.normal(0, step)
                else:
                    release = nxt + timedelta(days=int(rng.integers(9, 15)))
                    level *= 1 + rng.normal(step, step / 2)
                value = round(float(level), 3)
                out.append(KnownEvent({"type": "fred_indicators", "ts": _ms(month), "source": "fred", "series": sid, "value": value}, _ms(release, 13, 30)))
                month = nxt
        else:
            level, step = DAILY_SERIES.get(sid, (1.0, 0.01))
            day = first - timedelta(days=120)
            while day <= last:
                if day.weekday() < 5:
                    level += rng.normal(0, step)
                    value = round(float(level), 4)
                    event = {"type": "fred_indicators", "ts": _ms(day), "source": "fred", "series": sid, "value": value}
                    out.append(KnownEvent(event, _ms(_next_business_day(day), 14)))
                day += timedelta(days=1)
    return out


def synthetic_calendar(currencies: Sequence[str], start_ms: int, end_ms: int, seed: int) -> list[KnownEvent]:
    rng = np.random.default_rng([seed, 17])
    out: list[KnownEvent] = []
    impacts = ("low", "medium", "high")
    for currency in sorted(set(currencies)):
        t = start_ms - 2 * DAY_MS
        while t < end_ms + 8 * DAY_MS:
            t += int(rng.integers(2 * HOUR_MS, 14 * HOUR_MS)) // (15 * MINUTE_MS) * (15 * MINUTE_MS)
            forecast = round(float(rng.normal(1.0, 1.0)), 2)
            actual = round(forecast + float(rng.normal(0, 0.3)), 2)
            event = {
                "type": "economic_calendar", "ts": t, "source": "synthetic", "series": f"{currency}.event_{t // MINUTE_MS}",
                "value": actual, "actual": actual, "forecast": forecast, "previous": round(float(rng.normal(1.0, 1.0)), 2),
                "country": currency, "impact": impacts[int(rng.choice(3, p=[0.3, 0.3, 0.4]))], "title": "synthetic release",
            }  # fmt: skip
            out.append(KnownEvent(event, t - 7 * DAY_MS, t + int(rng.integers(1, 11)) * MINUTE_MS))
    return out


class SyntheticWorld:
    """Bars of every (symbol, timeframe), the calendar and FRED, each datum with when it became known."""

    def __init__(
        self, symbols: Sequence[str], timeframes: Sequence[str], bars: int, seed: int = 7, end_ms: int = END_MS,
        fred_series: Sequence[str] = (), with_calendar: bool = True,
    ) -> None:  # fmt: skip
        self.symbols = list(symbols)
        self.timeframes = list(timeframes)
        self.bars: dict[tuple[str, str], Bars] = {}
        for tf in self.timeframes:
            for symbol, b in synthetic_bars(self.symbols, tf, bars, seed, end_ms).items():
                self.bars[(symbol, tf)] = b
        start = min(int(b.ts[0]) for b in self.bars.values()) if self.bars else end_ms
        self.start_ms, self.end_ms = start, end_ms
        currencies = sorted({c for s in self.symbols for c in (s[:3], s[3:6]) if c in CURRENCIES})
        self.calendar = synthetic_calendar(currencies, start, end_ms, seed) if with_calendar else []
        self.fred = synthetic_fred(list(fred_series), start, end_ms, seed)

    def history(self, events: Events | None, macro: Macro | None, at: int | None = None) -> History:
        """The world as known at ``at`` (all of it when None): bars closed by then, external data known by then."""
        bars = self.bars
        if at is not None:
            bars = {k: b.slice(0, int(np.searchsorted(b.ts_close, at, side="right"))) for k, b in bars.items()}
        calendar = Calendar(events) if events is not None else None
        if calendar is not None:
            for known in self.calendar:
                if at is None or known.known_at <= at:
                    event = dict(known.event)
                    if at is not None and known.actual_at is not None and known.actual_at > at:
                        event["actual"] = event["value"] = None
                    calendar.add(event)
        data = MacroData(macro) if macro is not None else None
        if data is not None:
            data.extend(k.event for k in self.fred if at is None or k.known_at <= at)
        return History(dict(bars), calendar, data)


def stored_history(bars: Mapping[tuple[str, str], Bars], calendar_rows: Sequence[Mapping[str, Any]], fred_rows: Sequence[Mapping[str, Any]],
                   events: Events | None, macro: Macro | None, at: int | None = None) -> History:  # fmt: skip
    """A history from stored rows cut at ``at``; release times are unknown there, so the declared lags stand in."""
    from framework.durations import parse_ms

    cut = dict(bars)
    if at is not None:
        cut = {k: b.slice(0, int(np.searchsorted(b.ts_close, at, side="right"))) for k, b in bars.items()}
    calendar = Calendar(events) if events is not None else None
    if calendar is not None:
        horizon, lag = parse_ms(events.horizon) or 0, parse_ms(events.release_lag) or 0  # type: ignore[union-attr]
        for row in calendar_rows:
            if at is None or row["ts"] - horizon <= at:
                event = dict(row)
                if at is not None and row["ts"] + lag > at:
                    event["actual"] = event["value"] = None
                calendar.add(event)
    data = MacroData(macro) if macro is not None else None
    if data is not None:
        for row in fred_rows:
            series = data.p.series.get(row.get("series"))  # type: ignore[arg-type]
            if series is not None and (at is None or row["ts"] + (parse_ms(series.lag) or 0) <= at):
                data.add(row)
    return History(cut, calendar, data)
