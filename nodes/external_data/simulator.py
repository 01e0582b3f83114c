"""A local FRED and ForexFactory server speaking the real wire formats (protocols.md section 4).

Serves, on 127.0.0.1 and a free port:

- ``GET /fred/series/observations`` — deterministic generated series for any ``series_id``:
  daily (every day), business-day (no weekends, ``"."`` on holidays and a few other days) or
  monthly (first of the month, published with a lag), up to the simulator's *today* (its
  ``now_ms``, the node's clock). FX rates (``DEXUSEU``…) follow
  :class:`~nodes.marketdata.synthetic.SyntheticQuotes`, so they agree with the demo's ticks.
  ``limit`` / ``offset`` paging, ``observation_start`` / ``observation_end``, ``sort_order``
  and FRED's JSON error bodies (missing key, unknown series, bad limit).
- ``GET /ff_calendar_thisweek.json`` (and ``…nextweek.json``) — the week's events, drawn
  from a seed, with every display format of the export (``"0.2%"``, ``"175K"``, ``"-1.2M"``,
  ``"4.9B"``, ``""``), US-Eastern offsets, Holiday impact and ``All`` country rows.

:class:`Faults` injects failures for tests: a rejected key, 429s, 5xx, truncated JSON,
unknown series and malformed calendar rows. The node starts this server in-process when
its params say ``simulate: true``.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from nodes.external_data.fred import OBSERVATIONS_PATH, date_ms, ms_date
from nodes.marketdata.synthetic import SyntheticQuotes

NEW_YORK = ZoneInfo("America/New_York")
CALENDAR_THIS_WEEK = "/ff_calendar_thisweek.json"
CALENDAR_NEXT_WEEK = "/ff_calendar_nextweek.json"
ORIGIN = date(2015, 1, 1)
"""Generated series start here (a request without ``observation_start`` gets everything since)."""
MONTHLY_LAG_DAYS = 12
"""A monthly value is published this many days after the month it describes ends."""
MISSING_RATE = 0.03
"""Share of business days that are ``"."`` besides 1 January and 25 December."""

Frequency = Literal["d", "b", "m"]


@dataclass(frozen=True, slots=True)
class SimSeries:
    frequency: Frequency
    level: float
    amplitude: float = 0.0
    noise: float = 0.0
    decimals: int = 2
    growth: float = 0.0
    """Yearly relative growth of the level (CPI)."""
    fx: tuple[str, bool] | None = None
    """(symbol, inverted) for an exchange rate taken from the synthetic quotes."""


CATALOGUE: dict[str, SimSeries] = {
    "DFF": SimSeries("d", 4.33, 0.6, 0.005, 2),
    "DGS2": SimSeries("b", 4.05, 0.5, 0.03, 2),
    "DGS10": SimSeries("b", 4.25, 0.45, 0.03, 2),
    "CPIAUCSL": SimSeries("m", 237.0, 0.4, 0.15, 3, growth=0.028),
    "UNRATE": SimSeries("m", 4.1, 0.3, 0.05, 1),
    "DEXUSEU": SimSeries("b", 0.0, decimals=4, fx=("EURUSD", False)),
    "DEXJPUS": SimSeries("b", 0.0, decimals=2, fx=("USDJPY", False)),
    "DEXUSUK": SimSeries("b", 0.0, decimals=4, fx=("GBPUSD", False)),
    "DEXSZUS": SimSeries("b", 0.0, decimals=4, fx=("USDCHF", False)),
    "DEXCAUS": SimSeries("b", 0.0, decimals=4, fx=("USDCAD", False)),
    "DEXUSAL": SimSeries("b", 0.0, decimals=4, fx=("AUDUSD", False)),
    "DEXUSNZ": SimSeries("b", 0.0, decimals=4, fx=("NZDUSD", False)),
    "DCOILWTICO": SimSeries("b", 74.0, 9.0, 0.9, 2),
    "DCOILBRENTEU": SimSeries("b", 78.0, 9.0, 0.9, 2),
    "DHHNGSP": SimSeries("b", 3.1, 0.7, 0.08, 2),
}
DEFAULT_SERIES = SimSeries("b", 100.0, 5.0, 0.5, 2)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


@dataclass
class Faults:
    """Failures to inject; counters are consumed request by request, so tests can arm them mid-run."""

    reject_key: bool = False
    """Every FRED request is answered 400 "api_key is not registered"."""
    rate_limited: int = 0
    """The next N FRED requests are answered 429."""
    retry_after: str | None = None
    """``Retry-After`` sent with those 429s (FRED sends none)."""
    server_errors: int = 0
    """The next N requests (any path) are answered 500 with an HTML page."""
    malformed: int = 0
    """The next N answers (any path) are truncated JSON with status 200."""
    unknown_series: set[str] = field(default_factory=set)
    """Series answered 400 "The series does not exist"."""
    bad_calendar_rows: int = 0
    """Malformed rows mixed into the calendar (bad date, no title, unreadable forecast, not an object)."""


class FredSeriesGenerator:
    """Deterministic observations: the same (seed, series, day) always gives the same value."""

    def __init__(self, seed: int = 7) -> None:
        self.seed = seed
        self.quotes = SyntheticQuotes(sorted({s.fx[0] for s in CATALOGUE.values() if s.fx}), seed=seed)

    def spec(self, series_id: str) -> SimSeries:
        return CATALOGUE.get(series_id, DEFAULT_SERIES)

    def value(self, series_id: str, day: date) -> float:
        spec = self.spec(series_id)
        if spec.fx is not None:
            symbol, inverted = spec.fx
            mid = self.quotes.mid_at_hour(symbol, date_ms(day.isoformat()) + 16 * 3_600_000)  # about noon in New York
            return round(1.0 / mid if inverted else mid, spec.decimals)
        n = (day - ORIGIN).days
        phase = _rng(self.seed, series_id, "phase").random() * 2 * math.pi
        level = spec.level * (1.0 + spec.growth) ** (n / 365.25)
        cycle = spec.amplitude * math.sin(2 * math.pi * n / 400.0 + phase)
        wobble = 0.3 * spec.amplitude * math.sin(2 * math.pi * n / 37.0 + 2 * phase)
        noise = spec.noise * _rng(self.seed, series_id, n).gauss(0, 1)
        return round(level + cycle + wobble + noise, spec.decimals)

    def missing(self, series_id: str, day: date) -> bool:
        if self.spec(series_id).frequency != "b":
            return False
        if (day.month, day.day) in ((1, 1), (12, 25)):
            return True
        return _rng(self.seed, series_id, "missing", day.toordinal()).random() < MISSING_RATE

    def dates(self, series_id: str, start: date, end: date, today: date) -> list[date]:
        """Observation dates in ``[start, end]`` that are published by ``today``."""
        frequency = self.spec(series_id).frequency
        start = max(start, ORIGIN)
        out: list[date] = []
        if frequency == "m":
            month = date(start.year, start.month, 1)
            if month < start:
                month = _next_month(month)
            while month <= end and _next_month(month) + timedelta(days=MONTHLY_LAG_DAYS) <= today:
                out.append(month)
                month = _next_month(month)
            return out
        last = min(end, today - timedelta(days=1))
        day = start
        while day <= last:
            if frequency == "d" or day.weekday() < 5:
                out.append(day)
            day += timedelta(days=1)
        return out

    def observations(self, series_id: str, start: date, end: date, today: date) -> list[dict[str, str]]:
        stamp = today.isoformat()
        return [
            {
                "realtime_start": stamp,
                "realtime_end": stamp,
                "date": day.isoformat(),
                "value": "." if self.missing(series_id, day) else f"{self.value(series_id, day):.{self.spec(series_id).decimals}f}",
            }
            for day in self.dates(series_id, start, end, today)
        ]


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class CalendarTemplate:
    title: str
    country: str
    impact: str
    kind: str | None
    """Display suffix of forecast/previous: "%", "K", "M", "B", "" (plain) or None (no numbers)."""
    level: float = 0.0
    spread: float = 0.0
    decimals: int = 1
    weekday: int = 0
    """0 = Monday."""
    at: tuple[int, int] = (8, 30)
    """New York local time; (0, 0) for all-day events."""


CALENDAR: tuple[CalendarTemplate, ...] = (
    CalendarTemplate("ISM Manufacturing PMI", "USD", "High", "", 49.5, 1.5, 1, 0, (10, 0)),
    CalendarTemplate("Bank Holiday", "JPY", "Holiday", None, weekday=0, at=(0, 0)),
    CalendarTemplate("German ZEW Economic Sentiment", "EUR", "Medium", "", 13.0, 6.0, 1, 1, (5, 0)),
    CalendarTemplate("Claimant Count Change", "GBP", "Medium", "K", 26.0, 12.0, 1, 1, (2, 0)),
    CalendarTemplate("FOMC Member Speaks", "USD", "Low", None, weekday=1, at=(13, 0)),
    CalendarTemplate("CPI m/m", "USD", "High", "%", 0.2, 0.15, 1, 2, (8, 30)),
    CalendarTemplate("Core CPI m/m", "USD", "High", "%", 0.3, 0.1, 1, 2, (8, 30)),
    CalendarTemplate("Crude Oil Inventories", "USD", "Low", "M", -0.8, 2.5, 1, 2, (10, 30)),
    CalendarTemplate("Employment Change", "AUD", "High", "K", 25.0, 15.0, 1, 2, (19, 30)),
    CalendarTemplate("G7 Meetings", "All", "Medium", None, weekday=2, at=(0, 0)),
    CalendarTemplate("Unemployment Claims", "USD", "Medium", "K", 221.0, 12.0, 0, 3, (8, 30)),
    CalendarTemplate("Trade Balance", "USD", "Low", "B", -70.0, 6.0, 1, 3, (8, 30)),
    CalendarTemplate("Main Refinancing Rate", "EUR", "High", "%", 3.15, 0.0, 2, 3, (8, 15)),
    CalendarTemplate("Official Bank Rate", "GBP", "High", "%", 4.75, 0.0, 2, 3, (7, 0)),
    CalendarTemplate("Non-Farm Employment Change", "USD", "High", "K", 175.0, 60.0, 0, 4, (8, 30)),
    CalendarTemplate("Unemployment Rate", "USD", "High", "%", 4.1, 0.1, 1, 4, (8, 30)),
    CalendarTemplate("Employment Change", "CAD", "High", "K", 20.0, 15.0, 1, 4, (8, 30)),
    CalendarTemplate("CPI m/m", "CHF", "Medium", "%", 0.1, 0.2, 1, 4, (2, 30)),
    CalendarTemplate("Retail Sales q/q", "NZD", "Medium", "%", 0.4, 0.6, 1, 4, (17, 45)),
    CalendarTemplate("Federal Budget Balance", "USD", "Low", "B", -150.0, 60.0, 1, 4, (14, 0)),
    CalendarTemplate("OPEC-JMMC Meetings", "All", "Low", None, weekday=4, at=(0, 0)),
    CalendarTemplate("Consumer Credit m/m", "USD", "Low", "B", 12.0, 5.0, 1, 4, (15, 0)),
)


def week_start(ts_ms: int) -> datetime:
    """The Sunday 00:00 New York time that starts the export week containing ``ts_ms``."""
    local = datetime.fromtimestamp(ts_ms / 1000, tz=NEW_YORK)
    sunday = local.date() - timedelta(days=(local.weekday() + 1) % 7)
    return datetime(sunday.year, sunday.month, sunday.day, tzinfo=NEW_YORK)


def _display(value: float, kind: str, decimals: int) -> str:
    value = round(value, decimals) or 0.0  # never "-0.0"
    return f"{value:.{decimals}f}{kind}"


def calendar_week(seed: int, start: datetime) -> list[dict[str, str]]:
    """The export of the week starting ``start`` (a New York Sunday), deterministic for ``seed``."""
    rng = _rng(seed, "calendar", start.date().isoformat())
    rows: list[dict[str, str]] = []
    for template in CALENDAR:
        if rng.random() < 0.15:
            continue
        day = start.date() + timedelta(days=template.weekday + 1)
        when = datetime(day.year, day.month, day.day, *template.at, tzinfo=NEW_YORK)
        forecast = previous = ""
        if template.kind is not None:
            previous = _display(template.level + template.spread * rng.gauss(0, 1), template.kind, template.decimals)
            if rng.random() < 0.8:
                forecast = _display(template.level + template.spread * rng.gauss(0, 0.5), template.kind, template.decimals)
        rows.append(
            {
                "title": template.title,
                "country": template.country,
                "date": when.isoformat(),
                "impact": template.impact,
                "forecast": forecast,
                "previous": previous,
            }
        )
    rows.sort(key=lambda r: r["date"])
    return rows


def _bad_rows(count: int, start: datetime) -> list[Any]:
    monday = (start + timedelta(days=1, hours=9)).isoformat()
    kinds: list[Any] = [
        {"title": "Broken Date", "country": "USD", "date": "Monday 9am", "impact": "Low", "forecast": "", "previous": ""},
        {"country": "EUR", "date": monday, "impact": "High", "forecast": "1.0%", "previous": "0.9%"},
        {"title": "Broken Forecast", "country": "GBP", "date": monday, "impact": "Medium", "forecast": "n/a", "previous": "1.2%"},
        ["not", "an", "object"],
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


def _fred_error(status: int, message: str) -> web.Response:
    return web.json_response({"error_code": status, "error_message": message}, status=status)


class ExternalDataSimulator:
    """The server; ``async with ExternalDataSimulator(now_ms=clock.now_ms) as sim: sim.url``."""

    def __init__(self, *, seed: int = 7, now_ms: Callable[[], int] | None = None, faults: Faults | None = None) -> None:
        self.seed = seed
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.faults = faults or Faults()
        self.generator = FredSeriesGenerator(seed)
        self.calendar_edit: Callable[[list[Any]], list[Any]] | None = None
        """Rewrites the calendar rows before they are served (tests: revise a forecast)."""
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the simulator is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def calendar_url(self) -> str:
        return self.url + CALENDAR_THIS_WEEK

    async def __aenter__(self) -> ExternalDataSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> str:
        app = web.Application(middlewares=[self._faults_middleware])
        app.router.add_get(OBSERVATIONS_PATH, self._observations)
        app.router.add_get(CALENDAR_THIS_WEEK, self._calendar)
        app.router.add_get(CALENDAR_NEXT_WEEK, self._calendar)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fred_requests(self) -> list[dict[str, str]]:
        return [q for path, q in self.requests if path == OBSERVATIONS_PATH]

    @web.middleware
    async def _faults_middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query)))
        faults = self.faults
        if faults.server_errors > 0:
            faults.server_errors -= 1
            return web.Response(status=500, text="<html><body><h1>500 Internal Server Error</h1></body></html>", content_type="text/html")
        response: web.StreamResponse = await handler(request)
        if faults.malformed > 0 and response.status == 200 and isinstance(response, web.Response) and response.body:
            faults.malformed -= 1
            body = bytes(response.body)  # type: ignore[arg-type]
            return web.Response(status=200, body=body[: max(1, len(body) // 3)], content_type="application/json")
        return response

    async def _observations(self, request: web.Request) -> web.Response:
        q = request.query
        faults = self.faults
        if not q.get("api_key"):
            return _fred_error(400, "Bad Request.  Variable api_key has not been set.")
        if faults.reject_key:
            return _fred_error(
                400,
                "Bad Request.  The value for variable api_key is not registered.  "
                "Read https://fred.stlouisfed.org/docs/api/api_key.html for more information.",
            )
        if faults.rate_limited > 0:
            faults.rate_limited -= 1
            response = _fred_error(429, "Too Many Requests.  Exceeded Rate Limit")
            if faults.retry_after is not None:
                response.headers["Retry-After"] = faults.retry_after
            return response
        series_id = q.get("series_id")
        if not series_id:
            return _fred_error(400, "Bad Request.  Variable series_id is not set.")
        if series_id in faults.unknown_series:
            return _fred_error(400, "Bad Request.  The series does not exist.")
        if q.get("file_type") != "json":
            return _fred_error(400, "Bad Request.  This simulator serves file_type=json only.")
        try:
            limit = int(q.get("limit", "100000"))
            offset = int(q.get("offset", "0"))
            start = date.fromisoformat(q.get("observation_start", "1776-07-04"))
            end = date.fromisoformat(q.get("observation_end", "9999-12-31"))
        except ValueError as exc:
            return _fred_error(400, f"Bad Request.  {exc}")
        if not 1 <= limit <= 100_000:
            return _fred_error(400, "Bad Request.  Variable limit is not between 1 and 100000.")
        if offset < 0:
            return _fred_error(400, "Bad Request.  Variable offset is not 0 or a positive integer.")
        today = date.fromisoformat(ms_date(self.now_ms()))
        rows = self.generator.observations(series_id, start, end, today)
        if q.get("sort_order") == "desc":
            rows.reverse()
        doc = {
            "realtime_start": today.isoformat(),
            "realtime_end": today.isoformat(),
            "observation_start": start.isoformat(),
            "observation_end": end.isoformat(),
            "units": "lin",
            "output_type": 1,
            "file_type": "json",
            "order_by": "observation_date",
            "sort_order": q.get("sort_order", "asc"),
            "count": len(rows),
            "offset": offset,
            "limit": limit,
            "observations": rows[offset : offset + limit],
        }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    def calendar_rows(self, next_week: bool = False) -> list[Any]:
        start = week_start(self.now_ms())
        if next_week:
            start = week_start(int((start + timedelta(days=8)).timestamp() * 1000))
        rows: list[Any] = list(calendar_week(self.seed, start))
        rows.extend(_bad_rows(self.faults.bad_calendar_rows, start))
        if self.calendar_edit is not None:
            rows = self.calendar_edit(rows)
        return rows

    async def _calendar(self, request: web.Request) -> web.Response:
        rows = self.calendar_rows(next_week=request.path == CALENDAR_NEXT_WEEK)
        return web.Response(body=orjson.dumps(rows), content_type="application/json")

