"""Replay of recorded ticks on the node's clock.

On the simulated clock (demo, backtest) each tick waits for its own time, so the pipeline
runs as fast as it can take the ticks while every timer sees event time; on the wall clock
``speed`` compresses the recorded pace N-fold (0: no pacing). Ticks go through the same quote
check as a live feed, so a bad recorded row is dead-lettered, not replayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd

from framework.durations import parse_ms
from framework.node import Node
from framework.params import utc_ms
from nodes.marketdata.quotes import quote_problem
from nodes.replay.spec import ReplayParams

COLUMNS = ["symbol", "ts", "bid", "ask"]


def read_file_ticks(path: Path, kind: str) -> pd.DataFrame:
    """Every tick in a Parquet/CSV file or a directory of them, with ts as Unix ms."""
    files = sorted(path.glob(f"*.{kind}")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .{kind} files in {path}")
    frames = [pd.read_parquet(f) if kind == "parquet" else pd.read_csv(f) for f in files]
    frame = pd.concat(frames, ignore_index=True)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
    ts = frame["ts"]
    if not pd.api.types.is_integer_dtype(ts):
        frame["ts"] = pd.to_datetime(ts, utc=True).astype("int64") // 1_000_000
    return frame


class Replay(Node[ReplayParams]):
    async def run(self) -> None:
        self.published = 0
        self._wall_start: float | None = None
        self._event_start: int | None = None
        async for frame in self._chunks():
            for row in frame.itertuples(index=False):
                await self._emit(row._asdict())
        self.ctx.log.info("replay finished: %d tick(s)", self.published)

    async def _emit(self, row: dict[str, Any]) -> None:
        symbol, ts = str(row["symbol"]), int(row["ts"])
        if symbol not in self.ctx.instruments or symbol not in self.ctx.pairs:
            return
        problem = quote_problem(row["bid"], row["ask"])
        if problem is not None:
            await self.ctx.dead_letter(problem, {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}, origin="replay")
            return
        await self._pace(ts)
        source = self.params.tick_source or (str(row["source"]) if row.get("source") else "replay")
        tick = {"symbol": symbol, "ts": ts, "bid": float(row["bid"]), "ask": float(row["ask"]), "source": source}
        self.published += 1
        await self.ctx.publish("ticks", tick)

    async def _pace(self, ts: int) -> None:
        """Event time drives the clock when it is not live (simulated, or the runtime's paced
        replay clock: ``runtime.clock_speed`` / ``clock_origin``, which every node's timers
        share); on a live wall clock ``params.speed`` paces this source alone."""
        clock = self.ctx.clock
        if not clock.live:
            await clock.wait_until(ts)
            return
        if self.params.speed <= 0:
            return
        if self._wall_start is None or self._event_start is None:
            self._wall_start, self._event_start = time.monotonic(), ts
            return
        due = self._wall_start + (ts - self._event_start) / 1000 / self.params.speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _chunks(self) -> AsyncIterator[pd.DataFrame]:
        params = self.params
        start = utc_ms(params.start) if params.start else None
        end = utc_ms(params.end) if params.end else None
        if params.source != "table":
            assert params.path is not None
            frame = read_file_ticks(Path(params.path), params.source)
            if start is not None:
                frame = frame[frame["ts"] >= start]
            if end is not None:
                frame = frame[frame["ts"] < end]
            yield frame.sort_values("ts", kind="stable")
            return
        table = self.ctx.table(params.table)
        if start is None or end is None:
            rows = await table.query(f"SELECT min(ts) AS first, max(ts) AS last, count() AS n FROM {params.table}")
            if not rows or not rows[0]["n"]:
                self.ctx.log.warning("replay: table %s is empty", params.table)
                return
            start = start if start is not None else int(rows[0]["first"])
            end = end if end is not None else int(rows[0]["last"]) + 1
        step = parse_ms(params.chunk) or 6 * 3_600_000
        symbols = list(self.ctx.pairs)
        cursor = start
        while cursor < end:
            upto = min(cursor + step, end)
            rows = await table.query(
                f"SELECT symbol, ts, bid, ask, source FROM {params.table} FINAL "
                "WHERE ts >= {lo:Int64} AND ts < {hi:Int64} AND symbol IN {symbols:Array(String)} ORDER BY ts, symbol",
                {"lo": cursor, "hi": upto, "symbols": symbols},
            )
            if rows:
                yield pd.DataFrame(rows)
            cursor = upto
