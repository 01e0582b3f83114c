"""Feature rows from bars: :class:`Batch` over a stored history, :class:`StreamingEngine` as bars arrive.

Both compute a row the same way: the kernel over the row's anchored window
(:mod:`nodes.features.windows`), then the as-of joins on the bar's close (session, calendar,
macro, higher-timeframe context), assembled in the order of the set's names. A row is *valid*
(published) when its window is complete and every value is finite; NaN and ±inf never leave.

Inputs from other streams are taken as of the row's close, strictly before it: cross-pair
returns (stored with each bar when it is added, so later arrivals do not change them) and the
higher timeframes' context.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.timeframes import parse_timeframe
from nodes.features import context as context_join
from nodes.features import crosspair, session
from nodes.features.bars import Bars
from nodes.features.events import Calendar
from nodes.features.featureset import ResolvedFeatureSet
from nodes.features.kernel import Segment, compute, kernel
from nodes.features.macro import MacroData
from nodes.features.windows import batch_blocks, block_bounds

log = logging.getLogger(__name__)

Stream = tuple[str, str]
"""(symbol, timeframe)"""
CtxSource = Callable[[str, str], "tuple[np.ndarray, np.ndarray, np.ndarray] | None"]
"""(symbol, timeframe) → (ts_close, context feature values n × F, usable) of its rows."""
RECENT = 16
"""Kernel rows of a stream kept for the context of lower timeframes (and their recomputation after a revision)."""
CALENDAR_KEEP_MS = 7 * 86_400_000
"""A stream keeps calendar events this far behind its newest bar (plus the events' recency): a row
only looks ``recency`` back, so older events change no new row, nor a revision within a week."""


def timeframe_ms(timeframe: str) -> int:
    return parse_timeframe(timeframe).ms


@dataclass
class History:
    """What a batch is computed from: bars per stream, calendar events and FRED observations."""

    bars: dict[Stream, Bars]
    calendar: Calendar | None = None
    macro: MacroData | None = None


@dataclass
class FeatureFrame:
    """Rows of one stream: ``values`` (n × len(names)) and whether each row is published (``valid``)."""

    symbol: str
    timeframe: str
    names: list[str]
    ts: np.ndarray
    ts_close: np.ndarray
    values: np.ndarray
    valid: np.ndarray
    complete: np.ndarray

    def messages(self, version: str, only: np.ndarray | None = None) -> list[dict[str, Any]]:
        """``features.v1`` messages of the valid rows (and of ``only`` among them, a mask)."""
        keep = self.valid if only is None else self.valid & only
        names = self.names
        return [
            {"symbol": self.symbol, "timeframe": self.timeframe, "ts": ts, "feature_set": version, "values": dict(zip(names, row))}
            for ts, row in zip(self.ts[keep].tolist(), self.values[keep].tolist())
        ]


@dataclass
class Counters:
    rows: int = 0
    incomplete: int = 0
    """Rows of an incomplete window (the beginning of the history): never published."""
    nonfinite: int = 0
    """Rows with a complete window but a NaN or infinite value (a join still warming up, a degenerate bar): withheld."""
    revised: int = 0
    too_old: int = 0
    """Revised or late bars older than the kept window: not recomputed (the next backfill has them)."""
    undefined: dict[str, int] = field(default_factory=dict)
    """Per ``timeframe:feature``, the complete rows of a batch where that feature was NaN or infinite:
    what holds rows back (a higher timeframe with too little history, a join with no data)."""

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}

    def worst(self, n: int = 3) -> list[tuple[str, int]]:
        """The ``n`` features that held back most rows."""
        return sorted(self.undefined.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class Joiner:
    """The as-of joins of rows and the assembly of their vectors, shared by batch and streaming."""

    def __init__(self, fs: ResolvedFeatureSet, calendar: Calendar | None, macro: MacroData | None) -> None:
        self.fs = fs
        self.calendar = calendar
        self.macro = macro
        g = fs.params.groups
        self.context_features = list(g.context.features) if g.context is not None else []
        self.context_cols = np.array([fs.kernel_index[f] for f in self.context_features], dtype=np.int64)
        self.targets = {h for highers in fs.context.values() for h in highers}
        """Timeframes some other timeframe takes context from."""
        self._plans: dict[str, tuple[list[str], np.ndarray | None, int, list[tuple[int, str]]]] = {}

    def plan(self, timeframe: str) -> tuple[list[str], np.ndarray | None, int, list[tuple[int, str]]]:
        """The timeframe's names; the kernel columns they take (None: all, in order) and how many; the joined names' positions."""
        got = self._plans.get(timeframe)
        if got is None:
            names = self.fs.names(timeframe)
            index = self.fs.kernel_index
            src = [index[n] for n in names if n in index]
            if [i for i, n in enumerate(names) if n in index] != list(range(len(src))):
                raise AssertionError(f"{timeframe}: the kernel's features must come first in the names")
            joins = [(i, n) for i, n in enumerate(names) if n not in index]
            take = None if src == list(range(len(index))) else np.array(src, dtype=np.int64)
            got = self._plans[timeframe] = (names, take, len(src), joins)
        return got

    def context_of(self, km: np.ndarray, complete: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = km[:, self.context_cols]
        return values, complete & np.isfinite(values).all(axis=1)

    def assemble(
        self, symbol: str, timeframe: str, ts: np.ndarray, at: np.ndarray, km: np.ndarray, source: CtxSource, finite: np.ndarray | None = None
    ) -> np.ndarray:
        """The rows' vectors: ``km``'s kernel columns in the names' order, then the joined ones. When
        ``km`` already has a column per name with the kernel's first (:func:`batch_blocks` with
        ``width``), the joins are written into it. ``finite`` (per row: every kernel value is
        finite), when given, becomes "every published value is finite"."""
        names, take, width, joins = self.plan(timeframe)
        if take is None and km.shape[1] == len(names):
            out = km
        else:
            out = np.empty((len(ts), len(names)), order="F")
            out[:, :width] = km[:, :width] if take is None else np.take(km, take, axis=1)
        if finite is not None and take is not None:  # the dropped features do not count
            finite &= np.isfinite(out[:, :width]).all(axis=1)
        if joins:
            cols = self.join(symbol, timeframe, ts, at, source)
            if finite is None:
                for i, name in joins:
                    out[:, i] = cols[name]
            else:
                scratch = np.empty(len(ts), dtype=bool)
                for i, name in joins:
                    col = out[:, i]
                    col[:] = cols[name]
                    finite &= np.isfinite(col, out=scratch)
        return out

    def join(self, symbol: str, timeframe: str, ts: np.ndarray, at: np.ndarray, source: CtxSource) -> dict[str, np.ndarray]:
        g = self.fs.params.groups
        cols: dict[str, np.ndarray] = {}
        if g.session is not None:
            session.compute(ts, g.session, cols)
        if g.events is not None:
            if self.calendar is None:
                raise ValueError("the events group needs calendar data")
            self.calendar.compute(symbol, at, cols)
        if g.macro is not None:
            if self.macro is None:
                raise ValueError("the macro group needs FRED data")
            self.macro.compute(at, cols)
        for i, h in enumerate(self.fs.context.get(timeframe, [])):
            got = source(symbol, h)
            if got is None:
                block = np.full((len(at), len(self.context_features)), np.nan)
            else:
                block = context_join.lookup(got[0], got[1], got[2], at)
            for k, f in enumerate(self.context_features):
                cols[f"htf{i + 1}_{f}"] = block[:, k]
        return cols


def _order(streams: Sequence[Stream]) -> list[Stream]:
    """Higher timeframes first (their rows are the context of lower ones), then by symbol."""
    return sorted(streams, key=lambda s: (-timeframe_ms(s[1]), s[1], s[0]))


class Batch:
    """Every row of a history, stream by stream, in chunks of whole blocks (bounded memory)."""

    def __init__(self, fs: ResolvedFeatureSet, history: History) -> None:
        self.fs = fs
        self.history = history
        self.joiner = Joiner(fs, history.calendar, history.macro)
        self.counters = Counters()
        self._context: dict[Stream, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def series(self, timeframe: str) -> Callable[[str], tuple[np.ndarray, np.ndarray] | None]:
        bars = self.history.bars

        def get(symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
            b = bars.get((symbol, timeframe))
            return None if b is None or not len(b) else (b.ts_close, b.close)

        return get

    def aux(self, symbol: str, timeframe: str, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fs.params.groups.crosspair is None:
            return np.zeros(len(at)), np.zeros(len(at))
        return crosspair.aux(at, self.fs.basket, self.fs.gold, self.series(timeframe))

    def _source(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        return self._context.get((symbol, timeframe))

    def frames(self, rows: int = 65_536, streams: Sequence[Stream] | None = None) -> Iterator[FeatureFrame]:
        """Frames of ``streams`` (default: all of the history; their context sources are computed too)."""
        wanted = set(self.history.bars if streams is None else streams)
        needed = set(wanted)
        for symbol, tf in list(wanted):
            needed.update((symbol, h) for h in self.fs.context.get(tf, []) if (symbol, h) in self.history.bars)
        for stream in _order([s for s in needed if s in self.history.bars]):
            symbol, tf = stream
            bars = self.history.bars[stream]
            basket, gold = self.aux(symbol, tf, bars.ts_close)
            keep_context = tf in self.joiner.targets
            parts: list[tuple[np.ndarray, np.ndarray]] = []
            names, take, _, _ = self.joiner.plan(tf)
            width = len(names) if take is None else 0
            for lo, hi, km, complete, finite in batch_blocks(self.fs, bars, basket, gold, timeframe_ms(tf), rows=rows, width=width):
                if keep_context:
                    parts.append(self.joiner.context_of(km, complete))
                if stream not in wanted:
                    continue
                ts, at = bars.ts[lo:hi], bars.ts_close[lo:hi]
                values = self.joiner.assemble(symbol, tf, ts, at, km, self._source, finite)
                valid = complete & finite
                self.counters.rows += hi - lo
                self.counters.incomplete += int((~complete).sum())
                withheld = complete & ~valid
                if withheld.any():
                    self.counters.nonfinite += int(withheld.sum())
                    undefined = self.counters.undefined
                    bad = ~np.isfinite(values[withheld])
                    for j in np.flatnonzero(bad.any(axis=0)).tolist():
                        key = f"{tf}:{names[j]}"
                        undefined[key] = undefined.get(key, 0) + int(bad[:, j].sum())
                yield FeatureFrame(symbol, tf, names, ts, at, values, valid, complete)
            if keep_context:
                width = len(self.joiner.context_features)
                values = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, width))
                ok = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=bool)
                self._context[stream] = (bars.ts_close, values, ok)

    def frame(self, stream: Stream) -> FeatureFrame:
        """All rows of one stream in one frame (tests, checks)."""
        parts = list(self.frames(rows=1 << 40, streams=[stream]))
        if not parts:
            names = self.joiner.plan(stream[1])[0]
            e = np.empty(0, np.int64)
            return FeatureFrame(stream[0], stream[1], names, e, e, np.empty((0, len(names))), np.empty(0, bool), np.empty(0, bool))
        return parts[0]


class _Buffer:
    """A stream's kept bars and their cross-pair inputs, as contiguous columns that grow at the end."""

    FLOATS = 10  # open high low close ticks spread spread_min spread_max basket gold

    def __init__(self, capacity: int = 256) -> None:
        self.n = 0
        self.ts = np.empty(capacity, np.int64)
        self.ts_close = np.empty(capacity, np.int64)
        self.f = np.empty((capacity, self.FLOATS), order="F")

    def _grow(self, need: int) -> None:
        cap = len(self.ts)
        if need <= cap:
            return
        cap = max(need, 2 * cap)
        ts, tsc, f = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty((cap, self.FLOATS), order="F")
        ts[: self.n], tsc[: self.n], f[: self.n] = self.ts[: self.n], self.ts_close[: self.n], self.f[: self.n]
        self.ts, self.ts_close, self.f = ts, tsc, f

    def load(self, bars: Bars, basket: np.ndarray, gold: np.ndarray) -> None:
        self.n = 0
        self._grow(len(bars))
        n = self.n = len(bars)
        self.ts[:n], self.ts_close[:n] = bars.ts, bars.ts_close
        for i, col in enumerate((bars.open, bars.high, bars.low, bars.close, bars.ticks, bars.spread, bars.spread_min, bars.spread_max, basket, gold)):
            self.f[:n, i] = col

    def insert(self, j: int, ts: int, ts_close: int, row: Sequence[float]) -> None:
        self._grow(self.n + 1)
        n = self.n
        if j < n:
            self.ts[j + 1 : n + 1] = self.ts[j:n].copy()
            self.ts_close[j + 1 : n + 1] = self.ts_close[j:n].copy()
            self.f[j + 1 : n + 1] = self.f[j:n].copy()
        self.ts[j], self.ts_close[j], self.f[j] = ts, ts_close, row
        self.n = n + 1

    def drop_front(self, k: int) -> None:
        if k <= 0:
            return
        n = self.n - k
        self.ts[:n] = self.ts[k : self.n].copy()
        self.ts_close[:n] = self.ts_close[k : self.n].copy()
        self.f[:n] = self.f[k : self.n].copy()
        self.n = n

    def bars(self, start: int, stop: int) -> Bars:
        f = self.f
        return Bars(self.ts[start:stop], self.ts_close[start:stop], *(f[start:stop, i] for i in range(8)))

    def basket(self, start: int, stop: int) -> np.ndarray:
        return self.f[start:stop, 8]

    def gold(self, start: int, stop: int) -> np.ndarray:
        return self.f[start:stop, 9]


