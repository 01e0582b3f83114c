"""The Polygon historical downloader: keeps the gap table complete with Polygon's aggregates.

A scan, for every pair × timeframe: read the bar timestamps the gap table already has in the
window (the bucket still open at ``now`` is never part of it), work out the missing ones
outside the FX weekend (:mod:`.gaps`), fetch them with as few requests as the contiguity of
the gaps and ``limit`` allow, and publish each downloaded bar on ``bars`` (the topology routes
it to the tables). A bad aggregate is dead-lettered and the page goes on; a failed request
ends that pair × timeframe (logged and dead-lettered), the others go on; a rejected key
(401) ends the scan. ``run: once`` scans once and finishes; ``run: schedule`` scans at start
and then on each due schedule entry, on the node's clock.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from framework.durations import parse_ms, parse_seconds
from framework.errors import UserError
from framework.node import Node
from framework.context import StoreError
from nodes.marketdata.http import RetryPolicy
from nodes.marketdata.timeframes import Buckets, timeframe
from nodes.polygon_historical.client import PolygonAuthError, PolygonClient, PolygonError
from nodes.polygon_historical.gaps import GapPlan, RequestRange, expected_starts, find_gaps, polygon_span
from nodes.polygon_historical.memory import EmptyBuckets
from nodes.polygon_historical.rows import problem_of, to_bar
from nodes.polygon_historical.spec import PolygonHistoricalParams, ScheduleEntry

PRESENT_SQL = (
    "SELECT DISTINCT ts FROM {table} WHERE symbol = {symbol:String} AND timeframe = {timeframe:String} "
    "AND ts >= {start:Int64} AND ts < {end:Int64} AND coalesce(complete, true)"
)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


@dataclass(slots=True)
class JobResult:
    """What one pair × timeframe scan found and did."""

    symbol: str
    timeframe: str
    expected: int = 0
    missing: int = 0
    gaps: int = 0
    requests: int = 0
    pages: int = 0
    written: int = 0
    dead_lettered: int = 0
    ignored: int = 0
    empty_at_source: int = 0
    error: str | None = None
    bars: list[dict[str, Any]] = field(default_factory=list)
    """Downloaded, not yet published (the scan publishes jobs in order)."""


@dataclass(slots=True)
class ScanReport:
    now_ms: int
    lookbacks: dict[str, int]
    jobs: list[JobResult] = field(default_factory=list)
    aborted: str | None = None

    def total(self, name: str) -> int:
        return sum(getattr(j, name) for j in self.jobs)

    @property
    def errors(self) -> list[JobResult]:
        return [j for j in self.jobs if j.error]


@dataclass(frozen=True, slots=True)
class _Entry:
    every_ms: int
    offset_ms: int
    timeframes: tuple[str, ...]
    lookback_ms: int

    def next_after(self, now_ms: int) -> int:
        return ((now_ms - self.offset_ms) // self.every_ms + 1) * self.every_ms + self.offset_ms


class PolygonHistoricalDownloader(Node[PolygonHistoricalParams]):
    async def on_start(self) -> None:
        p = self.params
        self.client: PolygonClient | None = None
        self.simulator: Any = None
        self.reports: list[ScanReport] = []
        self._abort: str | None = None
        self._fetched: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self.timeframes = self._timeframes()
        self.buckets = {tf: Buckets(tf) for tf in self.timeframes}  # Polygon's days start at 00:00 UTC
        try:
            self.table = self.ctx.table(p.gap_table)
        except KeyError as exc:
            raise UserError(f"service {self.ctx.service}: gap_table: {exc.args[0]}") from None
        if self.ctx.clock.simulated and p.end is None and p.run == "once":
            raise UserError(
                f"service {self.ctx.service}: params.end is needed on a simulated clock (the window would end at its "
                "start); e.g. end: 2026-11-02T00:00:00Z"
            )
        self.lookback_ms = parse_ms(p.lookback) or 0
        self.settle_ms = parse_ms(p.settle) or 0
        memory_file = "empty_buckets.simulated.json" if p.simulate else "empty_buckets.json"
        self.memory = EmptyBuckets.load(Path(self.ctx.data_dir) / memory_file)
        key = os.environ.get(p.api_key_env, "")
        if not p.simulate and not key:
            raise UserError(
                f"service {self.ctx.service}: environment variable {p.api_key_env} is not set (the Polygon API key); "
                "export it, or set simulate: true"
            )
        base_url = p.base_url
        if p.simulate:
            from nodes.polygon_historical.simulator import PolygonSimulator

            sim = p.simulator
            self.simulator = PolygonSimulator(seed=sim.seed, mean_interval_ms=sim.mean_interval_ms, page_size=sim.page_size)
            base_url = await self.simulator.start()
            key = key or "simulated"
            self.ctx.log.info("serving Polygon aggregates from the simulator at %s", base_url)
        retry = RetryPolicy(
            attempts=p.retry.attempts,
            base_delay=parse_seconds(p.retry.base_delay),
            max_delay=parse_seconds(p.retry.max_delay),
        )
        self.client = PolygonClient(
            key,
            base_url=base_url,
            key_env=p.api_key_env,
            requests_per_minute=p.requests_per_minute,
            retry=retry,
            timeout=parse_seconds(p.timeout),
            log=self.ctx.log,
        )

    def _timeframes(self) -> list[str]:
        names = list(self.params.timeframes or self.ctx.timeframes)
        unknown = [tf for tf in names if tf not in self.ctx.timeframes]
        if unknown:
            raise UserError(
                f"service {self.ctx.service}: timeframes {unknown} are not in the topology's timeframes {self.ctx.timeframes}"
            )
        for tf in names:
            try:
                timeframe(tf)
            except ValueError as exc:
                raise UserError(f"service {self.ctx.service}: {exc}") from None
        return names

    async def on_stop(self) -> None:
        memory = getattr(self, "memory", None)
        if memory is not None:
            memory.save()
        if getattr(self, "client", None) is not None:
            await self.client.close()  # type: ignore[union-attr]
        if getattr(self, "simulator", None) is not None:
            await self.simulator.stop()

    # ------------------------------------------------------------------ scheduling

    async def run(self) -> None:
        if self.params.run == "once":
            now = parse_time(self.params.end) if self.params.end else self.ctx.clock.now_ms()
            await self.scan(dict.fromkeys(self.timeframes, self.lookback_ms), now)
            return
        entries = self._entries()
        await self._clock_started()
        due = entries
        while True:
            lookbacks: dict[str, int] = {}
            for entry in due:
                for tf in entry.timeframes:
                    lookbacks[tf] = max(lookbacks.get(tf, 0), entry.lookback_ms)
            await self.scan(lookbacks, self.ctx.clock.now_ms())
            if self._abort:
                return
            now = self.ctx.clock.now_ms()
            times = [(entry.next_after(now), entry) for entry in entries]
            wake = min(t for t, _ in times)
            await self.ctx.clock.sleep((wake - now) / 1000)
            due = [entry for t, entry in times if t <= wake]

    def _entries(self) -> list[_Entry]:
        out = []
        for entry in self.params.schedule:
            tfs = self._entry_timeframes(entry)
            if not tfs:
                self.ctx.log.warning("schedule entry every %s selects none of %s; skipped", entry.every, self.timeframes)
                continue
            out.append(
                _Entry(
                    every_ms=parse_ms(entry.every) or 0,
                    offset_ms=(parse_ms(entry.offset) or 0) + self.settle_ms,
                    timeframes=tuple(tfs),
                    lookback_ms=parse_ms(entry.lookback) if entry.lookback else self.lookback_ms,  # type: ignore[arg-type]
                )
            )
        if not out:
            raise UserError(f"service {self.ctx.service}: no schedule entry selects any of the timeframes {self.timeframes}")
        return out

    def _entry_timeframes(self, entry: ScheduleEntry) -> list[str]:
        if entry.timeframes == "all":
            return list(self.timeframes)
        if entry.timeframes == "intraday":
            return [tf for tf in self.timeframes if not timeframe(tf).calendar]
        if entry.timeframes == "daily":
            return [tf for tf in self.timeframes if timeframe(tf).calendar]
        return [tf for tf in entry.timeframes if tf in self.timeframes]

    async def _clock_started(self) -> None:
        """On a simulated clock, wait for the first event time (before it the clock reads 0)."""
        await self.ctx.clock.wait_started()

    # ------------------------------------------------------------------ scanning

    async def scan(self, lookbacks: dict[str, int], now_ms: int) -> ScanReport:
        """Fill every pair × timeframe of ``lookbacks`` for the window ending at ``now_ms``."""
        report = ScanReport(now_ms, dict(lookbacks))
        self.reports.append(report)
        if lookbacks:
            self.memory.prune(now_ms - max(lookbacks.values()) - 7 * 86_400_000)
        limit = asyncio.Semaphore(self.params.concurrency)

        async def one(symbol: str, tf: str) -> JobResult:
            async with limit:
                result = JobResult(symbol, tf)
                if self._abort is None:
                    await self._fill(result, lookbacks[tf], now_ms)
                return result

        # downloads overlap; bars are published job by job in this order, whatever the network
        # does, so a run publishes the same bars in the same order every time
        jobs = [asyncio.ensure_future(one(s, tf)) for s in self.ctx.pairs for tf in lookbacks]
        try:
            for job in jobs:
                result = await job
                await self._publish(result)
                report.jobs.append(result)
        finally:
            for job in jobs:
                job.cancel()
        report.aborted = self._abort
        self.memory.save()
        self._log_report(report)
        return report

    async def _present(self, symbol: str, tf: str, start_ms: int, end_ms: int) -> set[int]:
        rows = await self.table.query(PRESENT_SQL, {"symbol": symbol, "timeframe": tf, "start": start_ms, "end": end_ms})
        return {int(r["ts"]) for r in rows}

    async def _fill(self, result: JobResult, lookback_ms: int, now_ms: int) -> None:
        """Table writes are batched, so the ranges the previous scan fetched count as present
        (they may not have reached the table yet); what they lacked is in the empty memory."""
        symbol, tf = result.symbol, result.timeframe
        buckets = self.buckets[tf]
        end = buckets.start(now_ms)
        start = now_ms - lookback_ms
        try:
            present = await self._present(symbol, tf, start, end)
        except StoreError as exc:
            await self._failed(result, f"reading {self.params.gap_table} failed: {exc}", None)
            return
        for lo, hi in self._fetched.pop((symbol, tf), []):
            present.update(expected_starts(buckets, max(lo, start), min(hi, end)))
        plan = find_gaps(buckets, start, end, present, known_empty=self.memory.get(symbol, tf), limit=self.params.limit)
        result.expected, result.missing, result.gaps = plan.expected, len(plan.missing), len(plan.ranges)
        fetched = self._fetched[(symbol, tf)] = []
        for span in plan.ranges:
            if self._abort is not None:
                return
            try:
                await self._download(result, buckets, span, plan, now_ms)
                fetched.append((span.start_ms, span.end_ms))
            except PolygonAuthError as exc:
                if exc.status == 401:
                    self._abort = str(exc)
                await self._failed(result, str(exc), span)
                return
            except PolygonError as exc:
                await self._failed(result, str(exc), span)
                return

    async def _download(self, result: JobResult, buckets: Buckets, span: RequestRange, plan: GapPlan, now_ms: int) -> None:
        symbol = result.symbol
        multiplier, timespan = polygon_span(buckets.timeframe)
        origin = f"polygon:{symbol}:{buckets.timeframe.name}"
        seen: set[int] = set()
        result.requests += 1
        async for page in self.client.aggregates(  # type: ignore[union-attr]
            symbol, multiplier, timespan, span.start_ms, span.to_ms, limit=self.params.limit
        ):
            result.pages += 1
            for raw in page:
                t = raw.get("t") if isinstance(raw, dict) else None
                if isinstance(t, int) and not isinstance(t, bool):
                    seen.add(t)
                reason = problem_of(raw, buckets)
                if reason is not None:
                    result.dead_lettered += 1
                    await self.ctx.dead_letter(reason, {"symbol": symbol, "timeframe": buckets.timeframe.name, "result": raw}, origin)
                    continue
                bar = to_bar(raw, symbol, buckets)
                if not (span.start_ms <= bar["ts"] < span.end_ms and bar["ts_close"] <= now_ms):
                    result.ignored += 1
                    continue
                result.bars.append(bar)
        lo = bisect.bisect_left(plan.missing, span.start_ms)
        hi = bisect.bisect_left(plan.missing, span.end_ms)
        horizon = now_ms - self.settle_ms
        empty = [b for b in plan.missing[lo:hi] if b not in seen and buckets.end(b) <= horizon]
        result.empty_at_source += self.memory.add(symbol, buckets.timeframe.name, empty)

    async def _publish(self, result: JobResult) -> None:
        bars, result.bars = result.bars, []
        for bar in bars:
            if await self.ctx.publish("bars", bar):
                result.written += 1
            else:
                result.dead_lettered += 1

    async def _failed(self, result: JobResult, reason: str, span: RequestRange | None) -> None:
        result.error = reason
        self.ctx.metrics.errors += 1
        self.ctx.metrics.last_error = reason
        where = f" {iso(span.start_ms)}..{iso(span.end_ms)}" if span else ""
        self.ctx.log.error("%s %s%s: %s; the other pairs and timeframes go on", result.symbol, result.timeframe, where, reason)
        payload: dict[str, Any] = {"symbol": result.symbol, "timeframe": result.timeframe}
        if span is not None:
            payload.update(from_ms=span.start_ms, to_ms=span.to_ms, bars=span.bars)
        await self.ctx.dead_letter(reason, payload, f"polygon:{result.symbol}:{result.timeframe}")

    def _log_report(self, report: ScanReport) -> None:
        log = self.ctx.log
        by_symbol: dict[str, list[JobResult]] = defaultdict(list)
        for job in report.jobs:
            by_symbol[job.symbol].append(job)
        for symbol, jobs in by_symbol.items():
            gaps = {j.timeframe: j.missing for j in jobs if j.missing}
            detail = ", ".join(f"{tf} {n}" for tf, n in gaps.items()) or "none"
            errors = "; ".join(f"{j.timeframe}: {j.error}" for j in jobs if j.error)
            log.info(
                "%s: %d bars missing in %d gaps (%s); %d requests (%d pages); %d written; %d dead-lettered; %d empty at source%s",
                symbol, sum(j.missing for j in jobs), sum(j.gaps for j in jobs), detail, sum(j.requests for j in jobs),
                sum(j.pages for j in jobs),
                sum(j.written for j in jobs), sum(j.dead_lettered for j in jobs), sum(j.empty_at_source for j in jobs),
                f"; errors: {errors}" if errors else "",
            )
        log.info(
            "scan to %s of %d pairs x %d timeframes: %d bars missing in %d gaps, %d requests (%d pages), %d written, "
            "%d dead-lettered, %d empty at source, %d failed",
            iso(report.now_ms), len(by_symbol), len(report.lookbacks), report.total("missing"), report.total("gaps"),
            report.total("requests"), report.total("pages"), report.total("written"), report.total("dead_lettered"), report.total("empty_at_source"),
            len(report.errors),
        )
        if report.aborted:
            log.error("scan stopped: %s", report.aborted)
