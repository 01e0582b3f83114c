"""Training targets declared in the topology, computed from one symbol's bars, with the time each label ends.

A sample is the feature row of the bar starting at ``t`` (its features are known when that bar
closes, at ``t + tf``). Its label looks at prices after that close, up to ``t + tf + horizon``
at most, and records the moment it is decided (``end``): purging removes from training every
sample whose ``[t, end]`` overlaps a test fold. Prices are taken *as of* a time: the close of the
last bar that closed by then, so a gap (a weekend, a quiet minute) is "no change", never a later
price pulled forward. A label is valid only when the data reaches its end (``cut``): nothing is
ever labelled with prices from after the training window.

- **direction**: the forward return over ``horizon``; ``+1`` above ``dead_zone``, ``-1`` below
  ``-dead_zone``, ``0`` inside it.
- **triple barrier**: ``+1`` when the upper barrier (``entry * (1 + upper)``) is touched first,
  ``-1`` for the lower one, ``0`` at the vertical barrier (the horizon; or the sign of the return
  then, with ``timeout="sign"``) and when one bar touches both (which came first is unknowable
  from bars). Barriers are fractions of the entry price, or ``vol_multiple`` times the rolling
  volatility of the past ``vol_window`` one-bar log returns scaled to the horizon (past data only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Labels:
    """One entry per sample: label in {-1, 0, 1}, the return it realised, when it ended, whether it is defined."""

    y: np.ndarray
    ret: np.ndarray
    end: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class Bars:
    """One symbol's bars of one timeframe, sorted by start; ``ts_close`` is each bar's end."""

    ts: np.ndarray
    ts_close: np.ndarray
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray

    def __post_init__(self) -> None:
        if len(self.ts) and np.any(np.diff(self.ts) <= 0):
            raise ValueError("bars must be sorted by ts without repeats")


def _asof_close(bars: Bars, at: np.ndarray) -> np.ndarray:
    """Close of the last bar that closed at or before each time (NaN before the first close)."""
    i = np.searchsorted(bars.ts_close, at, side="right") - 1
    out = np.full(len(at), np.nan)
    ok = i >= 0
    out[ok] = bars.close[i[ok]]
    return out


def _entry(bars: Bars, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each sample's own bar (start == t) and whether it exists."""
    i = np.searchsorted(bars.ts, t)
    i = np.minimum(i, max(len(bars.ts) - 1, 0))
    found = (len(bars.ts) > 0) & (bars.ts[i] == t) if len(bars.ts) else np.zeros(len(t), dtype=bool)
    return i, found


def direction(bars: Bars, t: np.ndarray, horizon_ms: int, dead_zone: float, cut: int) -> Labels:
    """Sign of ``close(t + tf + horizon) / close(t) - 1`` outside ``±dead_zone``; ``end = t + tf + horizon``."""
    t = np.asarray(t, dtype=np.int64)
    i, found = _entry(bars, t)
    start_close = np.where(found, bars.ts_close[i] if len(bars.ts) else 0, 0).astype(np.int64)
    end = start_close + horizon_ms
    entry = np.where(found, bars.close[i] if len(bars.ts) else np.nan, np.nan)
    ret = _asof_close(bars, end) / entry - 1.0
    valid = found & (end <= cut) & np.isfinite(ret)
    y = np.where(ret > dead_zone, 1, np.where(ret < -dead_zone, -1, 0)).astype(np.int8)
    return Labels(np.where(valid, y, 0).astype(np.int8), np.where(valid, ret, 0.0), np.where(found, end, t), valid)


def rolling_volatility(close: np.ndarray, window: int) -> np.ndarray:
    """Std of the last ``window`` one-bar log returns ending at each bar (NaN until there are ``window``)."""
    out = np.full(len(close), np.nan)
    if window < 2 or len(close) <= window:
        return out
    r = np.diff(np.log(close))
    c1 = np.concatenate([[0.0], np.cumsum(r)])
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])
    s1 = c1[window:] - c1[:-window]
    s2 = c2[window:] - c2[:-window]
    var = np.maximum((s2 - s1 * s1 / window) / (window - 1), 0.0)
    out[window:] = np.sqrt(var)
    return out


def triple_barrier(
    bars: Bars,
    t: np.ndarray,
    horizon_ms: int,
    cut: int,
    *,
    upper: float | None = None,
    lower: float | None = None,
    vol_window: int | None = None,
    vol_multiple: float | None = None,
    tf_ms: int | None = None,
    timeout: str = "flat",
) -> Labels:
    """Which barrier the price path after ``t``'s close touches first, within ``horizon_ms``.

    The path is the bars closing in ``(t + tf, t + tf + horizon]``; a touch is ``high >= upper
    barrier`` or ``low <= lower barrier``. ``end`` is the close of the touching bar, or the
    vertical barrier. A label decided by a touch is valid once that bar closed by ``cut``; a
    timeout only once the whole horizon has.
    """
    if timeout not in ("flat", "sign"):
        raise ValueError(f"timeout must be 'flat' or 'sign', not {timeout!r}")
    t = np.asarray(t, dtype=np.int64)
    n = len(t)
    i, found = _entry(bars, t)
    y = np.zeros(n, dtype=np.int8)
    ret = np.zeros(n)
    end = t.copy()
    valid = np.zeros(n, dtype=bool)
    if not len(bars.ts):
        return Labels(y, ret, end, valid)
    if vol_multiple is not None:
        if not vol_window or not tf_ms:
            raise ValueError("volatility barriers need vol_window and tf_ms")
        width = vol_multiple * rolling_volatility(bars.close, vol_window) * np.sqrt(horizon_ms / tf_ms)
        up_w = down_w = width
    else:
        if upper is None or lower is None:
            raise ValueError("triple barrier needs upper and lower, or vol_window and vol_multiple")
        up_w = np.full(len(bars.ts), float(upper))
        down_w = np.full(len(bars.ts), float(lower))
    for k in np.flatnonzero(found):
        b = i[k]
        entry = bars.close[b]
        uw, dw = up_w[b], down_w[b]
        if not (np.isfinite(uw) and np.isfinite(dw)):
            continue
        top, bottom = entry * (1.0 + uw), entry * (1.0 - dw)
        vertical = int(bars.ts_close[b]) + horizon_ms
        last = int(np.searchsorted(bars.ts_close, vertical, side="right"))
        path = slice(b + 1, last)
        hit_up = bars.high[path] >= top
        hit_down = bars.low[path] <= bottom
        touched = np.flatnonzero(hit_up | hit_down)
        if len(touched):
            j = b + 1 + int(touched[0])
            end[k] = bars.ts_close[j]
            if hit_up[touched[0]] and hit_down[touched[0]]:
                ret[k] = bars.close[j] / entry - 1.0
            elif hit_up[touched[0]]:
                y[k], ret[k] = 1, uw
            else:
                y[k], ret[k] = -1, -dw
            valid[k] = end[k] <= cut
        else:
            end[k] = vertical
            valid[k] = vertical <= cut
            ret[k] = _asof_close(bars, np.array([vertical]))[0] / entry - 1.0
            if timeout == "sign":
                y[k] = int(np.sign(ret[k]))
    y[~valid] = 0
    ret[~valid] = 0.0
    return Labels(y, ret, end, valid)