BarInput = tuple[str, str, int, int, Sequence[float]]
"""A bar as :func:`~nodes.features.bars.parse_bar` gives it: ``(symbol, timeframe, ts, ts_close,
(open, high, low, close, ticks, spread, spread_min, spread_max))``."""


@dataclass
class _StreamState:
    buffer: _Buffer = field(default_factory=_Buffer)
    block_id: int | None = None
    block_start: int = 0
    dropped: int = 0
    """Bars dropped from the front: an incomplete window then means "too old to recompute", not "too little history"."""
    drop: int = 0
    """Bars to drop from the front once the pending rows are computed (the windows of their blocks may still need them)."""
    recent: list[tuple[int, np.ndarray, bool]] = field(default_factory=list)
    """(ts_close, context feature values, usable) of the last :data:`RECENT` rows, oldest first."""
    waiting_logged: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    symbol: str
    timeframe: str
    ts: int
    values: np.ndarray
    revised: bool = False
    bar: int = 0
    """Position, among the bars given to :meth:`StreamingEngine.on_bars`, of the bar that made the row publishable."""


@dataclass
class _Pending:
    """A stream's bars appended in the current run: buffer rows ``lo`` to the end, their rows not computed yet."""

    lo: int
    blocks: list[int]
    """Buffer index of the first bar of each block the rows are in (the first block may begin before ``lo``)."""
    bars: list[int]
    """Each row's bar: its position in the input."""
    aux: bool
    """Their cross-pair inputs are still to be taken."""


