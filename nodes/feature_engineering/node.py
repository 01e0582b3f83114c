"""The feature-engineering service: stored history at start (backfill), then one row per closed bar.

At start it reads the stored bars (``bars_table``), the calendar and FRED tables, computes the
rows of the whole history in batch (:class:`~nodes.features.engine.Batch`) and publishes on
``history`` (tables only) the valid rows ``ml_features`` lacks for this feature-set version.
The tail of that history primes the streaming engine, which then turns each closed bar on
``bars`` into its row on ``features`` (NATS, archive, table), bitwise equal to what the batch
computes for it. Bars come in chunks (one bar live, thousands from a backtest's timed chunks)
and their rows leave as one chunk, each at the time of the bar it was made from. Calendar events and FRED observations arriving on ``external`` are used from
then on, never before their release (:mod:`nodes.features.macro`, :mod:`nodes.features.events`).

- A bar still forming (``complete: false``) is skipped; a malformed one is dead-lettered with the
  field at fault; a bar of a timeframe outside the set is ignored.
- A revision (same ``ts``, other values) or a late bar replaces or enters the window, and the
  rows from it to the newest are published again on ``features`` (same subject, same ``ts``),
  as bars' revisions are: the table then holds what a batch over the revised bars computes.
- A row with a NaN or infinite value is not published; such rows are counted and logged at stop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.chunk import Chunk
from framework.durations import parse_ms
from framework.errors import UserError
from framework.node import Node, handles
from nodes.feature_engineering.spec import FeatureEngineeringParams
from nodes.features.bars import BarError, Bars, parse_bar, per_value, screen_bars
from nodes.features.engine import BarInput, Batch, History, Row, StreamingEngine
from nodes.features.events import Calendar
from nodes.features.featureset import FeatureSetError, ResolvedFeatureSet
from nodes.features.macro import MacroData

BAR_COLUMNS = "symbol, timeframe, ts, ts_close, open, high, low, close, tick_count, spread_mean, spread_min, spread_max, complete"


class FeatureEngineering(Node[FeatureEngineeringParams]):
    async def on_start(self) -> None:
        p = self.params
        timeframes = list(p.timeframes or self.ctx.timeframes)
        try:
            self.fs = ResolvedFeatureSet(p.feature_set, self.ctx.instruments, timeframes)
        except FeatureSetError as exc:
            raise UserError(f"service {self.ctx.service}: params.feature_set.{exc}") from None
        self.timeframes = set(timeframes)
        groups = p.feature_set.groups
        calendar = Calendar(groups.events) if groups.events is not None else None
        macro = MacroData(groups.macro) if groups.macro is not None else None
        self.ignored = 0
        await self._load_external(calendar, macro)
        history = History(await self._load_bars(), calendar, macro)
        self.ctx.log.info(
            "%s: feature set %s, %d features (%s), W=%d B=%d; %d stored bars in %d streams",
            self.ctx.service, self.fs.version, len(self.fs.names(timeframes[0])), timeframes[0], self.fs.history, self.fs.block,
            sum(len(b) for b in history.bars.values()), len(history.bars),
        )  # fmt: skip
        if p.backfill and history.bars:
            await self._backfill(history)
        self.engine = StreamingEngine(self.fs, calendar, macro)
        self.engine.prime(history)

    # ------------------------------------------------------------------ start: history

    def _table(self, name: str | None) -> Any:
        if name is None:
            return None
        try:
            return self.ctx.table(name)
        except KeyError:
            self.ctx.log.warning("%s: table %s is not declared for this service (add it to reads); not read", self.ctx.service, name)
            return None

    @staticmethod
    def _final(table: Any) -> str:
        return " FINAL" if getattr(table.store, "kind", "") == "clickhouse" else ""

    async def _load_external(self, calendar: Calendar | None, macro: MacroData | None) -> None:
        p = self.params
        if calendar is not None and (table := self._table(p.calendar_table)) is not None:
            for row in await table.query(f"SELECT * FROM {{table}}{self._final(table)} WHERE type = 'economic_calendar'"):
                calendar.add(row)
        if macro is not None and (table := self._table(p.fred_table)) is not None:
            for row in await table.query(f"SELECT type, ts, series, value FROM {{table}}{self._final(table)} WHERE type = 'fred_indicators'"):
                macro.add(row)

    async def _load_bars(self) -> dict[tuple[str, str], Bars]:
        table = self._table(self.params.bars_table)
        if table is None:
            return {}
        where = "symbol IN {symbols:Array(String)} AND timeframe IN {timeframes:Array(String)}"
        params: dict[str, Any] = {"symbols": sorted(self.ctx.pairs), "timeframes": sorted(self.timeframes)}
        lookback = parse_ms(self.params.backfill_lookback) if self.params.backfill_lookback else None
        if lookback is not None:
            newest = await table.query(f"SELECT max(ts) AS ts FROM {{table}} WHERE {where}", params)
            if newest and newest[0].get("ts") is not None:
                where += " AND ts >= {since:Int64}"
                params["since"] = int(newest[0]["ts"]) - lookback - self.fs.history * max(_tf_ms(tf) for tf in self.timeframes)
        frame = await table.query_frame(f"SELECT {BAR_COLUMNS} FROM {{table}}{self._final(table)} WHERE {where} ORDER BY symbol, timeframe, ts", params)
        out: dict[tuple[str, str], Bars] = {}
        if frame is None or not len(frame):
            return out
        frame = frame[frame["complete"].fillna(True).astype(bool)] if "complete" in frame else frame
        dropped = 0
        for (symbol, timeframe), group in frame.groupby(["symbol", "timeframe"], sort=True):
            bars = Bars.from_columns(group)
            sane = bars.sane()
            if not sane.all():
                dropped += int((~sane).sum())
                bars = bars.take(np.flatnonzero(sane))
            out[(str(symbol), str(timeframe))] = bars
        if dropped:
            self.ctx.log.warning("%s: %d stored bar(s) are not bars (high < low, a non-positive price…); left out", self.ctx.service, dropped)
        return out

    async def _existing(self) -> dict[tuple[str, str], np.ndarray]:
        table = self._table(self.params.features_table)
        if table is None:
            return {}
        frame = await table.query_frame(
            f"SELECT symbol, timeframe, ts FROM {{table}}{self._final(table)} WHERE feature_set = {{v:String}}", {"v": self.fs.version}
        )
        if frame is None or not len(frame):
            return {}
        return {(str(s), str(t)): np.sort(g["ts"].to_numpy(dtype=np.int64)) for (s, t), g in frame.groupby(["symbol", "timeframe"])}

    async def _backfill(self, history: History) -> None:
        existing = await self._existing()
        batch = Batch(self.fs, history)
        published = 0
        frames = batch.frames()
        while (frame := await self.ctx.offload(next, frames, None)) is not None:  # a chunk at a time, off the event loop
            have = existing.get((frame.symbol, frame.timeframe))
            missing = ~np.isin(frame.ts, have) if have is not None else None
            messages = frame.messages(self.fs.version, missing)
            for i in range(0, len(messages), self.params.publish_chunk):
                published += await self.ctx.publish_many("history", messages[i : i + self.params.publish_chunk])
        c = batch.counters
        self.ctx.log.info(
            "%s: backfill of %d rows: %d published, %d already stored, %d in warm-up (incomplete window), %d withheld (NaN or inf)",
            self.ctx.service, c.rows, published, c.rows - c.incomplete - c.nonfinite - published, c.incomplete, c.nonfinite,
        )  # fmt: skip
        if c.nonfinite:
            worst = ", ".join(f"{name} in {n:,}" for name, n in c.worst())
            hint = (
                f"; a higher timeframe's context (htf<i>_) is defined once that timeframe has {self.fs.history} bars of its own "
                "(params.feature_set.history): download more history or shorten groups.context.timeframes"
                if any(":htf" in name for name, _ in c.worst()) else ""
            )
            self.ctx.log.warning("%s: rows withheld because a feature is undefined: %s%s", self.ctx.service, worst, hint)

    # ------------------------------------------------------------------ streaming

    @handles("external")
    async def on_external(self, event: dict[str, Any]) -> None:
        self.engine.add_event(event, self.ctx.clock.now_ms())

    @handles("bars", batch=True)
    async def on_bars(self, chunk: Chunk) -> None:
        """Bars (a chunk of one live, thousands in a backtest) → their rows, one chunk on ``features``, computed
        together (:meth:`StreamingEngine.on_bars`). The rows of a timed chunk (history handed on ahead of time)
        keep the time of the bar each was made from."""
        index, bars = await self._bars(chunk)
        rows = self.engine.on_bars(bars) if bars else []
        if not rows:
            return
        times = chunk.times
        at = times[[index[row.bar] for row in rows]] if times is not None else None
        await self.ctx.publish_batch("features", self._features(rows), at=at)

    async def _bars(self, chunk: Chunk) -> tuple[list[int], list[BarInput]]:
        """The chunk's bars as the engine takes them, and each one's row in the chunk. Judged column by column
        (:func:`screen_bars`); a row the columns do not vouch for goes through :meth:`_parse` as a message,
        which dead-letters it with its reason, or skips or ignores it, or (a bar after all) takes it."""
        s = screen_bars(chunk)
        bar = s.ok & ~s.incomplete
        known = bar & per_value(s.timeframe, self.timeframes.__contains__)
        ignored = bar & ~known
        good = known & per_value(s.symbol, self.ctx.instruments.__contains__)
        self.ignored += int(ignored.sum())
        index = np.flatnonzero(good).tolist()
        bars: list[BarInput] = list(zip(
            s.symbol[good].tolist(), s.timeframe[good].tolist(), s.ts[good].tolist(), s.ts_close[good].tolist(), s.values[good].tolist()
        ))  # fmt: skip
        doubtful = np.flatnonzero(~(good | ignored | s.incomplete)).tolist()
        if doubtful:
            messages = chunk.rows()
            taken: list[tuple[int, BarInput]] = []
            for i in doubtful:
                parsed = await self._parse(messages[i])
                if parsed is not None:
                    taken.append((i, parsed))
            if taken:
                merged = sorted([*zip(index, bars), *taken], key=lambda pair: pair[0])
                index, bars = [i for i, _ in merged], [b for _, b in merged]
        return index, bars

    async def _parse(self, bar: dict[str, Any]) -> BarInput | None:
        """The bar as the engine takes it; None for a bar still forming, a malformed one (dead-lettered) and
        one of another timeframe (ignored)."""
        if bar.get("complete") is False:
            return None
        try:
            parsed = parse_bar(bar)
        except BarError as exc:
            await self.ctx.dead_letter(f"{bar.get('symbol')} {bar.get('timeframe')} ts={bar.get('ts')}: {exc}", bar, origin="bars")
            return None
        symbol, timeframe, ts = parsed[0], parsed[1], parsed[2]
        if timeframe not in self.timeframes:
            self.ignored += 1
            return None
        if symbol not in self.ctx.instruments:
            await self.ctx.dead_letter(f"{symbol} {timeframe} ts={ts}: unknown instrument {symbol!r}", bar, origin="bars")
            return None
        return parsed

    def _features(self, rows: list[Row]) -> Chunk:
        """The rows as ``features.v1`` messages, column by column (``values``: a mapping per row, in the names' order)."""
        plan = self.engine.joiner.plan
        names = {tf: plan(tf)[0] for tf in {row.timeframe for row in rows}}
        return Chunk({
            "symbol": [row.symbol for row in rows],
            "timeframe": [row.timeframe for row in rows],
            "ts": [row.ts for row in rows],
            "feature_set": [self.fs.version] * len(rows),
            "values": [dict(zip(names[row.timeframe], row.values.tolist())) for row in rows],
        })  # fmt: skip

    async def on_stop(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            c = engine.counters
            self.ctx.log.info(
                "%s: %d bars streamed: %d rows in warm-up, %d withheld (NaN or inf), %d revisions recomputed, %d too old to recompute",
                self.ctx.service, c.rows, c.incomplete, c.nonfinite, c.revised, c.too_old,
            )  # fmt: skip


def _tf_ms(timeframe: str) -> int:
    from framework.timeframes import parse_timeframe

    return parse_timeframe(timeframe).ms
