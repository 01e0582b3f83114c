"""Candle aggregation: the one implementation, for streaming, batch and backtest alike.

Two vectorised kernels do all the arithmetic:

- :func:`aggregate_ticks` turns quotes into bars of one timeframe (OHLC of the bid, tick
  count, spread statistics from ``ask - bid``);
- :func:`merge_bars` turns bars into bars of a coarser timeframe they nest in.

:func:`aggregate_frame` (batch) and :class:`StreamingAggregator` (live) both build the
finest timeframe from ticks and every other timeframe by merging, through
:func:`plan`; the streaming side only decides *when* a bucket is complete and hands its
ticks to the same kernels, so its bars equal the batch bars by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nodes.marketdata.timeframes import UTC_MIDNIGHT, Buckets, DailyRoll, timeframe

_FIELDS = ("ts", "ts_close", "open", "high", "low", "close", "volume", "tick_count", "spread_sum", "spread_min", "spread_max")


@dataclass(slots=True)
class Bars:
    """Bars of one symbol and timeframe, column-wise. ``spread_sum`` keeps merges exact."""

    ts: np.ndarray
    ts_close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    tick_count: np.ndarray
    spread_sum: np.ndarray
    spread_min: np.ndarray
    spread_max: np.ndarray

    @classmethod
    def empty(cls) -> Bars:
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(i, i.copy(), f, f.copy(), f.copy(), f.copy(), f.copy(), i.copy(), f.copy(), f.copy(), f.copy())

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def spread_mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.tick_count > 0, self.spread_sum / np.maximum(self.tick_count, 1), np.nan)

    def take(self, index: Any) -> Bars:
        return Bars(*(getattr(self, f)[index] for f in _FIELDS))

    def copy(self) -> Bars:
        return Bars(*(getattr(self, f).copy() for f in _FIELDS))

    @classmethod
    def concat(cls, parts: Sequence[Bars]) -> Bars:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each run of equal keys (keys sorted)."""
    cut = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    first = np.concatenate(([0], cut))
    last = np.concatenate((cut, [len(keys)])) - 1
    return first, last


def aggregate_ticks(
    ts: Any,
    bid: Any,
    ask: Any,
    buckets: Buckets,
    volume: Any | None = None,
    *,
    seq: Any | None = None,
    assume_sorted: bool = False,
) -> Bars:
    """Bars of ``buckets``' timeframe from quotes, in any order.

    Quotes are taken in time order; ties (the same millisecond) by ``seq`` when given (the
    source's sequence number, so a tick that arrived late still takes its place), else in
    input order. Prices are the bid, as the bar contract says; ``volume`` defaults to the
    tick count (FX has no traded volume).
    """
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size == 0:
        return Bars.empty()
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    vol = None if volume is None else np.asarray(volume, dtype=np.float64)
    if not assume_sorted and ts.size > 1:
        order = None
        if seq is not None:
            tie = np.asarray(seq, dtype=np.int64)
            step = np.diff(ts)
            if bool(np.any(step < 0)) or bool(np.any((step == 0) & (np.diff(tie) < 0))):
                order = np.lexsort((tie, ts))
        elif bool(np.any(ts[1:] < ts[:-1])):
            order = np.argsort(ts, kind="stable")
        if order is not None:
            ts, bid, ask = ts[order], bid[order], ask[order]
            vol = None if vol is None else vol[order]
    starts = buckets.starts(ts)
    first, last = _segments(starts)
    spread = ask - bid
    count = (last - first + 1).astype(np.int64)
    return Bars(
        ts=starts[first],
        ts_close=buckets.ends(starts[first]),
        open=bid[first],
        high=np.maximum.reduceat(bid, first),
        low=np.minimum.reduceat(bid, first),
        close=bid[last],
        volume=count.astype(np.float64) if vol is None else np.add.reduceat(vol, first),
        tick_count=count,
        spread_sum=np.add.reduceat(spread, first),
        spread_min=np.minimum.reduceat(spread, first),
        spread_max=np.maximum.reduceat(spread, first),
    )


