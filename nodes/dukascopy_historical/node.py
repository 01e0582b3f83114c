"""The Dukascopy historical downloader: hours of ticks → ``ctx.publish("ticks", …)`` (historical_ticks).

A run fetches every (symbol, UTC hour) from ``start`` to ``end`` that is not done yet, with
``concurrency`` downloads in flight, and publishes each tick (``source: dukascopy``). With
``run: schedule`` it then catches up on new complete hours every ``every``.

- **Resumable**: each finished hour is appended to ``<data_dir>/progress.jsonl``
  (``progress-simulated.jsonl`` with ``simulate: true``), so a restarted run skips it. Rows
  reach the table through the batched writer after the hour is marked, so on start the done
  hours are checked against the table (``params.table``): an hour with fewer distinct
  timestamps there than were published (a crash before the write) is fetched again. Rewriting
  an hour is harmless (ReplacingMergeTree on ``(symbol, ts)``) but done hours are not rewritten.
- **Empty hours** (0-byte body or 404: weekends, holidays) are done, except the ones newer than
  ``recheck_empty``, which Dukascopy may not have published yet: those are asked again.
- **Bad input never stops the run**: an hour that fails for good (HTTP error after retries, a
  corrupt or truncated file) is dead-lettered with the URL and reason and stays not done (the
  next run tries again); bad records of a good file are dead-lettered one by one (the first
  ``MAX_RECORD_LETTERS`` per hour, then one summary) and its good records are kept (a file of
  bad records only is a done hour of 0 good ticks). After ``max_failures_in_a_row`` failed
  hours the catch-up stops with one error: the datafeed is down or blocking us, and a dead
  letter per remaining hour would say nothing more.
- **Stopped** (Ctrl-C): the last line counts the ticks published (the service's ``out``; the
  table writer keeps every one of them, even those handed over while the stop interrupted
  a wait for room): those of finished hours and those of the hour cut short, which is not
  marked done and is fetched again by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from framework.durations import parse_seconds
from framework.errors import UserError
from framework.node import Node
from framework.context import StoreError
from nodes.dukascopy_historical.bi5 import Ticks
from nodes.dukascopy_historical.client import Bi5Source, HourResult, HourSource, download
from nodes.dukascopy_historical.hours import HOUR_MS, ceil_hour, floor_hour, iso_hour, parse_utc_ms
from nodes.dukascopy_historical.instruments import UnknownInstrument, decimal_factor
from nodes.dukascopy_historical.progress import Progress
from nodes.dukascopy_historical.reporting import CutShort, DownloadStats, Reporter
from nodes.dukascopy_historical.spec import DukascopyParams
from nodes.marketdata.http import RetryPolicy

SOURCE = "dukascopy"
MAX_RECORD_LETTERS = 100
"""Bad records dead-lettered one by one per hour; beyond that one summary letter counts the rest."""
YIELD_EVERY = 2000
"""Publishing yields to the event loop this often, so downloads and table writes go on meanwhile."""


class DukascopyDownloader(Node[DukascopyParams]):
    source: HourSource | None = None
    simulator: Any = None
    progress: Progress | None = None

    async def on_start(self) -> None:
        p = self.params
        self.symbols = list(dict.fromkeys(s.upper() for s in (p.symbols or self.ctx.pairs)))
        try:
            self.factors = {s: decimal_factor(s, p.decimal_factors) for s in self.symbols}
        except UnknownInstrument as exc:
            raise UserError(f"service {self.ctx.service}: {exc}") from None
        base_url = p.base_url
        if p.simulate:
            from nodes.dukascopy_historical.simulator import DukascopySimulator

            self.simulator = DukascopySimulator(
                self.symbols,
                seed=p.simulator.seed,
                mean_interval_ms=p.simulator.mean_interval_ms,
                decimal_factors=p.decimal_factors,
            )
            base_url = await self.simulator.start()
            self.ctx.log.info("simulated Dukascopy datafeed at %s", base_url)
        self.source = Bi5Source(
            self.factors,
            base_url=base_url,
            timeout=parse_seconds(p.timeout),
            retry=RetryPolicy(attempts=p.attempts, base_delay=parse_seconds(p.retry_delay)),
            on_retry=self._retrying,
        )
        name = "progress-simulated.jsonl" if p.simulate else "progress.jsonl"
        self.progress = Progress(Path(self.ctx.data_dir) / name)
        self.verified = False

    def _retrying(self, url: str, problem: str, delay: float) -> None:
        self.ctx.log.warning("retrying %s in %.1fs (%s)", url, delay, problem)

    async def on_stop(self) -> None:
        if self.source is not None:
            await self.source.close()
        if self.simulator is not None:
            await self.simulator.close()
        if self.progress is not None:
            self.progress.close()

    # ------------------------------------------------------------------ the span

    def _now_ms(self) -> int | None:
        """The clock's now, or None on a simulated clock that no event has started yet."""
        clock = self.ctx.clock
        if getattr(clock, "simulated", False) and not getattr(clock, "started", True):
            return None
        return clock.now_ms()

    def span(self) -> tuple[int, int] | None:
        """``[start, end)`` as whole UTC hours, or None (logged) when there is nothing to fetch."""
        p = self.params
        now = self._now_ms()
        if p.end is not None:
            end = ceil_hour(parse_utc_ms(p.end))
        elif now is None:
            self.ctx.log.error("params.end is required on a simulated clock (there is no 'now' to count back from)")
            return None
        else:
            end = floor_hour(now - HOUR_MS)
        start = floor_hour(parse_utc_ms(p.start)) if p.start is not None else end - ceil_hour(int(parse_seconds(p.lookback) * 1000))
        if start >= end:
            self.ctx.log.info("nothing to fetch: %s..%s is empty", iso_hour(start), iso_hour(end))
            return None
        return start, end

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        if self.params.run == "once":
            await self.catch_up()
            return
        every = parse_seconds(self.params.every)
        while True:
            await self.catch_up()
            await self.ctx.clock.sleep(every)

    async def catch_up(self) -> DownloadStats | None:
        """Fetch and publish every hour of the span that is not done yet."""
        span = self.span()
        if span is None:
            return None
        start, end = span
        if not self.verified:
            await self.verify(start, end)
            self.verified = True
        hours = range(start, end, HOUR_MS)
        todo = [(s, h) for h in hours for s in self.symbols if (s, h) not in self.progress]
        stats = DownloadStats(total=len(todo), skipped=len(hours) * len(self.symbols) - len(todo))
        log = self.ctx.log
        log.info(
            "%s..%s, %d symbol(s): %d hour file(s) to fetch, %d already done (%s)",
            iso_hour(start), iso_hour(end), len(self.symbols), stats.total, stats.skipped, self.progress.path,
        )
        if not todo:
            return stats
        reporter = Reporter(log, "dukascopy", parse_seconds(self.params.progress_every))
        now = self._now_ms()
        recheck_ms = int(parse_seconds(self.params.recheck_empty) * 1000)
        in_a_row = 0
        try:
            async with contextlib.aclosing(download(self.source, todo, self.params.concurrency)) as results:
                async for result in results:
                    await self._handle(result, stats, None if now is None else now - recheck_ms)
                    reporter.update(stats)
                    in_a_row = in_a_row + 1 if result.status == "failed" else 0
                    if in_a_row >= self.params.max_failures_in_a_row:
                        self._give_up(result, in_a_row, stats)
                        break
        except asyncio.CancelledError:
            reporter.close()
            log.warning("stopped after %.1fs: %s", stats.elapsed, stats.stopped_line())
            raise
        finally:
            reporter.close()
        log.info("done in %.1fs: %s", stats.elapsed, stats.line())
        return stats

    def _give_up(self, last: HourResult, in_a_row: int, stats: DownloadStats) -> None:
        """Many failures in a row mean the datafeed is down or blocking us, not bad files: stop
        asking (one error, not a dead letter per remaining hour); what is left stays to do."""
        message = (
            f"{in_a_row} hour files failed in a row (last: {last.error}); stopping this catch-up, "
            f"{stats.total - stats.finished} hour(s) left for the next run"
        )
        self.ctx.log.error("%s", message)
        self.ctx.metrics.errors += 1
        self.ctx.metrics.last_error = message

    async def _handle(self, result: HourResult, stats: DownloadStats, recent_after: int | None) -> None:
        symbol, hour = result.symbol, result.hour_ms
        stats.bytes += result.size
        if result.status == "failed":
            stats.failed += 1
            await self.ctx.dead_letter(
                f"{symbol} {iso_hour(hour)}: {result.error}",
                {"symbol": symbol, "hour": iso_hour(hour), "hour_ms": hour, "url": result.where},
                origin=f"{SOURCE}:{symbol}:{iso_hour(hour)}",
            )
            return
        ticks = result.ticks
        if ticks.bad:
            stats.bad_records += len(ticks.bad)
            await self._dead_letter_records(result)
            self.ctx.log.warning(
                "%s %s: %d good ticks, %d bad (dead-lettered)", symbol, iso_hour(hour), len(ticks), len(ticks.bad)
            )
        if len(ticks):
            stats.publishing = CutShort(symbol, iso_hour(hour), len(ticks), self.ctx.metrics)
            stats.rejected += await self._publish(symbol, ticks)
            stats.publishing = None
            stats.ticks += len(ticks)
            stats.done += 1
        elif ticks.bad:
            stats.done += 1  # every record was bad: the hour is done, its records are in the dead letters
        else:
            stats.empty += 1
            if recent_after is not None and hour + HOUR_MS > recent_after:
                return  # maybe not published yet: ask again next time
        self.progress.mark(symbol, hour, len(ticks), int(np.unique(ticks.ts).size))

    async def _publish(self, symbol: str, ticks: Ticks) -> int:
        """Publish every tick of one hour in chunks; returns how many the contract check refused (dead-lettered)."""
        rows = zip(ticks.ts.tolist(), ticks.bid.tolist(), ticks.ask.tolist(), ticks.bid_volume.tolist(), ticks.ask_volume.tolist())
        messages = [
            {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "bid_size": bid_size, "ask_size": ask_size, "source": SOURCE}
            for ts, bid, ask, bid_size, ask_size in rows
        ]
        rejected = 0
        for start in range(0, len(messages), YIELD_EVERY):
            chunk = messages[start : start + YIELD_EVERY]
            rejected += len(chunk) - await self.ctx.publish_many("ticks", chunk)
            await asyncio.sleep(0)
        return rejected

    async def _dead_letter_records(self, result: HourResult) -> None:
        hour = iso_hour(result.hour_ms)
        origin = f"{SOURCE}:{result.symbol}:{hour}"
        bad = result.ticks.bad
        for record in bad[:MAX_RECORD_LETTERS]:
            await self.ctx.dead_letter(
                f"{result.symbol} {hour}: {record.reason}",
                {"symbol": result.symbol, "hour": hour, "url": result.where, **record.as_dict()},
                origin=origin,
            )
        if len(bad) > MAX_RECORD_LETTERS:
            await self.ctx.dead_letter(
                f"{result.symbol} {hour}: {len(bad) - MAX_RECORD_LETTERS} more bad records not listed one by one",
                {"symbol": result.symbol, "hour": hour, "url": result.where, "count": len(bad) - MAX_RECORD_LETTERS,
                 "indexes": [r.index for r in bad[MAX_RECORD_LETTERS:]]},
                origin=origin,
            )

    # ------------------------------------------------------------------ resume check

    async def verify(self, start: int, end: int) -> int:
        """Forget done hours the table holds fewer rows of than were published; returns how many."""
        table_name = self.params.table
        if not table_name:
            return 0
        wanted: dict[str, dict[int, int]] = {}
        for (symbol, hour), done in self.progress.items():
            if done.ticks and start <= hour < end and symbol in self.factors:
                wanted.setdefault(symbol, {})[hour] = done.distinct
        if not wanted:
            return 0
        try:
            table = self.ctx.table(table_name)
        except KeyError as exc:
            self.ctx.log.warning("cannot check done hours: %s; trusting the progress file", exc)
            return 0
        forgotten = 0
        for symbol, hours in wanted.items():
            try:
                rows = await table.query(
                    "SELECT intDiv(ts, 3600000) * 3600000 AS hour, uniqExact(ts) AS n FROM {table} "
                    "WHERE symbol = {symbol:String} AND source = {source:String} AND ts >= {start:Int64} AND ts < {end:Int64} "
                    "GROUP BY hour",
                    {"symbol": symbol, "source": SOURCE, "start": min(hours), "end": max(hours) + HOUR_MS},
                )
            except StoreError as exc:
                self.ctx.log.warning("cannot check done hours of %s in %s (%s); trusting the progress file", symbol, table_name, exc)
                continue
            have = {int(r["hour"]): int(r["n"]) for r in rows}
            for hour, distinct in hours.items():
                if have.get(hour, 0) < distinct:
                    self.progress.forget(symbol, hour)
                    forgotten += 1
        if forgotten:
            self.ctx.log.warning(
                "%d done hour(s) have fewer rows in %s than were published (stopped before the table write?); fetching them again",
                forgotten, table_name,
            )
        return forgotten
