"""Bars of one (symbol, timeframe) as columns, and what a bar must be to enter a window.

Spreads are NaN where the source has none (downloaded bars): the activity group treats them
as unknown. A bar message that fails :func:`parse_bar` is refused with a one-line reason
naming the field, so the node dead-letters it and goes on. :func:`screen_bars` is the same
judgement over a chunk's columns at once, for the rows it can vouch for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from framework.chunk import Chunk

PRICE_FIELDS = ("open", "high", "low", "close")
SPREAD_FIELDS = ("spread_mean", "spread_min", "spread_max")


class BarError(ValueError):
    """A bar that cannot enter a window; the message names the field."""


@dataclass(slots=True)
class Bars:
    """Sorted by ``ts``, one bar per ``ts`` (bucket start); ``ts_close`` is the bucket end."""

    ts: np.ndarray
    ts_close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    ticks: np.ndarray
    spread: np.ndarray
    spread_min: np.ndarray
    spread_max: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> Bars:
        return Bars(*(getattr(self, f.name)[start:stop] for f in fields(self)))

    def take(self, index: np.ndarray) -> Bars:
        return Bars(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def empty(cls) -> Bars:
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(i, i.copy(), *(f.copy() for _ in range(8)))

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> Bars:
        """From a mapping of columns (a DataFrame, a dict of arrays) named as in ``bar.v1``."""

        def floats(name: str) -> np.ndarray:
            col = columns[name]
            values = col.to_numpy(dtype=np.float64, na_value=np.nan) if hasattr(col, "to_numpy") else np.asarray(col, dtype=np.float64)
            return np.ascontiguousarray(values, dtype=np.float64)

        def ints(name: str) -> np.ndarray:
            col = columns[name]
            return np.ascontiguousarray(col.to_numpy() if hasattr(col, "to_numpy") else col, dtype=np.int64)

        return cls(
            ints("ts"), ints("ts_close"), floats("open"), floats("high"), floats("low"), floats("close"),
            floats("tick_count"), floats("spread_mean"), floats("spread_min"), floats("spread_max"),
        )  # fmt: skip

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Bars:
        if not rows:
            return cls.empty()
        cols = {name: [r.get(name) for r in rows] for name in ("ts", "ts_close", *PRICE_FIELDS, "tick_count", *SPREAD_FIELDS)}
        for name in SPREAD_FIELDS:
            cols[name] = [math.nan if v is None else v for v in cols[name]]
        return cls.from_columns(cols)

    def sane(self) -> np.ndarray:
        """Rows a window may take: positive finite prices, low <= open, close <= high, ts < ts_close."""
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(self.open) & np.isfinite(self.high) & np.isfinite(self.low) & np.isfinite(self.close)
            ok &= (self.low > 0) & (self.low <= self.open) & (self.low <= self.close) & (self.high >= self.open) & (self.high >= self.close)
            ok &= self.ts < self.ts_close
            ok &= np.isfinite(self.ticks) & (self.ticks >= 0)
        return ok


def _number(bar: Mapping[str, Any], name: str, *, optional: bool = False) -> float:
    value = bar.get(name)
    if value is None and optional:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BarError(f"field {name}: {value!r} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise BarError(f"field {name}: {value!r} is not finite")
    return value


def parse_bar(bar: Any) -> tuple[str, str, int, int, tuple[float, ...]]:
    """``(symbol, timeframe, ts, ts_close, (open, high, low, close, ticks, spread, spread_min, spread_max))``."""
    if not isinstance(bar, Mapping):
        raise BarError(f"a bar is an object, not a {type(bar).__name__}")
    symbol, timeframe = bar.get("symbol"), bar.get("timeframe")
    if not isinstance(symbol, str) or not symbol:
        raise BarError(f"field symbol: {symbol!r} is not a symbol")
    if not isinstance(timeframe, str) or not timeframe:
        raise BarError(f"field timeframe: {timeframe!r} is not a timeframe")
    ts, ts_close = bar.get("ts"), bar.get("ts_close")
    for name, value in (("ts", ts), ("ts_close", ts_close)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BarError(f"field {name}: {value!r} is not an epoch-ms integer")
    assert isinstance(ts, int) and isinstance(ts_close, int)
    if ts_close <= ts:
        raise BarError(f"field ts_close: {ts_close} is not after ts {ts}")
    o, h, lo, c = (_number(bar, n) for n in PRICE_FIELDS)
    if lo <= 0:
        raise BarError(f"field low: {lo!r} is not a positive price")
    if not (lo <= o <= h and lo <= c <= h):
        raise BarError(f"fields open/high/low/close: {o}, {h}, {lo}, {c} are not a bar (low <= open, close <= high)")
    ticks = _number(bar, "tick_count")
    if ticks < 0:
        raise BarError(f"field tick_count: {ticks!r} is negative")
    spreads = tuple(_number(bar, n, optional=True) for n in SPREAD_FIELDS)
    if any(s < 0 for s in spreads if not math.isnan(s)):
        raise BarError(f"fields spread_*: {spreads} has a negative spread")
    return symbol, timeframe, ts, ts_close, (o, h, lo, c, ticks, *spreads)


@dataclass(frozen=True, slots=True)
class ScreenedBars:
    """A chunk of bar messages as columns, and what :func:`parse_bar` says of each row where that is plain
    from the columns. ``ok``: rows it accepts, with what it returns in the columns (``values``: n × 8, the
    order of :func:`parse_bar`'s tuple). A row not ``ok`` may still be a bar (a column of another type than
    a bar's, an int beyond int64): ask :func:`parse_bar` about it, for its verdict and its reason."""

    ok: np.ndarray
    incomplete: np.ndarray
    """``complete: false``: still forming (whatever else the row holds)."""
    symbol: np.ndarray
    timeframe: np.ndarray
    ts: np.ndarray
    ts_close: np.ndarray
    values: np.ndarray


def screen_bars(chunk: Chunk) -> ScreenedBars:
    """:func:`parse_bar` over a chunk's columns, without a dict or a call per row. Sound, not complete: every
    ``ok`` row is one :func:`parse_bar` accepts, with the same values to the bit (ints become floats as
    ``float()`` rounds them); a row it cannot judge from the columns alone is not ``ok``."""
    n = len(chunk)
    symbol, symbol_ok = _texts(chunk, "symbol", n)
    timeframe, timeframe_ok = _texts(chunk, "timeframe", n)
    ok = symbol_ok & timeframe_ok
    ts, ts_ok = _ints(chunk, "ts", n)
    ts_close, ts_close_ok = _ints(chunk, "ts_close", n)
    ok &= ts_ok & ts_close_ok & (ts_close > ts)
    values = np.empty((n, 8))
    for j, name in enumerate((*PRICE_FIELDS, "tick_count", *SPREAD_FIELDS)):
        ok &= _floats(chunk, name, values[:, j], optional=j > 4)
    o, h, lo, c, ticks = values[:, 0], values[:, 1], values[:, 2], values[:, 3], values[:, 4]
    with np.errstate(invalid="ignore"):
        ok &= (lo > 0) & (lo <= o) & (o <= h) & (lo <= c) & (c <= h) & (ticks >= 0) & ~(values[:, 5:] < 0).any(axis=1)
    return ScreenedBars(ok, _is_false(chunk, "complete", n), symbol, timeframe, ts, ts_close, values)


def _texts(chunk: Chunk, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The column and where it holds a non-empty string."""
    if name not in chunk:
        return np.full(n, None, dtype=object), np.zeros(n, dtype=bool)
    col = chunk[name]
    if col.dtype.kind != "O":
        return col, np.zeros(n, dtype=bool)
    return col, per_value(col, lambda v: isinstance(v, str) and v != "")


def per_value(col: np.ndarray, test: Callable[[Any], bool]) -> np.ndarray:
    """``test`` of each value of an object column, called once per distinct value (a chunk's symbols and
    timeframes are a few values repeated). ``test`` must hold for no value that is not a ``str``: values
    of other types that compare equal (1, 1.0, True) then share a verdict harmlessly."""
    values = col.tolist()
    n = len(values)
    try:
        verdicts = {v: bool(test(v)) for v in set(values)}
    except TypeError:  # an unhashable value (a list, a dict): never a str
        return np.fromiter((isinstance(v, str) and bool(test(v)) for v in values), dtype=bool, count=n)
    if all(verdicts.values()):
        return np.ones(n, dtype=bool)
    if not any(verdicts.values()):
        return np.zeros(n, dtype=bool)
    return np.fromiter(map(verdicts.__getitem__, values), dtype=bool, count=n)


def _ints(chunk: Chunk, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An int64 column and where it holds a value (an int column's missing cells hold 0)."""
    if name not in chunk or chunk[name].dtype.kind != "i":
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    missing, _ = chunk.masks(name)
    return chunk[name].astype(np.int64, copy=False), (np.ones(n, dtype=bool) if missing is None else ~missing)


def _floats(chunk: Chunk, name: str, out: np.ndarray, *, optional: bool) -> np.ndarray:
    """An int or float column as floats into ``out`` (NaN where null or absent), and where it is what
    :func:`_number` accepts: finite (or, ``optional``, null or absent)."""
    if name not in chunk:
        out[:] = math.nan
        return np.full(len(out), optional)
    col = chunk[name]
    if col.dtype.kind == "O" and optional and all(v is None for v in col.tolist()):  # bars without spreads (downloaded)
        out[:] = math.nan
        return np.ones(len(out), dtype=bool)
    if col.dtype.kind not in "iuf":  # bool (True is no number here), object: parse_bar says why
        out[:] = math.nan
        return np.zeros(len(out), dtype=bool)
    out[:] = col
    missing, _ = chunk.masks(name)
    if missing is not None:
        out[missing] = math.nan
    finite = np.isfinite(out)
    return finite | missing if optional and missing is not None else finite


def _is_false(chunk: Chunk, name: str, n: int) -> np.ndarray:
    """Where the field is ``False`` (not null, absent, 0)."""
    if name not in chunk:
        return np.zeros(n, dtype=bool)
    col = chunk[name]
    kind = col.dtype.kind
    if kind == "b":
        missing, _ = chunk.masks(name)
        return ~col if missing is None else ~col & ~missing
    if kind == "O":
        return np.fromiter((v is False for v in col.tolist()), dtype=bool, count=n)
    return np.zeros(n, dtype=bool)
