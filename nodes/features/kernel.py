"""The kernel: every kernel-group feature of one (symbol, timeframe), for rows of a bar span.

Rows come in *segments* (:class:`Segment`); every row of a segment is defined as computed over
the same window, the bars from the segment's ``start`` to the row (the anchored windows of
:mod:`nodes.features.windows`: a batch evaluates a run of blocks in one call, one segment per
block; a streaming update one row). Each value is one of three kinds, and :class:`Rows` computes
each kind in the cheapest way that gives the bits of that definition:

- *running* (TA-Lib's SMA, EMA, RSI, ADX, STDDEV, BBANDS, STOCH, LINEARREG_SLOPE...: their value
  depends on where the computation started, through a recursion or the rounding of a running
  sum): run over each segment's window, the segment's rows kept (:meth:`Rows.running`);
- *local* (elementwise numpy, TA-Lib's TRANGE, BOP, WILLR, AROON: a pure function of the last few
  bars, whatever precedes them; ROC and MOM in numpy, AROONOSC from AROON's outputs, ULTOSC when
  its running sums are exact, see :func:`nodes.features.momentum.exact_totals`): computed once
  for all the rows, from the bars just before the first row (:meth:`Rows.local`,
  :meth:`Rows.rows`, :meth:`Rows.lag`);
- *phased* (TA-Lib's CCI sums a circular buffer whose slots count from the window's first bar):
  run from the latest bar that is a whole number of periods after the window's start and early
  enough for the row's look-back, which fills the buffer's slots exactly as the window does
  (:meth:`Rows.phased`).

Which TA-Lib functions are local or phased is a property of TA-Lib's code; the streaming tests
(a window per row) against the batch (one run for many rows) hold it to the bit. The normalising
arithmetic (ratios to close, /100, z-scores) is elementwise, so it is done once per call on the
rows' columns, in place: numpy's elementwise results do not depend on an element's position in
its array. A row's value still depends only on its window's start and the bars up to the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain, repeat
from typing import Any, NamedTuple

import numpy as np

from nodes.features import activity, bands, crosspair, momentum, returns, trend, volatility
from nodes.features.bars import Bars
from nodes.features.featureset import ResolvedFeatureSet

_SIMPLE = {"returns": returns, "volatility": volatility, "trend": trend, "momentum": momentum, "bands": bands, "activity": activity}


class Segment(NamedTuple):
    """Rows ``lo``..``hi`` (exclusive) of a span, each computed over the window from ``start`` (span indices)."""

    start: int
    lo: int
    hi: int


class Rows:
    """Rows of a bar span being computed, in segments; the output matrix and the ways to fill it.

    Arrays given to the methods are span arrays (index 0 = the span's first bar); results are
    arrays of the rows (index 0 = the first row).
    """

    def __init__(self, fs: ResolvedFeatureSet, bars: Bars, basket: np.ndarray, gold: np.ndarray, segments: Sequence[Segment], out: np.ndarray) -> None:
        self.bars, self.basket, self.gold = bars, basket, gold
        self.segments = segments
        self.lo, self.hi = segments[0].lo, segments[-1].hi
        self.n = self.hi - self.lo
        self._single = len(segments) == 1
        self._whole = self._single and segments[0].start == 0 and segments[0].hi == len(bars)
        """One segment whose window is the whole span (a streaming update): running inputs need no slicing."""
        self.scratch = np.empty(self.n)
        """A rows array for intermediate results: ufuncs writing over their own input check for
        overlap, a cost that dominates on one row (a streaming update), so steps alternate buffers."""
        self.depth = min(s.lo - s.start for s in segments)
        """Bars of every row's window before its segment: no local look-back may exceed it."""
        self._cols = out.T
        """Column j of ``out`` is ``self._cols[j]`` (a contiguous row of the transpose: the cheaper indexing)."""
        self._index = fs.kernel_index
        self._taken: dict[str, int] = {}
        """Columns written so far, in order (a dict: an ordered set)."""
        self._checked = 0
        self._plans: dict[tuple[int, tuple[int, ...]], tuple[list[tuple[tuple[slice | int, slice], ...]], bool]] = {}
        self._bounds: np.ndarray | None = None
        """The segments' starts, first rows and ends (3 arrays; made when a call needs them)."""
        self._views: dict[tuple[int, int], tuple[np.ndarray, list[np.ndarray]]] = {}
        """Per input (by identity: the entry keeps it alive) and lead, its window of every segment: the
        functions over the same input share the views."""
        self._cache: dict[tuple[Any, ...], tuple[Sequence[np.ndarray], list[tuple[int, int]], tuple[np.ndarray, ...]]] = {}
        """Outputs of :meth:`running` (and which output and lag each is) by function, inputs (by identity: the entry keeps
        them alive) and parameters."""
        self.bbands = dict(reversed(fs.params.groups.bands.bbands)) if fs.params.groups.bands is not None else {}
        """Period → multiplier of the bands group's Bollinger bands: their middle band is the SMA of
        close of that period, to the bit (TA-Lib computes it with its SMA), so the trend group takes
        its SMA from the same call (:func:`nodes.features.trend.compute`)."""

    def via(self, out: np.ndarray) -> np.ndarray:
        """Where to put an intermediate result that the next step turns into ``out``: ``out`` itself
        over many rows (the step then works in place, on memory still in the CPU's cache), the
        scratch array for a few (an in-place ufunc checks for overlap, which dominates on one row)."""
        return out if self.n > 64 else self.scratch

    def col(self, name: str) -> np.ndarray:
        """The output column of feature ``name`` (the rows), to be written in place."""
        return self._cols[self._taken.setdefault(name, self._index[name])]

    def rows(self, x: np.ndarray) -> np.ndarray:
        """A span array's values at the rows."""
        return x[self.lo : self.hi]

    def lag(self, x: np.ndarray, k: int) -> np.ndarray:
        """``x`` ``k`` bars before each row (a local look-back; NaN where that is before the row's window)."""
        if k <= self.depth:
            return x[self.lo - k : self.hi - k]
        got = np.full(self.n, np.nan)
        for start, a, b in self.segments:
            first = max(a, start + k)
            if first < b:
                got[first - self.lo : b - self.lo] = x[first - k : b - k]
        return got

    def local(self, fn: Callable[..., Any], inputs: Sequence[np.ndarray], *args: Any, lookback: int) -> Any:
        """``fn`` over the inputs from ``lookback`` bars before the first row: its value at the rows
        (over each segment's window when a window is shorter than that)."""
        if lookback > self.depth:
            got = self.running(fn, inputs, *args, out=None)
            return got if len(got) > 1 else got[0]
        got = fn(*[x[self.lo - lookback : self.hi] for x in inputs], *args)
        return tuple(o[lookback:] for o in got) if isinstance(got, (list, tuple)) else got[lookback:]

    def running(
        self, fn: Callable[..., Any], inputs: Sequence[np.ndarray], *args: Any, lead: int = 0, lags: Sequence[int] = (0,),
        lagged: Sequence[int] | None = None, out: Sequence[np.ndarray] | None = None, over: float | np.ndarray | None = None,
        share: bool = False,
    ) -> tuple[np.ndarray, ...]:  # fmt: skip
        """``fn`` over each segment's window, its outputs at the segment's rows and, for each of
        ``lags``, that many bars earlier in the same window: the arrays (into ``out`` when given),
        output by output and lag by lag, divided by ``over`` when given (a number or the rows' array).
        ``lagged``: the outputs given every lag (default: all), the others only the first.
        ``share``: the same call made again (same function, inputs and parameters, the same or fewer
        outputs and lags) returns these arrays instead of computing them again; they must then not be
        written to.

        ``lead``: the inputs' first ``lead`` values of any window are undefined (NaN) by construction
        (a lagged difference): the window is passed from its ``lead``-th bar, which is where TA-Lib
        starts on such a window (its first bar with every input defined)."""
        if self._whole and not share and lags == (0,) and lead < self.lo:  # a streaming update: the lean path
            got = fn(*inputs, *args) if lead == 0 else fn(*[x[lead:] for x in inputs], *args)
            i = self.lo - lead
            rows = tuple(o[i:] for o in got) if type(got) is tuple else (got[i:],)
            if out is None:
                return rows if over is None else tuple(r / over for r in rows)
            for dst, r in zip(out, rows):
                if over is None:
                    dst[:] = r
                else:
                    np.divide(r, over, out=dst)
            return tuple(out)
        lags = tuple(lags)
        cached = share and out is None and over is None
        if cached:
            key = (fn, *map(id, inputs), args, lead)
            hit = self._cache.get(key)
            if hit is not None:
                kept, arrays = hit[1], hit[2]
                wanted = _pairs(1 + max(o for o, _ in kept), lags, lagged)
                if set(wanted) <= set(kept):
                    return tuple(arrays[kept.index(pair)] for pair in wanted)
        if self._single:
            got, pairs = self._running_one(fn, inputs, args, lead, lags, lagged, out, over)
            if cached:
                self._cache[key] = (inputs, pairs, got)
            return got
        picks, plain = self._plan(lead, lags)
        calls = map(fn, *[self._windows(x, lead) for x in inputs], *map(repeat, args))
        first = next(calls)
        width = len(first) if type(first) is tuple else 1
        pairs = _pairs(width, lags, lagged)
        results = list(out) if out is not None else [np.empty(self.n) for _ in pairs]
        calls = chain((first,), calls)
        if plain and lagged is None and width == 1 and len(lags) == 1:
            (dst,) = results
            for got, ((src, rows),) in zip(calls, picks):
                dst[rows] = got[src]
        elif plain and lagged is None and width == 1 and len(lags) == 2:
            d0, d1 = results
            for got, ((s0, rows), (s1, _)) in zip(calls, picks):
                d0[rows] = got[s0]
                d1[rows] = got[s1]
        elif plain and lagged is None and len(lags) == 1:
            for got, ((src, rows),) in zip(calls, picks):
                for dst, o in zip(results, got):
                    dst[rows] = o[src]
        else:
            jobs = [(dst, o, lags.index(lag)) for dst, (o, lag) in zip(results, pairs)]
            for got, pick in zip(calls, picks):
                outputs = got if width > 1 else (got,)
                for dst, o, j in jobs:
                    src, rows = pick[j]
                    if type(src) is slice:
                        dst[rows] = outputs[o][src]
                    else:
                        _nan_led(dst[rows], outputs[o], src)
        if over is not None:
            for r in results:
                r /= over
        elif cached:
            self._cache[key] = (inputs, pairs, tuple(results))
        return tuple(results)

    def _windows(self, x: np.ndarray, lead: int) -> list[np.ndarray]:
        """``x`` over each segment's window, from its ``lead``-th bar."""
        got = self._views.get((id(x), lead))
        if got is None:
            start, _, b = self._segment_bounds()
            got = self._views[(id(x), lead)] = (x, list(map(x.__getitem__, map(slice, np.minimum(start + lead, b).tolist(), b.tolist()))))
        return got[1]

    def _segment_bounds(self) -> np.ndarray:
        if self._bounds is None:
            self._bounds = np.array(self.segments, dtype=np.int64).T.reshape(3, -1)
        return self._bounds

    def _plan(self, lead: int, lags: tuple[int, ...]) -> tuple[list[tuple[tuple[slice | int, slice], ...]], bool]:
        """Per segment and lag, the slice of the window's outputs taken and the rows' slice it goes to
        (an int, below 0, when the rows start too close to the window's start); whether every one is a slice."""
        plan = self._plans.get((lead, lags))
        if plan is None:
            start, a, b = self._segment_bounds()
            rows = list(map(slice, (a - self.lo).tolist(), (b - self.lo).tolist()))
            first = a - np.minimum(start + lead, b)
            per_lag = []
            for lag in lags:
                i = (first - lag).tolist()
                stop = (first - lag + b - a).tolist()
                per_lag.append(list(zip([slice(p, q) if p >= 0 else p for p, q in zip(i, stop)] if min(i) < 0 else map(slice, i, stop), rows)))
            plan = self._plans[(lead, lags)] = (list(zip(*per_lag)), int(first.min()) >= max(lags))
        return plan

    def _running_one(
        self, fn: Callable[..., Any], inputs: Sequence[np.ndarray], args: tuple[Any, ...], lead: int, lags: tuple[int, ...],
        lagged: Sequence[int] | None, out: Sequence[np.ndarray] | None, over: float | np.ndarray | None,
    ) -> tuple[tuple[np.ndarray, ...], list[tuple[int, int]]]:  # fmt: skip
        """:meth:`running` of a single segment (a streaming update): the rows' arrays are views of the
        window's outputs; and which (output, lag) each is."""
        start, a, b = self.segments[0]
        w = min(start + lead, b)
        got = fn(*inputs, *args) if w == 0 and b == len(inputs[0]) else fn(*[x[w:b] for x in inputs], *args)
        if type(got) is not tuple:
            got = (got,)
        pairs = _pairs(len(got), lags, lagged)
        m, rows = b - a, []
        for o, lag in pairs:
            i = a - w - lag
            if i >= 0:
                rows.append(got[o][i : i + m])
            else:
                rows.append(np.empty(m))
                _nan_led(rows[-1], got[o], i)
        if out is not None:
            for dst, r in zip(out, rows):
                if over is None:
                    dst[:] = r
                else:
                    np.divide(r, over, out=dst)
            return tuple(out), pairs
        if over is not None:
            return tuple(r / over for r in rows), pairs
        return tuple(rows), pairs

    def phased(
        self, fn: Callable[..., Any], inputs: Sequence[np.ndarray], *args: Any, period: int, lookback: int, out: np.ndarray, over: float | None = None
    ) -> None:  # fmt: skip
        """``fn`` (a circular buffer of ``period`` slots counted from the window's first bar) at the
        rows, into ``out`` (divided by ``over``): run per segment from the latest bar ``period`` × k
        after the window's start that leaves ``lookback`` bars before the segment's first row."""
        lo = self.lo
        for start, a, b in self.segments:
            w = start + period * ((a - lookback - start) // period) if a - lookback >= start else start
            out[a - lo : b - lo] = fn(*[x[w:b] for x in inputs], *args)[a - w :]
        if over is not None:
            out /= over

    def windowed(self, fn: Callable[[Bars], np.ndarray], out: np.ndarray) -> None:
        """A function of a whole window's bars (the checks' planted features), per segment."""
        lo = self.lo
        for start, a, b in self.segments:
            out[a - lo : b - lo] = fn(self.bars.slice(start, b))[a - start :]

    def narrow(self, finite: np.ndarray | None) -> None:
        """Clear ``finite`` where a column written since the last call is NaN or infinite (called after
        each group, while its columns are still in the CPU's cache)."""
        if finite is None:
            return
        cols = list(self._taken.values())[self._checked :]
        self._checked += len(cols)
        if not cols:
            return
        first, last = min(cols), max(cols)
        block = self._cols[first : last + 1] if last - first + 1 == len(cols) else self._cols[cols]
        if all_finite(block):
            return
        scratch = np.empty(self.n, dtype=bool)
        for j in cols:
            finite &= np.isfinite(self._cols[j], out=scratch)

    def check(self, names: Sequence[str]) -> None:
        """Every feature's column was written."""
        if len(self._taken) != len(names):
            missing = sorted(set(names) - set(self._taken)) or sorted(set(self._taken) - set(names))
            raise AssertionError(f"kernel and feature names disagree: {missing}")


def _pairs(width: int, lags: tuple[int, ...], lagged: Sequence[int] | None) -> list[tuple[int, int]]:
    """(output, lag) of each array :meth:`Rows.running` gives, in order."""
    return [(o, lag) for o in range(width) for lag in (lags if lagged is None or o in lagged else lags[:1])]


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite, by their sum (one read, no write): a NaN or an infinity makes the
    sum NaN or infinite, and so does an overflow of finite values (a false "no", which only sends the
    caller to its exact check)."""
    if not values.size:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(values, axis=None)))


def _nan_led(dst: np.ndarray, src: np.ndarray, i: int) -> None:
    """dst = src[i : i + len(dst)] with i < 0: NaN before ``src[0]`` (rows too close to their window's start)."""
    k = min(-i, len(dst))
    dst[:k] = np.nan
    dst[k:] = src[: len(dst) - k]


def compute(
    fs: ResolvedFeatureSet, bars: Bars, basket: np.ndarray, gold: np.ndarray, segments: Sequence[Segment], out: np.ndarray,
    finite: np.ndarray | None = None,
) -> None:  # fmt: skip
    """Every kernel feature of the segments' rows into ``out`` (rows × at least the kernel's columns,
    in :attr:`ResolvedFeatureSet.kernel_names` order; a column-major matrix keeps each column contiguous).
    ``finite`` (one flag per row), when given, is cleared where a kernel value is NaN or infinite."""
    x = Rows(fs, bars, basket, gold, segments, out)
    groups = fs.params.groups
    if len(out) > 1 and out.strides[0] != out.itemsize:
        raise ValueError("the kernel writes column by column: out must be column-major (order='F')")
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, module in _SIMPLE.items():
            group = getattr(groups, name)
            if group is not None:
                module.compute(x, group)
                x.narrow(finite)
        if groups.crosspair is not None:
            crosspair.compute(x, groups.crosspair)
        for name, fn in fs.extra.items():
            x.windowed(fn, x.col(name))
        x.narrow(finite)
    x.check(fs.kernel_names)


def kernel(fs: ResolvedFeatureSet, bars: Bars, basket: np.ndarray, gold: np.ndarray, last: int | None = None) -> np.ndarray:
    """A (rows, len(fs.kernel_names)) float64 matrix over one window (``bars``), NaN where a feature
    is not defined yet; only its ``last`` rows when given (a streaming update needs one)."""
    n = len(bars)
    t = n - last if last is not None else 0
    out = np.empty((n - t, len(fs.kernel_names)), order="F")
    if n - t:
        compute(fs, bars, basket, gold, [Segment(0, t, n)], out)
    return out