def merge_bars(bars: Bars, coarse: Buckets) -> Bars:
    """Bars of a coarser timeframe from time-ordered bars that nest in it."""
    if len(bars) == 0:
        return Bars.empty()
    starts = coarse.starts(bars.ts)
    first, last = _segments(starts)
    return Bars(
        ts=starts[first],
        ts_close=coarse.ends(starts[first]),
        open=bars.open[first],
        high=np.maximum.reduceat(bars.high, first),
        low=np.minimum.reduceat(bars.low, first),
        close=bars.close[last],
        volume=np.add.reduceat(bars.volume, first),
        tick_count=np.add.reduceat(bars.tick_count, first),
        spread_sum=np.add.reduceat(bars.spread_sum, first),
        spread_min=np.fmin.reduceat(bars.spread_min, first),
        spread_max=np.fmax.reduceat(bars.spread_max, first),
    )


def flat_bars(buckets: Buckets, starts: Sequence[int], price: float) -> Bars:
    """Bars with no ticks (``fill_empty``): OHLC at the last close, zero volume, no spread."""
    n = len(starts)
    s = np.asarray(starts, dtype=np.int64)
    p = np.full(n, price, dtype=np.float64)
    nan = np.full(n, np.nan)
    return Bars(s, buckets.ends(s), p, p.copy(), p.copy(), p.copy(), np.zeros(n), np.zeros(n, np.int64), np.zeros(n), nan, nan.copy())


def fill_gaps(bars: Bars, buckets: Buckets, *, prev_close: float | None = None, after: int | None = None, until: int | None = None) -> Bars:
    """``bars`` with a flat bar in every empty bucket between ``after`` (a bucket start,
    exclusive) or the first bar, and ``until`` (exclusive end) or the last bar."""
    pieces: list[Bars] = []
    cursor = None if after is None else buckets.end(after)
    price = prev_close
    for i in range(len(bars)):
        start = int(bars.ts[i])
        if cursor is not None and price is not None and cursor < start:
            pieces.append(flat_bars(buckets, _starts_between(buckets, cursor, start), price))
        pieces.append(bars.take(slice(i, i + 1)))
        cursor, price = int(bars.ts_close[i]), float(bars.close[i])
    if until is not None and cursor is not None and price is not None and cursor < until:
        pieces.append(flat_bars(buckets, _starts_between(buckets, cursor, until, whole=True), price))
    return Bars.concat(pieces)


def _starts_between(buckets: Buckets, first: int, stop: int, whole: bool = False) -> list[int]:
    out, start = [], first
    while start < stop and (not whole or buckets.end(start) <= stop):
        out.append(start)
        start = buckets.end(start)
    return out


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class Step:
    """How one timeframe is built: from the ticks, or by merging ``source``'s bars."""

    timeframe: str
    buckets: Buckets
    source: str | None


def plan(timeframes: Iterable[str], roll: DailyRoll = UTC_MIDNIGHT) -> list[Step]:
    """Build order: finest first; each later timeframe merges the coarsest earlier one it nests in."""
    names = sorted(set(timeframes), key=lambda n: (timeframe(n).ms, n))
    steps: list[Step] = []
    for name in names:
        buckets = Buckets(name, roll)
        source = next((s.timeframe for s in reversed(steps) if s.buckets.nests_in(buckets)), None)
        steps.append(Step(name, buckets, source))
    return steps


# --------------------------------------------------------------------------- batch

BAR_COLUMNS = ["symbol", "timeframe", "ts", "ts_close", "open", "high", "low", "close", "volume", "tick_count",
               "spread_mean", "spread_min", "spread_max"]


def aggregate_symbol(
    ts: Any,
    bid: Any,
    ask: Any,
    steps: Sequence[Step],
    *,
    fill_empty: bool = False,
    until: int | None = None,
    seq: Any | None = None,
) -> dict[str, Bars]:
    """Every timeframe of ``steps`` for one symbol's quotes."""
    out: dict[str, Bars] = {}
    for step in steps:
        if step.source is None:
            bars = aggregate_ticks(ts, bid, ask, step.buckets, seq=seq)
            if fill_empty:
                bars = fill_gaps(bars, step.buckets, until=until)
        else:
            bars = merge_bars(out[step.source], step.buckets)
        out[step.timeframe] = bars
    return out