@dataclass
class _Run:
    """Appended bars whose rows are computed together (:meth:`StreamingEngine._flush`): consecutive bars of
    the input, their closes non-decreasing, so a bar's as-of inputs (strictly before its close) are among
    the bars before it, whatever the run's later bars are."""

    streams: dict[Stream, _Pending] = field(default_factory=dict)
    first: int = 0
    count: int = 0
    close: int = 0


class StreamingEngine:
    """Rows as bars arrive, identical to :class:`Batch` on the same history (see :mod:`nodes.features.windows`).

    A new bar gives its row (when valid). A revised bar (same ``ts``, other values) or a late
    one (a gap filled) replaces or enters the window, and every row from it to the newest is
    recomputed and returned again (``revised=True``): the stream then holds what a batch over
    the revised history computes. Other streams that used the old bar as cross-pair input or
    context keep their rows.

    Bars come one at a time (:meth:`on_bar`, live) or many at once (:meth:`on_bars`, a backtest's
    chunk); either way the same rows, bit for bit. :meth:`on_bars` appends a run of new bars
    first and then computes their rows stream by stream, each stream's in one kernel call over
    its blocks' windows (as :class:`Batch` does). A bar closing before the run's newest starts
    another run; one that is not new to its stream (a revision, a late bar) ends the run and is
    handled as it comes.
    """

    def __init__(self, fs: ResolvedFeatureSet, calendar: Calendar | None = None, macro: MacroData | None = None) -> None:
        self.fs = fs
        self.calendar = calendar
        self.macro = macro
        self.joiner = Joiner(fs, calendar, macro)
        self.streams: dict[Stream, _StreamState] = {}
        self.counters = Counters()
        self._tf_ms: dict[str, int] = {}
        self.latest_close = 0
        self._pruned_at = 0
        self._ordered = True
        """Every stream's closes increase with its bars (what bucket ends do). When a bar breaks that, the as-of
        searches over its stream see unsorted closes: from then on each bar is a run of its own, taking its
        cross-pair inputs before it enters, as a bar-by-bar update does."""

    # ------------------------------------------------------------------ state

    def _prune(self) -> None:
        """Forget calendar events no new row can see (events before the newest close - recency count as none)."""
        if self.calendar is not None and self.latest_close:
            self.calendar.prune(self.latest_close - CALENDAR_KEEP_MS - int(self.calendar.recency))
            self._pruned_at = self.latest_close

    def _ms(self, timeframe: str) -> int:
        ms = self._tf_ms.get(timeframe)
        if ms is None:
            ms = self._tf_ms[timeframe] = timeframe_ms(timeframe)
        return ms

    def _series(self, timeframe: str) -> Callable[[str], tuple[np.ndarray, np.ndarray] | None]:
        def get(symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
            st = self.streams.get((symbol, timeframe))
            if st is None or st.buffer.n == 0:
                return None
            b = st.buffer
            return b.ts_close[: b.n], b.f[: b.n, 3]

        return get

    def _aux(self, timeframe: str, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fs.params.groups.crosspair is None:
            return np.zeros(len(at)), np.zeros(len(at))
        return crosspair.aux(at, self.fs.basket, self.fs.gold, self._series(timeframe))

    def _source(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        st = self.streams.get((symbol, timeframe))
        if st is None or not st.recent:
            return None
        return (
            np.array([r[0] for r in st.recent], dtype=np.int64),
            np.array([r[1] for r in st.recent]),
            np.array([r[2] for r in st.recent], dtype=bool),
        )

    def prime(self, history: History) -> None:
        """Take the tail of a stored history as the streams' windows (no rows are returned: a backfill publishes those)."""
        batch = Batch(self.fs, history)
        W = self.fs.history
        for stream in _order(list(history.bars)):
            symbol, tf = stream
            bars = history.bars[stream]
            if not len(bars):
                continue
            starts, _ = block_bounds(bars.ts, self.fs.block, self._ms(tf))
            origin = max(0, int(starts[-2]) - W) if len(starts) >= 2 else 0
            tail = bars.slice(origin, len(bars))
            basket, gold = batch.aux(symbol, tf, tail.ts_close)
            st = self.streams[stream] = _StreamState(dropped=origin)
            st.buffer.load(tail, basket, gold)
            self._blocks(st, tf)
            if len(tail) > 1 and not bool((tail.ts_close[1:] > tail.ts_close[:-1]).all()):
                self._ordered = False
        self.latest_close = max((int(st.buffer.ts_close[st.buffer.n - 1]) for st in self.streams.values() if st.buffer.n), default=0)
        self._prune()
        for stream in _order(list(self.streams)):
            symbol, tf = stream
            if tf in self.joiner.targets:
                st = self.streams[stream]
                self._recompute_kernel_rows(st, tf, max(0, st.buffer.n - RECENT))

    def _blocks(self, st: _StreamState, timeframe: str) -> None:
        b = st.buffer
        starts, _ = block_bounds(b.ts[: b.n], self.fs.block, self._ms(timeframe))
        if not len(starts):
            st.block_id, st.block_start = None, 0
            return
        st.block_start = int(starts[-1])
        st.block_id = int(b.ts[st.block_start] // (self.fs.block * self._ms(timeframe)))

    def _remember(self, st: _StreamState, at: np.ndarray, values: np.ndarray, ok: np.ndarray) -> None:
        """Take rows' context values (and whether they are usable) into the stream's recent ones."""
        recent = st.recent
        for t, v, u in zip(at.tolist(), values, ok.tolist()):
            k = len(recent)
            while k and recent[k - 1][0] >= t:
                k -= 1
            if k < len(recent) and recent[k][0] == t:
                recent[k] = (t, v, u)
            else:
                recent.insert(k, (t, v, u))
        del recent[:-RECENT]

    # ------------------------------------------------------------------ inputs

    def add_event(self, event: Mapping[str, Any], arrived_ms: int | None) -> bool:
        kind = event.get("type")
        if kind == "economic_calendar" and self.calendar is not None:
            return self.calendar.add(event, arrived_ms)
        if kind == "fred_indicators" and self.macro is not None:
            return self.macro.add(event, arrived_ms)
        return False

    def on_bar(self, symbol: str, timeframe: str, ts: int, ts_close: int, values: Sequence[float]) -> list[Row]:
        """The rows this bar makes publishable (its own; after a revision or a late bar, every row from it on)."""
        return self.on_bars(((symbol, timeframe, ts, ts_close, values),))

    def on_bars(self, bars: Iterable[BarInput]) -> list[Row]:
        """The rows these bars make publishable, in their order: what :meth:`on_bar` returns for each bar
        in turn, concatenated (``Row.bar``: the position of the bar that made the row)."""
        out: list[Row] = []
        run = _Run()
        W = self.fs.history
        for k, (symbol, timeframe, ts, ts_close, values) in enumerate(bars):
            stream = (symbol, timeframe)
            st = self.streams.get(stream)
            if st is None:
                st = self.streams[stream] = _StreamState()
            b = st.buffer
            n = b.n
            if n and ts <= b.ts[n - 1]:
                self._flush(run, out)
                out.extend(self._revise(st, symbol, timeframe, ts, ts_close, values, k))
                continue
            if n and ts_close <= b.ts_close[n - 1]:
                self._ordered = False
            alone = not self._ordered
            if alone or ts_close < run.close:
                self._flush(run, out)
            if ts_close > self.latest_close:
                self.latest_close = ts_close
                if self.calendar is not None and ts_close - self._pruned_at > 86_400_000:
                    self._flush(run, out)  # the rows before it see the calendar unpruned
                    self._prune()
            n = b.n  # a flush drops the bars no window needs any more
            basket = gold = 0.0
            if alone:  # its cross-pair inputs as before it enters: over unsorted closes, a search could find it
                got = self._aux(timeframe, np.array([ts_close], dtype=np.int64))
                basket, gold = float(got[0][0]), float(got[1][0])
            block_id = ts // (self.fs.block * self._ms(timeframe))
            new_block = st.block_id is None or block_id != st.block_id
            if new_block:
                if st.block_id is not None and st.block_start - W > st.drop:
                    st.drop = st.block_start - W
                st.block_start, st.block_id = n, block_id
            b.insert(n, ts, ts_close, [*values, basket, gold])
            pending = run.streams.get(stream)
            if pending is None:
                run.streams[stream] = _Pending(n, [st.block_start], [k], not alone)
            else:
                if new_block:
                    pending.blocks.append(n)
                pending.bars.append(k)
            if not run.count:
                run.first = k
            run.count += 1
            run.close = max(run.close, ts_close)
            if alone:
                self._flush(run, out)
        self._flush(run, out)
        return out

    def _flush(self, run: _Run, out: list[Row]) -> None:
        """Compute the run's rows (cross-pair inputs first, then the streams, higher timeframes first: their
        rows are the context of lower ones), drop what the windows no longer need, add the rows to ``out``."""
        if not run.count:
            return
        for stream, pending in run.streams.items():
            if pending.aux:
                b = self.streams[stream].buffer
                basket, gold = self._aux(stream[1], b.ts_close[pending.lo : b.n])
                b.f[pending.lo : b.n, 8], b.f[pending.lo : b.n, 9] = basket, gold
        slots: list[Row | None] = [None] * run.count
        context: dict[Stream, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

        def source(symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
            got = context.get((symbol, timeframe))
            return got if got is not None else self._source(symbol, timeframe)

        for stream in _order(list(run.streams)) if len(run.streams) > 1 else run.streams:
            self._rows(stream, run.streams[stream], run.first, slots, context, source)
        for stream in run.streams:
            st = self.streams[stream]
            if st.drop:
                st.buffer.drop_front(st.drop)
                st.dropped += st.drop
                st.block_start -= st.drop
                st.drop = 0
        out.extend(row for row in slots if row is not None)
        run.streams, run.count, run.close = {}, 0, 0

    def _rows(
        self, stream: Stream, pending: _Pending, first: int, slots: list[Row | None],
        context: dict[Stream, tuple[np.ndarray, np.ndarray, np.ndarray]], source: CtxSource,
    ) -> None:  # fmt: skip
        """A stream's pending rows: the kernel over each block's window (from W bars before the block's first
        bar), then the joins; the valid ones into ``slots`` (by their bar's position in the run)."""
        symbol, tf = stream
        st = self.streams[stream]
        b = st.buffer
        W, lo, n = self.fs.history, pending.lo, st.buffer.n
        m = n - lo
        blocks = pending.blocks
        r = bisect_left(blocks, W)  # the blocks with W bars before them: a suffix
        ready = max(blocks[r], lo) - lo if r < len(blocks) else m
        names, take, _, _ = self.joiner.plan(tf)
        k = len(self.fs.kernel_names)
        matrix = np.empty((m, max(k, len(names)) if take is None else k), order="F")
        if ready:
            matrix[:ready, :k] = np.nan
        self.counters.rows += m
        self.counters.incomplete += ready
        if ready < m:
            origin = blocks[r] - W
            segments = [Segment(s - W - origin, s - origin, e - origin) for s, e in zip(blocks[r:], [*blocks[r + 1 :], n])]
            if blocks[r] < lo:  # the first block began before the run
                segments[0] = Segment(0, lo - origin, segments[0].hi)
            km = matrix[ready:]
            compute(self.fs, b.bars(origin, n), b.basket(origin, n), b.gold(origin, n), segments, km[:, :k])
            values = self.joiner.assemble(symbol, tf, b.ts[lo + ready : n], b.ts_close[lo + ready : n], km, source)
            valid = np.flatnonzero(np.isfinite(values).all(axis=1))
            self.counters.nonfinite += m - ready - len(valid)
            if len(valid):
                values = np.ascontiguousarray(values)
                ts = b.ts[lo + ready : n].tolist()
                bars = pending.bars
                for i in valid.tolist():
                    bar = bars[ready + i]
                    slots[bar - first] = Row(symbol, tf, ts[i], values[i], bar=bar)
        if tf in self.joiner.targets and len(self.joiner.context_features):
            at = b.ts_close[lo:n]
            ctx = matrix[:, self.joiner.context_cols]
            ok = np.zeros(m, dtype=bool)
            ok[ready:] = np.isfinite(ctx[ready:]).all(axis=1)
            before = self._source(symbol, tf)  # the rows before the run's: a lower timeframe's first rows may take them
            if before is not None:
                at, ctx, ok = np.concatenate((before[0], at)), np.concatenate((before[1], ctx)), np.concatenate((before[2], ok))
            context[stream] = (at, ctx, ok)
            self._remember(st, at[-RECENT:], ctx[-RECENT:], ok[-RECENT:])

    def _revise(self, st: _StreamState, symbol: str, timeframe: str, ts: int, ts_close: int, values: Sequence[float], bar: int) -> list[Row]:
        """A bar at or before the stream's newest: a revision (other values), a late bar (a gap filled), or the same bar again."""
        b = st.buffer
        n = b.n
        j = int(np.searchsorted(b.ts[:n], ts))
        if j < n and b.ts[j] == ts:
            if np.array_equal(b.f[j, :8], np.asarray(values, dtype=np.float64), equal_nan=True):
                return []
            b.f[j, :8] = values
        else:
            if j == 0 and st.dropped:
                self.counters.too_old += 1
                return []
            if (j and ts_close <= b.ts_close[j - 1]) or ts_close >= b.ts_close[j]:
                self._ordered = False
            b.insert(j, ts, ts_close, [*values, 0.0, 0.0])
        # the bar is its own basket member (and gold's own input): the inputs of the rows after it change too
        basket, gold = self._aux(timeframe, b.ts_close[j : b.n])
        b.f[j : b.n, 8], b.f[j : b.n, 9] = basket, gold
        self._blocks(st, timeframe)
        return self._recompute(st, symbol, timeframe, j, bar)

    def _recompute_kernel_rows(self, st: _StreamState, timeframe: str, j: int) -> list[tuple[int, np.ndarray, bool]]:
        """Kernel rows j.. of a stream's buffer, block by block: (index, kernel row, complete)."""
        b = st.buffer
        W = self.fs.history
        starts, ends = block_bounds(b.ts[: b.n], self.fs.block, self._ms(timeframe))
        remember = len(self.joiner.context_features) > 0
        out: list[tuple[int, np.ndarray, bool]] = []
        for i0, i1 in zip(starts.tolist(), ends.tolist()):
            if i1 <= j:
                continue
            first = max(i0, j)
            s = i0 - W
            if s < 0:
                if st.dropped:
                    self.counters.too_old += i1 - first
                nan = np.full((i1 - first, len(self.fs.kernel_names)), np.nan)
                if remember:
                    self._remember(st, b.ts_close[first:i1], *self.joiner.context_of(nan, np.zeros(i1 - first, dtype=bool)))
                out.extend((i, nan[i - first], False) for i in range(first, i1))
                continue
            km = kernel(self.fs, b.bars(s, i1), b.basket(s, i1), b.gold(s, i1), last=i1 - first)
            if remember:
                self._remember(st, b.ts_close[first:i1], *self.joiner.context_of(km, np.ones(i1 - first, dtype=bool)))
            out.extend((i, km[i - first], True) for i in range(first, i1))
        return out

    def _recompute(self, st: _StreamState, symbol: str, timeframe: str, j: int, bar: int = 0) -> list[Row]:
        b = st.buffer
        rows: list[Row] = []
        self.counters.revised += 1
        for i, km, complete in self._recompute_kernel_rows(st, timeframe, j):
            if not complete:
                continue
            values = self.joiner.assemble(symbol, timeframe, b.ts[i : i + 1], b.ts_close[i : i + 1], km[None, :], self._source)[0]
            if np.isfinite(values).all():
                rows.append(Row(symbol, timeframe, int(b.ts[i]), values, revised=True, bar=bar))
        return rows
