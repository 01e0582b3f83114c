"""FRED series observations over the shared HTTP client (protocols.md section 4.1).

``GET /fred/series/observations?series_id=…&api_key=…&file_type=json&observation_start=…``
answers ``{"count": N, "offset": o, "limit": l, "observations": [{"date", "value"}, …]}``
with every value a string and ``"."`` for a missing one; pages follow with ``offset`` while
``count`` exceeds what was read. Errors are ``{"error_code": 400, "error_message": "…"}``;
429 and 5xx are retried by :class:`~nodes.marketdata.http.HttpClient`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from nodes.marketdata.ratelimit import RateLimiter
from nodes.marketdata.http import HttpClient, HttpError

OBSERVATIONS_PATH = "/fred/series/observations"
MISSING = "."
DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
MAX_PAGES = 10_000


def date_ms(day: str) -> int:
    """``YYYY-MM-DD`` → Unix epoch milliseconds of that day's 00:00 UTC."""
    if len(day) != 10:
        raise ValueError(f"{day!r} is not a YYYY-MM-DD date")
    return (date.fromisoformat(day) - _EPOCH).days * DAY_MS


def ms_date(ts_ms: int) -> str:
    """The UTC date of ``ts_ms`` as ``YYYY-MM-DD``."""
    return date.fromordinal(_EPOCH.toordinal() + ts_ms // DAY_MS).isoformat()


class FredError(Exception):
    """A series request that failed for good; the message never contains the API key."""

    def __init__(self, message: str, *, series_id: str, status: int | None = None) -> None:
        super().__init__(message)
        self.series_id = series_id
        self.status = status


@dataclass(frozen=True, slots=True)
class Observation:
    date: str
    ts: int
    value: float | None
    """None where FRED has ``"."`` (no value that day, e.g. a holiday)."""


@dataclass(slots=True)
class SeriesPage:
    """What one series request returned: parsed observations and the rows that could not be read."""

    observations: list[Observation] = field(default_factory=list)
    bad: list[tuple[Any, str]] = field(default_factory=list)
    requests: int = 0

    @property
    def missing(self) -> int:
        return sum(1 for o in self.observations if o.value is None)


def parse_observation(row: Any) -> Observation:
    """One ``{"date": "YYYY-MM-DD", "value": "1.23" | "."}``; ValueError names what is wrong."""
    if not isinstance(row, Mapping):
        raise ValueError(f"observation is a {type(row).__name__}, not an object")
    day, raw = row.get("date"), row.get("value")
    if not isinstance(day, str):
        raise ValueError(f"observation date {day!r} is not a string")
    try:
        ts = date_ms(day)
    except ValueError:
        raise ValueError(f"observation date {day!r} is not YYYY-MM-DD") from None
    if raw == MISSING:
        return Observation(day, ts, None)
    if not isinstance(raw, str):
        raise ValueError(f"observation value {raw!r} on {day} is not a string")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"observation value {raw!r} on {day} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"observation value {raw!r} on {day} is not finite")
    return Observation(day, ts, value)


class FredClient:
    """Series observations from FRED; shares one rate limit across every series of the node."""

    def __init__(
        self,
        http: HttpClient,
        api_key: str,
        *,
        base_url: str = "https://api.stlouisfed.org",
        page_size: int = 100_000,
        limiter: RateLimiter | None = None,
    ) -> None:
        if not 1 <= page_size <= 100_000:
            raise ValueError("page_size must be 1..100000 (FRED's limit)")
        self.http = http
        self._api_key = api_key
        self.url = base_url.rstrip("/") + OBSERVATIONS_PATH
        self.page_size = page_size
        self.limiter = limiter or RateLimiter(120)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _failure(self, series_id: str, exc: HttpError) -> FredError:
        detail = str(exc)
        try:
            body = orjson.loads(exc.body) if exc.body else None
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error_message") or body.get("message"), str):
            message = " ".join(str(body.get("error_message") or body.get("message")).split())
            detail = f"HTTP {exc.status}: {message}"
        return FredError(self._scrub(f"FRED series {series_id}: {detail}"), series_id=series_id, status=exc.status)

    async def observations(self, series_id: str, start: str | None = None) -> SeriesPage:
        """Every observation of ``series_id`` from ``start`` (inclusive, YYYY-MM-DD), oldest first.

        Raises :class:`FredError` when a page cannot be fetched or is not an observations
        document; rows that cannot be parsed are returned in ``bad`` with the reason.
        """
        result = SeriesPage()
        offset = 0
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {
                "series_id": series_id,
                "api_key": self._api_key,
                "file_type": "json",
                "sort_order": "asc",
                "limit": self.page_size,
                "offset": offset,
            }
            if start:
                params["observation_start"] = start
            await self.limiter.acquire()
            result.requests += 1
            try:
                doc = await self.http.get_json(self.url, params=params)
            except HttpError as exc:
                raise self._failure(series_id, exc) from None
            page = doc.get("observations") if isinstance(doc, dict) else None
            if not isinstance(page, list):
                shape = f"keys {sorted(doc)[:8]}" if isinstance(doc, dict) else type(doc).__name__
                raise FredError(f"FRED series {series_id}: the answer has no observations list ({shape})", series_id=series_id)
            for row in page:
                try:
                    result.observations.append(parse_observation(row))
                except ValueError as exc:
                    result.bad.append((row, f"FRED {series_id}: {exc}"))
            offset += len(page)
            count = doc.get("count")
            if not page or not isinstance(count, int) or offset >= count:
                break
        else:
            raise FredError(f"FRED series {series_id}: more than {MAX_PAGES} pages; paging does not advance", series_id=series_id)
        result.observations.sort(key=lambda o: o.ts)
        return result