def aggregate_frame(
    ticks: pd.DataFrame,
    timeframes: Iterable[str],
    roll: DailyRoll = UTC_MIDNIGHT,
    *,
    fill_empty: bool = False,
) -> pd.DataFrame:
    """Batch aggregation of a ``symbol, ts, bid, ask[, seq]`` frame (ts in Unix ms) into one frame of bars.

    A ``seq`` column orders ticks of the same millisecond (as the streaming side does).

    With ``fill_empty`` each symbol has a bar in every bucket from its first tick to the end
    of the input, the bucket of the last tick of any symbol (as the streaming side closes
    buckets on a clock shared by all symbols)."""
    steps = plan(timeframes, roll)
    frames = []
    until = None
    if fill_empty and len(ticks):
        until = steps[0].buckets.end(steps[0].buckets.start(int(ticks["ts"].max())))
    for symbol, group in ticks.groupby("symbol", sort=True):
        seq = group["seq"].to_numpy() if "seq" in group and group["seq"].notna().all() else None
        result = aggregate_symbol(
            group["ts"].to_numpy(), group["bid"].to_numpy(), group["ask"].to_numpy(), steps,
            fill_empty=fill_empty, until=until, seq=seq,
        )  # fmt: skip
        for step in steps:
            frames.append(bars_frame(result[step.timeframe], str(symbol), step.timeframe))
    if not frames:
        return pd.DataFrame(columns=BAR_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def bars_frame(bars: Bars, symbol: str, tf: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": tf,
            "ts": bars.ts,
            "ts_close": bars.ts_close,
            "open": bars.open,
            "high": bars.high,
            "low": bars.low,
            "close": bars.close,
            "volume": bars.volume,
            "tick_count": bars.tick_count,
            "spread_mean": bars.spread_mean,
            "spread_min": bars.spread_min,
            "spread_max": bars.spread_max,
        }
    )


def bar_messages(bars: Bars, symbol: str, tf: str, source: str, *, digits: int = 10) -> list[dict[str, Any]]:
    """bar.v1 messages (spreads rounded to ``digits`` to drop float noise; null without ticks)."""
    mean = bars.spread_mean
    out = []
    for i in range(len(bars)):
        count = int(bars.tick_count[i])
        out.append(
            {
                "symbol": symbol,
                "timeframe": tf,
                "ts": int(bars.ts[i]),
                "ts_close": int(bars.ts_close[i]),
                "open": float(bars.open[i]),
                "high": float(bars.high[i]),
                "low": float(bars.low[i]),
                "close": float(bars.close[i]),
                "volume": float(bars.volume[i]),
                "tick_count": count,
                "spread_mean": round(float(mean[i]), digits) if count else None,
                "spread_min": round(float(bars.spread_min[i]), digits) if count else None,
                "spread_max": round(float(bars.spread_max[i]), digits) if count else None,
                "source": source,
                "complete": True,
                "revision": 0,
            }
        )
    return out


# --------------------------------------------------------------------------- streaming


class LateTickError(ValueError):
    """A tick for a bucket that has already closed and can no longer be revised."""


@dataclass(slots=True)
class ClosedBar:
    """Bars of one symbol and timeframe that closed (or were revised) together.

    ``revision`` holds, per row, 0 for a bar's first publication and n for its n-th
    revision; None means all first publications."""

    symbol: str
    timeframe: str
    bars: Bars
    revision: np.ndarray | None = None


class _SymbolState:
    __slots__ = (
        "ts", "bid", "ask", "seq", "ordered", "pending", "due", "last_close", "last_base_start", "kept", "history", "revisions",
    )  # fmt: skip

    def __init__(self, steps: Sequence[Step]) -> None:
        self.ts: list[int] = []
        self.bid: list[float] = []
        self.ask: list[float] = []
        self.seq: list[int] = []
        self.ordered = True
        """The buffered ticks came in strictly increasing time: nothing to sort, no ties to break."""
        self.pending: dict[str, list[Bars]] = {s.timeframe: [] for s in steps[1:]}
        self.due: dict[str, int] = {}
        self.last_close: float | None = None
        self.last_base_start: int | None = None
        self.kept: dict[int, tuple[list[int], list[float], list[float], list[int]]] = {}
        """Ticks of closed base buckets still inside the revision horizon, per bucket start."""
        self.history: dict[str, Bars] = {}
        """Closed bars per timeframe that a revision may still touch, in time order."""
        self.revisions: dict[tuple[str, int], int] = {}


