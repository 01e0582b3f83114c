"""The ForexFactory weekly calendar export (protocols.md section 4.2) as ``external_event.v1``.

The export is a bare JSON array of string-valued objects::

    {"title": "Chicago PMI", "country": "USD", "date": "2025-03-31T09:45:00-04:00",
     "impact": "Low", "forecast": "45.5", "previous": "45.5"}

``date`` carries the US-Eastern offset and becomes UTC milliseconds; ``impact`` High / Medium
/ Low maps to the contract's enum and anything else (Holiday, unknown) is left out while
the event is kept; ``forecast`` / ``previous`` are display strings (``"0.2%"``, ``"175K"``,
``"4.9B"``, ``""``) turned into numbers or null; ``country`` is a currency code or ``All``
(left out: the contract wants a code). There is no ``actual`` in this export, so ``value``
is null (an ``actual`` field, if a mirror adds one, is read like the others).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from nodes.marketdata.http import HttpClient, HttpError

SOURCE = "forexfactory"
TYPE = "economic_calendar"
IMPACTS = frozenset({"high", "medium", "low"})
ALL_COUNTRIES = "ALL"
_COUNTRY = re.compile(r"^[A-Z]{2,3}$")
_NUMBER = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([KMBT%]?)$")
_EXPONENT = {"": "", "%": "", "K": "e3", "M": "e6", "B": "e9", "T": "e12"}
_SLUG = re.compile(r"[^a-z0-9]+")
MAX_SERIES = 128


class CalendarError(Exception):
    """The export could not be fetched or is not a JSON array."""


def parse_display_number(text: Any, field: str = "value") -> tuple[float | None, bool]:
    """``"175K"`` → ``(175000.0, False)``, ``"-0.3%"`` → ``(-0.3, True)``, ``""`` → ``(None, False)``.

    K, M, B and T scale by 1e3, 1e6, 1e9 and 1e12; a percentage keeps its number and reports
    ``True``. Thousands separators are ignored. Anything else raises ValueError naming ``field``.
    """
    if text is None:
        return None, False
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{field} {text!r} is not a string")
    if not isinstance(text, str):
        return float(text), False
    cleaned = text.strip().replace(",", "").replace("\u2212", "-")
    if not cleaned:
        return None, False
    match = _NUMBER.match(cleaned.upper())
    if match is None:
        raise ValueError(f"{field} {text!r} is not a number (expected forms: 0.2%, 175K, 4.9B, -1.5)")
    number, suffix = match.groups()
    return float(number + _EXPONENT[suffix]), suffix == "%"


def parse_time(text: Any) -> int:
    """ISO 8601 with an offset → Unix epoch milliseconds (UTC); a time without offset is ambiguous."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"date {text!r} is missing or not a string")
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"date {text!r} is not ISO 8601") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"date {text!r} has no UTC offset")
    delta = when.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def series_id(title: str, country: str) -> str:
    """A stable id for an event from its currency and title: ``USD.non_farm_employment_change``."""
    slug = _SLUG.sub("_", title.lower()).strip("_")
    if not slug:
        raise ValueError(f"title {title!r} has no letters or digits")
    return f"{country}.{slug}"[:MAX_SERIES]


def parse_event(row: Any) -> dict[str, Any]:
    """One export row → an ``external_event.v1`` message; ValueError says what is wrong with it."""
    if not isinstance(row, Mapping):
        raise ValueError(f"calendar row is a {type(row).__name__}, not an object")
    title = row.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title {title!r} is missing or empty")
    title = " ".join(title.split())
    raw_country = row.get("country")
    if not isinstance(raw_country, str) or not raw_country.strip():
        raise ValueError(f"country {raw_country!r} is missing")
    country = raw_country.strip().upper()
    if country != ALL_COUNTRIES and not _COUNTRY.match(country):
        raise ValueError(f"country {raw_country!r} is not a currency code or All")
    ts = parse_time(row.get("date"))
    numbers: dict[str, float | None] = {}
    percent = False
    for name in ("actual", "forecast", "previous"):
        if name in row:
            numbers[name], is_percent = parse_display_number(row[name], name)
            percent = percent or is_percent
    event: dict[str, Any] = {
        "type": TYPE,
        "ts": ts,
        "source": SOURCE,
        "series": series_id(title, country),
        "value": numbers.get("actual"),
        "title": title,
        "forecast": numbers.get("forecast"),
        "previous": numbers.get("previous"),
    }
    if "actual" in numbers:
        event["actual"] = numbers["actual"]
    if country != ALL_COUNTRIES:
        event["country"] = country
    impact = row.get("impact")
    if isinstance(impact, str) and impact.strip().lower() in IMPACTS:
        event["impact"] = impact.strip().lower()
    if percent:
        event["unit"] = "percent"
    return event


class CalendarClient:
    """Fetches the weekly export; rows are parsed one by one by the caller (a bad row is not a bad file)."""

    def __init__(self, http: HttpClient, url: str) -> None:
        self.http = http
        self.url = url

    async def fetch(self) -> list[Any]:
        try:
            doc = await self.http.get_json(self.url)
        except HttpError as exc:
            raise CalendarError(f"calendar {exc}") from None
        if not isinstance(doc, list):
            raise CalendarError(f"calendar {self.http.url(self.url)}: expected a JSON array of events, got a {type(doc).__name__}")
        return doc
