"""The external-data collector: FRED indicators, commodity prices (FRED) and the economic calendar.

Each source is polled on its own interval of the node's clock (``fred_every``,
``calendar_every``), the first time as soon as the node runs, and published on its own
port (``fred``, ``commodities``, ``calendar``), so every event lands in the table of its
type. A failing source or series is logged, dead-lettered with the reason and tried again
at its next poll; the others go on.

- **FRED is incremental.** At its first poll each kind reads the newest stored ``ts`` per
  series from its table (``fred_table``, ``commodity_table``) and from then on keeps that
  mark in memory (the table's writer batches, so reading it back after publishing would
  lag). Only observations newer than the mark are published. ``"."`` (no value that day) is
  skipped, not published as null: it is not a number and not news.
- **The calendar is re-read whole each poll** (it is one small file) and an event is
  published again only when its content changed: a fingerprint per (series, ts) of the
  last fetch. The tables are ReplacingMergeTree on (series, ts), so a re-publication after a
  restart is one row.
- **Bounded runs** (demo, tests) set ``polls``: the node finishes after that many polls of
  each source. On a simulated clock the first poll waits for the clock's first event time
  (before it the clock reads 0), and later polls happen only as event time moves.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from framework.durations import parse_ms
from framework.errors import UserError
from framework.node import Node
from nodes.external_data.calendar import SOURCE as CALENDAR_SOURCE
from nodes.external_data.calendar import CalendarClient, parse_event
from nodes.external_data.fred import FredClient, FredError, ms_date
from nodes.marketdata.ratelimit import RateLimiter
from nodes.external_data.spec import ExternalDataParams
from nodes.marketdata.http import HttpClient, redact

FRED_SOURCE = "fred"
SIMULATED_KEY = "simulatedsimulatedsimulatedsimul"
"""The key sent to the simulator: a real key never leaves the process in simulate mode."""
CALENDAR_PORT = "calendar"


@dataclass
class FredKind:
    """One port fed from FRED: its contract type, its series (id → unit), the table it resumes from."""

    port: str
    type: str
    series: dict[str, str]
    table: str | None
    marks: dict[str, int] | None = None
    """Series → newest published ``ts``; None until read from the table."""


class ExternalDataCollector(Node[ExternalDataParams]):
    async def on_start(self) -> None:
        p = self.params
        self.kinds = [
            kind
            for kind in (
                FredKind("fred", "fred_indicators", dict(p.fred_series), p.fred_table),
                FredKind("commodities", "commodity_prices", dict(p.commodity_series), p.commodity_table),
            )
            if kind.series
        ]
        key = SIMULATED_KEY if p.simulate else os.environ.get(p.fred_api_key_env, "").strip()
        if self.kinds and not key:
            raise UserError(
                f"FRED API key missing: set the environment variable {p.fred_api_key_env} (or run with params.simulate: true)"
            )
        self.simulator = None
        fred_url, calendar_url = p.fred_base_url, p.calendar_url
        if p.simulate:
            from nodes.external_data.simulator import ExternalDataSimulator

            self.simulator = ExternalDataSimulator(seed=p.seed, now_ms=self.ctx.clock.now_ms)
            await self.simulator.start()
            fred_url, calendar_url = self.simulator.url, self.simulator.calendar_url
            self.ctx.log.info("simulated FRED and calendar at %s", self.simulator.url)
        self.http = HttpClient(on_retry=self._retrying)
        self.fred = (
            FredClient(self.http, key, base_url=fred_url, page_size=p.fred_page_size, limiter=RateLimiter(p.fred_requests_per_minute))
            if self.kinds
            else None
        )
        self.calendar = CalendarClient(self.http, calendar_url) if calendar_url else None
        self.fingerprints: dict[tuple[str, int], bytes] = {}
        self.bad_rows: set[bytes] = set()
        self.lookback_ms = parse_ms(p.lookback) or 0

    async def on_stop(self) -> None:
        http, simulator = getattr(self, "http", None), getattr(self, "simulator", None)
        if http is not None:
            await http.close()
        if simulator is not None:
            await simulator.close()
            self.simulator = None

    def _retrying(self, url: str, problem: str, delay: float) -> None:
        self.ctx.log.warning("retrying %s in %.1fs: %s", url, delay, problem)

    # ------------------------------------------------------------------ scheduling

    async def run(self) -> None:
        clock = self.ctx.clock
        if clock.simulated and not getattr(clock, "started", True):
            self.ctx.log.info("waiting for the simulated clock's first event time before the first poll")
            await clock.wait_started()
        sources: dict[str, tuple[int, Callable[[], Awaitable[None]]]] = {}
        if self.calendar is not None:
            sources["calendar"] = (parse_ms(self.params.calendar_every) or 0, self.poll_calendar)
        if self.fred is not None:
            sources["fred"] = (parse_ms(self.params.fred_every) or 0, self.poll_fred)
        due = {name: clock.now_ms() for name in sources}
        done = dict.fromkeys(sources, 0)
        while due:
            for name in list(due):
                if due[name] > clock.now_ms():
                    continue
                started = clock.now_ms()
                interval, poll = sources[name]
                await self._guarded(name, poll)
                done[name] += 1
                if self.params.polls is not None and done[name] >= self.params.polls:
                    del due[name]
                else:
                    due[name] = started + interval
            if due:
                wait_ms = min(due.values()) - clock.now_ms()
                if wait_ms > 0:
                    await clock.sleep(wait_ms / 1000)

    async def _guarded(self, name: str, poll: Callable[[], Awaitable[None]]) -> None:
        """One source's failure is logged, dead-lettered and retried at its next poll."""
        try:
            await poll()
        except Exception as exc:
            reason = f"{name} poll failed: {type(exc).__name__}: {exc}"
            self._failed(reason)
            await self.ctx.dead_letter(reason, {"source": name}, origin=f"poll:{name}")

    def _failed(self, reason: str) -> None:
        self.ctx.metrics.errors += 1
        self.ctx.metrics.last_error = reason
        self.ctx.log.error("%s (retried at the next poll)", reason)

    # ------------------------------------------------------------------ FRED

    async def poll_fred(self) -> None:
        for kind in self.kinds:
            try:
                marks = await self._marks(kind)
            except Exception as exc:
                reason = f"{kind.port}: cannot read the newest stored observations from {kind.table}: {type(exc).__name__}: {exc}"
                self._failed(reason)
                await self.ctx.dead_letter(reason, {"source": FRED_SOURCE, "type": kind.type}, origin=f"table:{kind.table}")
                continue
            published = failed = 0
            for series_id, unit in kind.series.items():
                try:
                    published += await self._poll_series(kind, marks, series_id, unit)
                except FredError as exc:
                    failed += 1
                    self._failed(str(exc))
                    await self.ctx.dead_letter(
                        str(exc), {"source": FRED_SOURCE, "type": kind.type, "series": series_id}, origin=f"fred:{series_id}"
                    )
            self.ctx.log.info("%s: %d series, %d new observations published, %d series failed", kind.port, len(kind.series), published, failed)

    async def _marks(self, kind: FredKind) -> dict[str, int]:
        """Newest stored ``ts`` per series, read from the table once; a store error fails this poll."""
        if kind.marks is not None:
            return kind.marks
        marks: dict[str, int] = {}
        if kind.table is not None:
            try:
                table = self.ctx.table(kind.table)
            except KeyError:
                self.ctx.log.warning(
                    "table %s is not declared for this service: %s series restart from observation_start", kind.table, kind.port
                )
            else:
                rows = await table.query(
                    "SELECT series, max(ts) AS last FROM {table} "
                    f"WHERE source = '{FRED_SOURCE}' AND type = '{kind.type}' GROUP BY series"
                )
                marks = {str(r["series"]): int(r["last"]) for r in rows if r["last"] is not None}
                if marks:
                    self.ctx.log.info("%s: resuming %d series after their newest stored observation", kind.port, len(marks))
        kind.marks = marks
        return marks

    def _default_start(self) -> str:
        if self.params.observation_start:
            return self.params.observation_start
        return ms_date(max(0, self.ctx.clock.now_ms() - self.lookback_ms))

    async def _poll_series(self, kind: FredKind, marks: dict[str, int], series_id: str, unit: str) -> int:
        """Publish the observations of one series newer than its mark; returns how many were published."""
        assert self.fred is not None
        last = marks.get(series_id)
        page = await self.fred.observations(series_id, ms_date(last) if last is not None else self._default_start())
        for row, reason in page.bad:
            await self.ctx.dead_letter(reason, row, origin=f"fred:{series_id}")
        published = missing = 0
        for obs in page.observations:
            if last is not None and obs.ts <= last:
                continue
            if obs.value is None:
                missing += 1
                continue
            message = {"type": kind.type, "ts": obs.ts, "source": FRED_SOURCE, "series": series_id, "value": obs.value, "unit": unit}
            if await self.ctx.publish(kind.port, message):
                published += 1
            marks[series_id] = obs.ts
        self.ctx.log.debug(
            "%s %s: %d new, %d missing ('.'), %d bad, %d request(s)", kind.port, series_id, published, missing, len(page.bad), page.requests
        )
        return published

    # ------------------------------------------------------------------ calendar

    async def poll_calendar(self) -> None:
        assert self.calendar is not None
        rows = await self.calendar.fetch()
        seen: dict[tuple[str, int], bytes] = {}
        bad_seen: set[bytes] = set()
        published = unchanged = bad = 0
        for row in rows:
            try:
                event = parse_event(row)
            except ValueError as exc:
                bad += 1
                fingerprint = orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=repr)
                bad_seen.add(fingerprint)
                if fingerprint not in self.bad_rows:
                    await self.ctx.dead_letter(f"calendar row: {exc}", row, origin=f"{CALENDAR_SOURCE}:{redact(self.calendar.url)}")
                continue
            key = (event["series"], event["ts"])
            fingerprint = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
            if self.fingerprints.get(key) == fingerprint or seen.get(key) == fingerprint:
                unchanged += 1
            elif await self.ctx.publish(CALENDAR_PORT, event):
                published += 1
            seen[key] = fingerprint
        self.fingerprints = seen
        self.bad_rows = bad_seen
        self.ctx.log.info("calendar: %d rows, %d published, %d unchanged, %d bad", len(rows), published, unchanged, bad)