class StreamingAggregator:
    """Bars as ticks arrive; a bucket closes when the watermark passes its end plus ``lateness_ms``.

    The watermark is the newest tick time seen or what :meth:`advance` was told (the clock),
    whichever is later, so a quiet symbol's bars still close on time. Until its bucket
    closes a tick is only buffered (in any order); closing hands the buffered ticks of the
    finest timeframe to :func:`aggregate_ticks` and each coarser bucket's finer bars to
    :func:`merge_bars`, exactly as :func:`aggregate_frame` does in one go.

    ``complete_from`` (a live aggregator's start) is when its input began: a bucket that
    started earlier would miss the ticks before it, so its bar is never published (the
    historical downloader backfills those), and ticks before it are ignored.

    A tick for a bucket that already closed is *revised in*, when it is no older than
    ``revision_horizon_ms`` behind the watermark (and not before the first bucket this
    aggregator built): its bucket's bar is recomputed from all of the bucket's ticks, every
    coarser bar containing it is re-merged, and the changed bars come back with their
    revision numbers, so every published bar still equals the batch aggregation of its
    ticks. Older ticks raise :class:`LateTickError`. With ``revision_horizon_ms=0`` every
    tick for a closed bucket does.
    """

    def __init__(
        self,
        timeframes: Iterable[str],
        roll: DailyRoll = UTC_MIDNIGHT,
        *,
        lateness_ms: int = 0,
        fill_empty: bool = False,
        revision_horizon_ms: int = 0,
        complete_from: int | None = None,
    ) -> None:
        self.steps = plan(timeframes, roll)
        if not self.steps:
            raise ValueError("at least one timeframe is needed")
        bad = [s.timeframe for s in self.steps[1:] if s.source is None]
        if bad:
            raise ValueError(f"timeframes {bad} do not nest in {self.steps[0].timeframe} under this daily roll")
        self.base = self.steps[0].buckets
        self._buckets = {s.timeframe: s.buckets for s in self.steps}
        self.consumers: dict[str, list[str]] = {}
        for step in self.steps[1:]:
            assert step.source is not None
            self.consumers.setdefault(step.source, []).append(step.timeframe)
        self.lateness_ms = lateness_ms
        self.fill_empty = fill_empty
        self.revision_horizon_ms = max(0, revision_horizon_ms)
        self.complete_from = complete_from
        self.before_start = 0
        self.watermark: int | None = None
        self.closed_until: int | None = None
        self.first_bucket: int | None = None
        self._next_close: int | None = None
        self.states: dict[str, _SymbolState] = {}
        self.late = 0
        self.revised = 0
        self._arrivals = 0

    def add(self, symbol: str, ts: int, bid: float, ask: float, seq: int | None = None) -> list[ClosedBar]:
        """Take one tick; return the bars that closed (or were revised) because of it.

        ``seq`` (the source's sequence number) orders ticks of the same millisecond;
        without it they keep their arrival order."""
        if seq is None:
            self._arrivals += 1
            seq = self._arrivals
        if self.complete_from is not None and ts < self.complete_from:
            self.before_start += 1
            return []
        if self.closed_until is not None and ts < self.closed_until:
            if self._revisable(ts):
                return self._revise(symbol, ts, bid, ask, seq)
            self.late += 1
            raise LateTickError(self._too_late(symbol, ts))
        state = self.states.get(symbol)
        if state is None:
            state = self.states[symbol] = _SymbolState(self.steps)
        if state.ordered and state.ts and ts <= state.ts[-1]:
            state.ordered = False
        state.ts.append(ts)
        state.bid.append(bid)
        state.ask.append(ask)
        state.seq.append(seq)
        if self.watermark is None or ts > self.watermark:
            return self.advance(ts)
        return []

    def _revisable(self, ts: int) -> bool:
        return (
            self.revision_horizon_ms > 0
            and self.first_bucket is not None
            and ts >= self.first_bucket
            and self.watermark is not None
            and ts >= self.watermark - self.revision_horizon_ms
        )

    def _too_late(self, symbol: str, ts: int) -> str:
        assert self.closed_until is not None
        if self.revision_horizon_ms and self.first_bucket is not None and ts < self.first_bucket:
            return f"late tick: {symbol} at {ts} is before the first bucket this aggregator built (its bars were made elsewhere)"
        window = f"lateness window {self.lateness_ms} ms"
        if self.revision_horizon_ms:
            window += f", revision horizon {self.revision_horizon_ms} ms"
        return (
            f"late tick: {symbol} at {ts} is {self.closed_until - ts} ms before the close of the last "
            f"{self.steps[0].timeframe} bucket ({window})"
        )

    def advance(self, now_ms: int) -> list[ClosedBar]:
        """Move the watermark to ``now_ms`` if that is later; return the bars that closed."""
        if self.watermark is not None and now_ms <= self.watermark:
            return []
        self.watermark = now_ms
        if self.closed_until is None:
            first = min((min(s.ts) for s in self.states.values() if s.ts), default=now_ms)
            self.closed_until = self.first_bucket = self.base.start(first)
            self._next_close = self.base.end(self.closed_until) + self.lateness_ms
        assert self._next_close is not None
        if now_ms < self._next_close:
            return []
        boundary = self.base.start(now_ms - self.lateness_ms)
        self.closed_until = boundary
        self._next_close = self.base.end(boundary) + self.lateness_ms
        closed: list[ClosedBar] = []
        for symbol, state in self.states.items():
            closed.extend(self._close(symbol, state, boundary))
        self._forget()
        return closed

    def drain(self) -> list[ClosedBar]:
        """Close everything buffered, coarse buckets included (end of a bounded input, as in a batch run).

        With ``fill_empty`` every symbol gets flat bars up to the end of the input: the
        bucket of the last tick of *any* symbol (the rule :func:`aggregate_frame` follows)."""
        last = max((max(s.ts) for s in self.states.values() if s.ts), default=None)
        if last is None:
            if self.closed_until is None:
                return []
            last = self.closed_until - 1
        boundary = max(self.base.end(self.base.start(last)), self.closed_until or 0)
        self.watermark = max(self.watermark or boundary, boundary + self.lateness_ms)
        if self.closed_until is None:
            self.first_bucket = self.base.start(min(min(s.ts) for s in self.states.values() if s.ts))
        self.closed_until = boundary
        self._next_close = self.base.end(boundary) + self.lateness_ms
        closed: list[ClosedBar] = []
        for symbol, state in self.states.items():
            closed.extend(self._close(symbol, state, boundary, final=True))
        return closed

    def _close(self, symbol: str, state: _SymbolState, boundary: int, final: bool = False) -> list[ClosedBar]:
        """Close every bucket of ``symbol`` that ends at or before ``boundary`` (every bucket if ``final``)."""
        base = Bars.empty()
        if state.ts:
            ts = np.asarray(state.ts, dtype=np.int64)
            done = ts < boundary
            if done.any():
                bid, ask, seq = np.asarray(state.bid), np.asarray(state.ask), np.asarray(state.seq, dtype=np.int64)
                ordered = state.ordered
                if done.all():
                    closing = (ts, bid, ask, seq)
                    state.ts, state.bid, state.ask, state.seq = [], [], [], []
                    state.ordered = True
                else:
                    closing = (ts[done], bid[done], ask[done], seq[done])
                    keep = ~done
                    state.ts, state.bid, state.ask = ts[keep].tolist(), bid[keep].tolist(), ask[keep].tolist()
                    state.seq = seq[keep].tolist()
                if ordered:
                    base = aggregate_ticks(*closing[:3], self.base, assume_sorted=True)
                else:
                    base = aggregate_ticks(*closing[:3], self.base, seq=closing[3])
                if self.revision_horizon_ms:
                    self._keep_ticks(state, *closing)
        if self.fill_empty and state.last_base_start is not None:
            base = fill_gaps(base, self.base, prev_close=state.last_close, after=state.last_base_start, until=boundary)
        closed: list[ClosedBar] = []
        if len(base):
            state.last_close = float(base.close[-1])
            state.last_base_start = int(base.ts[-1])
            closed.append(ClosedBar(symbol, self.steps[0].timeframe, base))
            self._feed(state, self.steps[0].timeframe, base)
        for step in self.steps[1:]:
            pending = state.pending[step.timeframe]
            if not pending or not final and boundary < state.due[step.timeframe]:
                continue
            bars = Bars.concat(pending)
            ends = step.buckets.ends(step.buckets.starts(bars.ts))
            cut = len(bars) if final else int(np.searchsorted(ends, boundary, side="right"))
            if cut == 0:
                state.pending[step.timeframe] = [bars]
                continue
            state.pending[step.timeframe] = [bars.take(slice(cut, None))] if cut < len(bars) else []
            if cut < len(bars):
                state.due[step.timeframe] = int(ends[cut])
            merged = merge_bars(bars.take(slice(0, cut)), step.buckets)
            closed.append(ClosedBar(symbol, step.timeframe, merged))
            self._feed(state, step.timeframe, merged)
        if self.revision_horizon_ms:
            for item in closed:
                state.history[item.timeframe] = Bars.concat([state.history.get(item.timeframe, Bars.empty()), item.bars.copy()])
        return self._complete(closed)

    def _complete(self, closed: list[ClosedBar]) -> list[ClosedBar]:
        """Only bars of buckets that began at or after ``complete_from``."""
        if self.complete_from is None:
            return closed
        out = []
        for item in closed:
            keep = item.bars.ts >= self.complete_from
            if keep.all():
                out.append(item)
            elif keep.any():
                revision = None if item.revision is None else item.revision[keep]
                out.append(ClosedBar(item.symbol, item.timeframe, item.bars.take(keep), revision))
        return out

    def _feed(self, state: _SymbolState, timeframe: str, bars: Bars) -> None:
        for consumer in self.consumers.get(timeframe, ()):
            pending = state.pending[consumer]
            if not pending:
                buckets = self._buckets[consumer]
                state.due[consumer] = buckets.end(buckets.start(int(bars.ts[0])))
            pending.append(bars)

    # --- revisions ------------------------------------------------------------------

    def _keep_ticks(self, state: _SymbolState, ts: np.ndarray, bid: np.ndarray, ask: np.ndarray, seq: np.ndarray) -> None:
        columns = (ts.tolist(), bid.tolist(), ask.tolist(), seq.tolist())
        for i, start in enumerate(self.base.starts(ts).tolist()):
            kept = state.kept.setdefault(start, ([], [], [], []))
            for column, values in zip(kept, columns):
                column.append(values[i])

    def _forget(self) -> None:
        """Drop what no revision can touch any more: ticks and bars older than the horizon
        (bars only once every coarser bucket containing them is beyond it too)."""
        if not self.revision_horizon_ms or self.watermark is None:
            return
        oldest = self.watermark - self.revision_horizon_ms
        bars_from = min(step.buckets.start(oldest) for step in self.steps)
        for state in self.states.values():
            for start in [s for s in state.kept if self.base.end(s) <= oldest]:
                del state.kept[start]
            for tf, bars in state.history.items():
                cut = int(np.searchsorted(bars.ts, bars_from, side="left"))
                if cut:
                    state.history[tf] = bars.take(slice(cut, None))
                    state.revisions = {k: v for k, v in state.revisions.items() if k[1] >= bars_from}

    def _revise(self, symbol: str, ts: int, bid: float, ask: float, seq: int) -> list[ClosedBar]:
        state = self.states.get(symbol)
        if state is None:
            state = self.states[symbol] = _SymbolState(self.steps)
        self.revised += 1
        start = self.base.start(ts)
        kept = state.kept.setdefault(start, ([], [], [], []))
        for column, value in zip(kept, (ts, bid, ask, seq)):
            column.append(value)
        base_tf = self.steps[0].timeframe
        out: list[ClosedBar] = []
        changed = {base_tf: [self._put(state, base_tf, aggregate_ticks(*kept[:3], self.base, seq=kept[3]), out, symbol)]}
        if self.fill_empty:
            changed[base_tf].extend(self._refill_flat(state, start, out, symbol))
        assert self.closed_until is not None
        for step in self.steps[1:]:
            assert step.source is not None
            done: list[int] = []
            for coarse in sorted({step.buckets.start(s) for s in changed.get(step.source, ())}):
                end = step.buckets.end(coarse)
                if end > self.closed_until:
                    self._update_pending(state, step.timeframe, step.source, coarse, end)
                    continue
                finer = state.history[step.source]
                lo, hi = np.searchsorted(finer.ts, [coarse, end])
                done.append(self._put(state, step.timeframe, merge_bars(finer.take(slice(lo, hi)), step.buckets), out, symbol))
            changed[step.timeframe] = done
        return self._complete(out)

    def _put(self, state: _SymbolState, tf: str, row: Bars, out: list[ClosedBar], symbol: str) -> int:
        """Store ``row`` (one bar) in the timeframe's history, as a revision if the bucket had a bar."""
        start = int(row.ts[0])
        bars = state.history.get(tf, Bars.empty())
        i = int(np.searchsorted(bars.ts, start))
        if i < len(bars) and int(bars.ts[i]) == start:
            state.history[tf] = Bars.concat([bars.take(slice(0, i)), row, bars.take(slice(i + 1, None))])
            revision = state.revisions[(tf, start)] = state.revisions.get((tf, start), 0) + 1
        else:
            state.history[tf] = Bars.concat([bars.take(slice(0, i)), row, bars.take(slice(i, None))])
            revision = 0
        out.append(ClosedBar(symbol, tf, row, np.array([revision], dtype=np.int64)))
        if tf == self.steps[0].timeframe and (state.last_base_start is None or start >= state.last_base_start):
            state.last_base_start, state.last_close = start, float(row.close[0])
        return start

    def _refill_flat(self, state: _SymbolState, start: int, out: list[ClosedBar], symbol: str) -> list[int]:
        """With ``fill_empty``: the closed buckets after a revised bar up to the next one with
        ticks are flat at its (new) close; revise or add them."""
        base_tf = self.steps[0].timeframe
        bars = state.history[base_tf]
        price = float(bars.close[int(np.searchsorted(bars.ts, start))])
        changed: list[int] = []
        cursor = self.base.end(start)
        assert self.closed_until is not None
        while cursor < self.closed_until:
            bars = state.history[base_tf]
            i = int(np.searchsorted(bars.ts, cursor))
            if i < len(bars) and int(bars.ts[i]) == cursor:
                if int(bars.tick_count[i]) > 0:
                    break
                if float(bars.close[i]) == price:
                    cursor = self.base.end(cursor)
                    continue
            changed.append(self._put(state, base_tf, flat_bars(self.base, [cursor], price), out, symbol))
            cursor = self.base.end(cursor)
        return changed

    def _update_pending(self, state: _SymbolState, tf: str, source: str, coarse: int, end: int) -> None:
        """An open coarser bucket takes the revised finer bars when it closes."""
        finer = state.history[source]
        lo, hi = np.searchsorted(finer.ts, [coarse, end])
        waiting = Bars.concat(state.pending[tf])
        keep = (waiting.ts < coarse) | (waiting.ts >= end)
        merged = Bars.concat([waiting.take(keep), finer.take(slice(lo, hi))])
        state.pending[tf] = [merged.take(np.argsort(merged.ts, kind="stable"))] if len(merged) else []
        state.due[tf] = min(state.due[tf], end) if waiting.ts.size and tf in state.due else end

    def open_ticks(self) -> int:
        return sum(len(s.ts) for s in self.states.values())

    # --- state across restarts (JSON: lists and numbers only) ---------------------------

    _SCALARS = ("watermark", "closed_until", "first_bucket", "_next_close", "late", "revised", "_arrivals", "before_start", "complete_from")

    def to_state(self) -> dict[str, Any]:
        """Everything still open, as JSON-able data (:meth:`load_state` takes it back)."""
        return {
            **{name: getattr(self, name) for name in self._SCALARS},
            "symbols": {
                symbol: {
                    "ts": st.ts, "bid": st.bid, "ask": st.ask, "seq": st.seq, "ordered": st.ordered,
                    "pending": {tf: [_bars_state(b) for b in bars] for tf, bars in st.pending.items()},
                    "due": st.due, "last_close": st.last_close, "last_base_start": st.last_base_start,
                    "kept": [[start, *columns] for start, columns in st.kept.items()],
                    "history": {tf: _bars_state(b) for tf, b in st.history.items()},
                    "revisions": [[tf, start, n] for (tf, start), n in st.revisions.items()],
                }
                for symbol, st in self.states.items()
            },
        }  # fmt: skip

    def load_state(self, state: Mapping[str, Any]) -> None:
        for name in self._SCALARS:
            setattr(self, name, state[name])
        self.states = {}
        for symbol, saved in state["symbols"].items():
            st = self.states[symbol] = _SymbolState(self.steps)
            st.ts, st.bid, st.ask, st.seq = list(saved["ts"]), list(saved["bid"]), list(saved["ask"]), list(saved["seq"])
            st.ordered = bool(saved["ordered"])
            st.pending = {tf: [_bars_of(b) for b in bars] for tf, bars in saved["pending"].items()}
            st.due = {tf: int(v) for tf, v in saved["due"].items()}
            st.last_close, st.last_base_start = saved["last_close"], saved["last_base_start"]
            st.kept = {int(k[0]): (list(k[1]), list(k[2]), list(k[3]), list(k[4])) for k in saved["kept"]}
            st.history = {tf: _bars_of(b) for tf, b in saved["history"].items()}
            st.revisions = {(tf, int(start)): int(n) for tf, start, n in saved["revisions"]}


