"""The bars a backtest replays, as one time-ordered tape of columns.

Order: by close time (a bar is known when it closes), then by the run's symbol order, then
finest timeframe first, as tick-aggregator publishes the bars that close at one instant.
A bar goes out as a first publication (``revision: 0``, ``complete: true``, no ``seq``): what
the table keeps is the bar as finally known, and a replay is history, not a live stream whose
numbers a subscriber should check.

Three sources, one shape:

- :func:`from_frame`: the rows of a bar table (``historical_aggregates``);
- :func:`read_file`: the rows of a table written to a file by :func:`write_file` (a backtest runner's child run);
- :func:`synthetic`: seeded 1-minute bars of :func:`nodes.features.synthetic.synthetic_bars`
  for the window, the coarser timeframes merged from them with
  :func:`nodes.marketdata.bars.merge_bars` (the aggregator's own kernel), so the timeframes agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from framework.chunk import Chunk
from framework.timeframes import MINUTE_MS, parse_timeframe

SPREADS = ("spread_mean", "spread_min", "spread_max")
BAR_COLUMNS = ("ts", "ts_close", "open", "high", "low", "close", "volume", "tick_count", *SPREADS)
TABLE_SQL = (
    "SELECT symbol, timeframe, source, ts, ts_close, open, high, low, close, volume, tick_count, spread_mean, spread_min, spread_max "
    "FROM {table} FINAL WHERE symbol IN {symbols:Array(String)} AND timeframe IN {timeframes:Array(String)} "
    "AND ts >= {start:Int64} AND ts_close <= {end:Int64} AND coalesce(complete, true)"
)
COUNT_SQL = "SELECT symbol, timeframe, count() AS n, min(ts) AS first, max(ts_close) AS last FROM {table} GROUP BY symbol, timeframe"


@dataclass(slots=True)
class Tape:
    """Bars of several (symbol, timeframe) streams, sorted for replay; row ``i`` of every column is one bar."""

    symbols: list[str]
    timeframes: list[str]
    symbol: np.ndarray
    """int index into ``symbols``."""
    timeframe: np.ndarray
    """int index into ``timeframes`` (finest first)."""
    source: np.ndarray
    """object: each bar's ``source``."""
    columns: dict[str, np.ndarray]
    """``BAR_COLUMNS``: int64 times, float64 prices and volumes, NaN for a missing spread."""

    def __len__(self) -> int:
        return len(self.symbol)

    @property
    def ts_close(self) -> np.ndarray:
        return self.columns["ts_close"]

    def instants(self) -> Iterator[tuple[int, int, int]]:
        """``(close time, first row, end row)`` of each run of bars closing at the same instant."""
        ts = self.ts_close
        if not len(ts):
            return
        edges = np.flatnonzero(ts[1:] != ts[:-1]) + 1
        starts = np.r_[0, edges].tolist()
        ends = np.r_[edges, len(ts)].tolist()
        yield from zip(ts[starts].tolist(), starts, ends)

    def messages(self, lo: int = 0, hi: int | None = None) -> list[dict[str, Any]]:
        """Bars ``lo`` to ``hi`` as ``bar.v1`` messages, in tape order."""
        c = {name: col[lo:hi] for name, col in self.columns.items()}
        symbols = [self.symbols[i] for i in self.symbol[lo:hi].tolist()]
        timeframes = [self.timeframes[i] for i in self.timeframe[lo:hi].tolist()]
        spreads = [[None if v != v else v for v in c[name].tolist()] for name in SPREADS]
        return [
            {"symbol": s, "timeframe": tf, "ts": ts, "ts_close": tc, "open": o, "high": h, "low": lo, "close": cl, "volume": v,
             "tick_count": n, "spread_mean": sm, "spread_min": smin, "spread_max": smax, "source": src, "complete": True, "revision": 0}
            for s, tf, ts, tc, o, h, lo, cl, v, n, sm, smin, smax, src in zip(
                symbols, timeframes, c["ts"].tolist(), c["ts_close"].tolist(), c["open"].tolist(), c["high"].tolist(),
                c["low"].tolist(), c["close"].tolist(), c["volume"].tolist(), c["tick_count"].astype(np.int64).tolist(),
                *spreads, self.source[lo:hi].tolist())
        ]  # fmt: skip

    def chunk(self, lo: int = 0, hi: int | None = None) -> Chunk:
        """Bars ``lo`` to ``hi`` as one chunk of ``bar.v1`` rows (the rows :meth:`messages` gives), timed by their close."""
        c = {name: col[lo:hi] for name, col in self.columns.items()}
        n = len(c["ts"])
        names = np.array(self.symbols, dtype=object)[self.symbol[lo:hi]], np.array(self.timeframes, dtype=object)[self.timeframe[lo:hi]]
        columns = {"symbol": names[0], "timeframe": names[1], "ts": c["ts"], "ts_close": c["ts_close"], "open": c["open"],
                   "high": c["high"], "low": c["low"], "close": c["close"], "volume": c["volume"],
                   "tick_count": c["tick_count"].astype(np.int64), **{name: c[name] for name in SPREADS},
                   "source": self.source[lo:hi], "complete": np.ones(n, dtype=bool), "revision": np.zeros(n, dtype=np.int64)}  # fmt: skip
        return Chunk(columns).timed(c["ts_close"])

    def stream(self, symbol: str, timeframe: str) -> dict[str, np.ndarray]:
        """The columns of one stream (the report's price line)."""
        mask = (self.symbol == self.symbols.index(symbol)) & (self.timeframe == self.timeframes.index(timeframe))
        return {name: col[mask] for name, col in self.columns.items()}

    def counts(self) -> dict[tuple[str, str], int]:
        keys, counts = np.unique(self.symbol * len(self.timeframes) + self.timeframe, return_counts=True)
        return {(self.symbols[k // len(self.timeframes)], self.timeframes[k % len(self.timeframes)]): int(n) for k, n in zip(keys, counts)}


def ordered_timeframes(timeframes: Sequence[str]) -> list[str]:
    return sorted(dict.fromkeys(timeframes), key=lambda tf: (parse_timeframe(tf).ms, tf))


def _sorted(symbols: list[str], timeframes: list[str], symbol: np.ndarray, timeframe: np.ndarray, source: np.ndarray,
            columns: dict[str, np.ndarray]) -> Tape:  # fmt: skip
    order = np.lexsort((columns["ts"], timeframe, symbol, columns["ts_close"]))
    return Tape(symbols, timeframes, symbol[order], timeframe[order], source[order], {k: v[order] for k, v in columns.items()})


def empty(symbols: Sequence[str], timeframes: Sequence[str]) -> Tape:
    i = np.empty(0, np.int64)
    columns = {name: (i.copy() if name in ("ts", "ts_close") else np.empty(0)) for name in BAR_COLUMNS}
    return Tape(list(symbols), ordered_timeframes(timeframes), i, i.copy(), np.empty(0, dtype=object), columns)


def from_frame(frame: Any, symbols: Sequence[str], timeframes: Sequence[str]) -> Tape:
    """A tape from a bar table's rows (a DataFrame with the columns of :data:`TABLE_SQL`)."""
    symbols, timeframes = list(symbols), ordered_timeframes(timeframes)
    if frame is None or not len(frame):
        return empty(symbols, timeframes)
    symbol = frame["symbol"].map({s: i for i, s in enumerate(symbols)}).to_numpy(dtype=np.int64)
    timeframe = frame["timeframe"].map({t: i for i, t in enumerate(timeframes)}).to_numpy(dtype=np.int64)
    columns: dict[str, np.ndarray] = {}
    for name in BAR_COLUMNS:
        col = frame[name]
        if name in ("ts", "ts_close"):
            columns[name] = col.to_numpy(dtype=np.int64)
        else:
            columns[name] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    source = frame["source"].astype(object).to_numpy()
    return _sorted(symbols, timeframes, symbol, timeframe, source, columns)


def write_file(path: Any, frame: Any, external: Sequence[dict[str, Any]] = ()) -> None:
    """Bars (a DataFrame with the columns of :data:`TABLE_SQL`) and external events (``external_event.v1``) as one
    ``.npz`` without pickles: what a backtest runner (nodes/backtest/runner.py) hands a child run, whose embedded
    store cannot be the parent's. Written to a temporary name, then renamed."""
    n = 0 if frame is None else len(frame)
    arrays: dict[str, np.ndarray] = {}
    for name in ("symbol", "timeframe", "source"):
        arrays[name] = frame[name].astype(str).to_numpy(dtype=str) if n else np.empty(0, dtype="<U1")
    for name in BAR_COLUMNS:
        if not n:
            arrays[name] = np.empty(0, np.int64 if name in ("ts", "ts_close") else np.float64)
        elif name in ("ts", "ts_close"):
            arrays[name] = frame[name].to_numpy(dtype=np.int64)
        else:
            arrays[name] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    arrays["external"] = np.frombuffer(orjson.dumps(list(external)), dtype=np.uint8)
    target = str(path)
    partial = f"{target}.partial"
    with open(partial, "wb") as out:
        np.savez(out, **arrays)
    os.replace(partial, target)


def read_file(path: Any, symbols: Sequence[str], timeframes: Sequence[str], start_ms: int, end_ms: int) -> tuple[Tape, list[dict[str, Any]]]:
    """The bars of :func:`write_file`'s file that a run replays (as :data:`TABLE_SQL` selects them from a table), and its external events."""
    symbols, timeframes = list(symbols), ordered_timeframes(timeframes)
    with np.load(path, allow_pickle=False) as z:
        data = {name: z[name] for name in z.files}
    external = orjson.loads(data["external"].tobytes()) if "external" in data and len(data["external"]) else []
    keep = (np.isin(data["symbol"], symbols) & np.isin(data["timeframe"], timeframes) & (data["ts"] >= start_ms)
            & (data["ts_close"] <= end_ms))  # fmt: skip
    if not keep.any():
        return empty(symbols, timeframes), external
    index = {s: i for i, s in enumerate(symbols)}
    symbol = np.array([index[s] for s in data["symbol"][keep].tolist()], dtype=np.int64)
    index = {t: i for i, t in enumerate(timeframes)}
    timeframe = np.array([index[t] for t in data["timeframe"][keep].tolist()], dtype=np.int64)
    columns = {name: data[name][keep] for name in BAR_COLUMNS}
    return _sorted(symbols, timeframes, symbol, timeframe, data["source"][keep].astype(object), columns), external


def synthetic(symbols: Sequence[str], timeframes: Sequence[str], start_ms: int, end_ms: int, seed: int) -> Tape:
    """Seeded bars of every (symbol, timeframe) in ``[start_ms, end_ms)``: 1-minute bars, coarser ones merged from them."""
    from nodes.features.synthetic import grid, synthetic_bars
    from nodes.marketdata.bars import Bars as MarketBars
    from nodes.marketdata.bars import merge_bars
    from nodes.marketdata.timeframes import Buckets

    symbols, timeframes = list(symbols), ordered_timeframes(timeframes)
    first = (start_ms + MINUTE_MS - 1) // MINUTE_MS * MINUTE_MS
    last = end_ms // MINUTE_MS * MINUTE_MS
    minutes = (last - first) // MINUTE_MS
    if minutes <= 0 or not symbols:
        return empty(symbols, timeframes)
    count = int(np.count_nonzero(grid("1m", minutes, last) >= first))
    if count == 0:
        return empty(symbols, timeframes)
    base = synthetic_bars(symbols, "1m", count, seed, last)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("symbol", "timeframe", *BAR_COLUMNS)}
    sources: list[np.ndarray] = []
    for s, symbol in enumerate(symbols):
        b = base[symbol]
        ticks = np.maximum(1.0, np.round(b.ticks))
        minute = MarketBars(b.ts, b.ts_close, b.open, b.high, b.low, b.close, ticks.copy(), ticks.astype(np.int64), b.spread * ticks,
                            b.spread_min, b.spread_max)  # fmt: skip
        for t, tf in enumerate(timeframes):
            bars = minute if tf == "1m" else merge_bars(minute, Buckets(tf))
            keep = (bars.ts >= start_ms) & (bars.ts_close <= end_ms)  # a coarse bucket the window cuts is no bar
            n = int(keep.sum())
            parts["symbol"].append(np.full(n, s, np.int64))
            parts["timeframe"].append(np.full(n, t, np.int64))
            for name in BAR_COLUMNS:
                value = bars.spread_mean if name == "spread_mean" else getattr(bars, name)
                parts[name].append(np.asarray(value)[keep])
            sources.append(np.full(n, "synthetic", dtype=object))
    columns = {name: np.concatenate(parts[name]) for name in BAR_COLUMNS}
    columns["ts"], columns["ts_close"] = columns["ts"].astype(np.int64), columns["ts_close"].astype(np.int64)
    for name in BAR_COLUMNS[2:]:
        columns[name] = columns[name].astype(np.float64)
    return _sorted(symbols, timeframes, np.concatenate(parts["symbol"]), np.concatenate(parts["timeframe"]), np.concatenate(sources), columns)


def start_for(count: int, end_ms: int) -> int:
    """The start of a window of ``count`` one-minute bars of :func:`synthetic` that ends at ``end_ms`` (weekends skipped)."""
    from nodes.features.synthetic import grid

    return int(grid("1m", count, end_ms // MINUTE_MS * MINUTE_MS)[0])
