"""No new positions around high-impact releases of the pair's currencies.

Calendar events (``external_event.v1`` of type ``economic_calendar``) carry the release time,
its impact and the currency it concerns (``country``: USD, EUR...). An event without a country
(the export's ``All``) concerns every currency. The collector publishes the week ahead and
publishes an event again when its actual value arrives: an event is kept once per (series, time).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ALL = "*"


@dataclass(frozen=True, slots=True)
class Release:
    ts: int
    currency: str
    series: str
    title: str


class Blackout:
    def __init__(self, impacts: Collection[str], before_ms: int, after_ms: int) -> None:
        self.impacts = frozenset(impacts)
        self.before_ms = before_ms
        self.after_ms = after_ms
        self._releases: dict[tuple[str, int], Release] = {}

    def add(self, event: Mapping[str, Any]) -> bool:
        """Keep ``event`` if it is a release of a blocking impact; True when kept."""
        if event.get("type") != "economic_calendar" or event.get("impact") not in self.impacts:
            return False
        ts, series = event.get("ts"), event.get("series")
        if not isinstance(ts, int) or not isinstance(series, str):
            return False
        self._releases[(series, ts)] = Release(ts, event.get("country") or ALL, series, event.get("title") or series)
        return True

    def blocking(self, currencies: Iterable[str], now: int) -> list[Release]:
        """Releases of ``currencies`` (or of all) whose window holds ``now``, in time order."""
        wanted = {*currencies, ALL}
        hits = [r for r in self._releases.values()
                if r.currency in wanted and r.ts - self.before_ms <= now <= r.ts + self.after_ms]  # fmt: skip
        return sorted(hits, key=lambda r: (r.ts, r.series))

    def prune(self, now: int) -> None:
        """Forget releases whose window has passed."""
        gone = [key for key, r in self._releases.items() if r.ts + self.after_ms < now]
        for key in gone:
            del self._releases[key]

    def __len__(self) -> int:
        return len(self._releases)

    def snapshot(self) -> list[list[Any]]:
        return [[r.ts, r.currency, r.series, r.title] for r in sorted(self._releases.values(), key=lambda r: (r.ts, r.series))]

    def restore(self, rows: Iterable[list[Any]]) -> None:
        for ts, currency, series, title in rows:
            self._releases[(series, ts)] = Release(int(ts), currency, series, title)