def _bars_state(bars: Bars) -> dict[str, list[Any]]:
    return {f: getattr(bars, f).tolist() for f in _FIELDS}


def _bars_of(state: Mapping[str, list[Any]]) -> Bars:
    kinds = {"ts": np.int64, "ts_close": np.int64, "tick_count": np.int64}
    return Bars(*(np.asarray([np.nan if v is None else v for v in state[f]], dtype=kinds.get(f, np.float64)) for f in _FIELDS))


def closed_messages(closed: Iterable[ClosedBar], source: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in closed:
        messages = bar_messages(item.bars, item.symbol, item.timeframe, source)
        if item.revision is not None:
            for message, revision in zip(messages, item.revision.tolist()):
                message["revision"] = revision
        out.extend(messages)
    return out


def frame_of(closed: Iterable[ClosedBar]) -> pd.DataFrame:
    """The bars of ``closed`` as one frame (the latest revision of each), built column-wise."""
    items = [c for c in closed if len(c.bars)]
    if not items:
        return pd.DataFrame(columns=BAR_COLUMNS)
    merged = Bars.concat([c.bars for c in items])
    counts = [len(c.bars) for c in items]
    frame = pd.DataFrame(
        {
            "symbol": np.repeat([c.symbol for c in items], counts),
            "timeframe": np.repeat([c.timeframe for c in items], counts),
            "ts": merged.ts,
            "ts_close": merged.ts_close,
            "open": merged.open,
            "high": merged.high,
            "low": merged.low,
            "close": merged.close,
            "volume": merged.volume,
            "tick_count": merged.tick_count,
            "spread_mean": merged.spread_mean,
            "spread_min": merged.spread_min,
            "spread_max": merged.spread_max,
        }
    )
    return frame.drop_duplicates(["symbol", "timeframe", "ts"], keep="last").reset_index(drop=True)


def by_key(frame: pd.DataFrame) -> Mapping[tuple[str, str, int], Any]:
    return {(r.symbol, r.timeframe, int(r.ts)): r for r in frame.itertuples(index=False)}
