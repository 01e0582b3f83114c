"""A training set from ``features.v1`` rows and bars: X, labels, and each label's window.

Every sample is one feature row (a symbol at a bar start ``t``), labelled from that symbol's
bars (:mod:`nodes.ml.targets`) with prices known by ``cut`` only: the training window ends at
``cut`` for features *and* labels. Rows are refused or dropped, never patched:

- one training set holds one feature-set version (mixed versions are an error naming them);
- a row with a missing, null, NaN or infinite value is dropped (warm-up), so a model never sees one;
- a row without its own bar, or whose label window is not complete by ``cut``, is dropped;
- the cost of a trade on a sample is its bar's mean spread over its close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from framework.durations import parse_ms
from nodes.ml import targets
from nodes.ml.model import ModelError

FEATURE_COLUMNS = ("symbol", "ts", "feature_set", "values")
BAR_COLUMNS = ("symbol", "ts", "ts_close", "close", "high", "low", "spread_mean")


class TrainingDataError(ModelError, ValueError):
    """The rows cannot make a training set (none, mixed feature sets, a horizon longer than the data)."""


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    """-1, 0 (dead zone, timeout), 1."""
    start: np.ndarray
    """Each sample's bar start (ms)."""
    end: np.ndarray
    """When each label is decided (ms)."""
    ret: np.ndarray
    """The return each label window realised (what a trade on the sample earns before costs)."""
    cost: np.ndarray
    symbol: np.ndarray
    features: tuple[str, ...]
    feature_set: str
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def decisive(self) -> np.ndarray:
        """Samples with a label of -1 or 1: what the binary classifiers train and are scored on."""
        return self.y != 0

    def binary(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The decisive samples among ``index``: their X and their labels as 1 (up) / 0 (down)."""
        keep = index[self.y[index] != 0]
        return self.X[keep], (self.y[keep] > 0).astype(np.int64)


def _span(ms: int) -> str:
    days, rest = divmod(int(ms) // 60_000, 1440)
    hours, minutes = divmod(rest, 60)
    return " ".join(p for p in (f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes or not (days or hours) else "") if p)


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _values(raw: Any) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, (str, bytes)):
        return orjson.loads(raw) if raw else {}
    raise TrainingDataError(f"feature values must be a JSON object, not {type(raw).__name__}")


def _last_per_key(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last row of each (symbol, ts), in (ts, symbol) order."""
    latest: dict[tuple[str, int], Mapping[str, Any]] = {}
    for row in rows:
        latest[(str(row["symbol"]), int(row["ts"]))] = row
    return [latest[k] for k in sorted(latest, key=lambda k: (k[1], k[0]))]


def _one_feature_set(rows: list[Mapping[str, Any]], pinned: str | None, model: str) -> tuple[list[Mapping[str, Any]], str]:
    if pinned is not None:
        rows = [r for r in rows if r["feature_set"] == pinned]
        if not rows:
            raise TrainingDataError(f"model {model}: no feature rows of feature set {pinned!r} in the training window")
        return rows, pinned
    versions: dict[str, list[int]] = {}
    for r in rows:
        versions.setdefault(str(r["feature_set"]), []).append(int(r["ts"]))
    if len(versions) > 1:
        parts = [f"{v} ({len(ts)} rows, {_iso(min(ts))} to {_iso(max(ts))})" for v, ts in sorted(versions.items(), key=lambda kv: min(kv[1]))]
        raise TrainingDataError(
            f"model {model}: the training window mixes feature sets {', '.join(parts)}; "
            "train on one version: set the model's feature_set, or wait until the new version is backfilled"
        )
    return rows, next(iter(versions))


def _bars_by_symbol(bars: Sequence[Mapping[str, Any]], cut: int) -> dict[str, tuple[targets.Bars, np.ndarray]]:
    out: dict[str, tuple[targets.Bars, np.ndarray]] = {}
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for bar in _last_per_key(bars):
        if int(bar["ts_close"]) <= cut:
            grouped.setdefault(str(bar["symbol"]), []).append(bar)
    for symbol, rows in grouped.items():
        col = {c: np.array([r[c] for r in rows]) for c in ("ts", "ts_close")}
        prices = {c: np.array([float(r[c]) for r in rows]) for c in ("close", "high", "low")}
        spread = np.array([np.nan if r.get("spread_mean") is None else float(r["spread_mean"]) for r in rows])
        out[symbol] = (
            targets.Bars(col["ts"].astype(np.int64), col["ts_close"].astype(np.int64), prices["close"], prices["high"], prices["low"]),
            spread,
        )
    return out


def label(bars: targets.Bars, t: np.ndarray, target: Mapping[str, Any], tf_ms: int, cut: int) -> targets.Labels:
    """The labels ``target`` (a topology ``target:`` block) gives samples at ``t``."""
    horizon = parse_ms(str(target["horizon"])) or 0
    if target["kind"] == "direction":
        return targets.direction(bars, t, horizon, float(target.get("dead_zone", 0.0)), cut)
    if target["kind"] == "triple_barrier":
        return targets.triple_barrier(
            bars, t, horizon, cut,
            upper=target.get("upper"), lower=target.get("lower"),
            vol_window=target.get("vol_window"), vol_multiple=target.get("vol_multiple"),
            tf_ms=tf_ms, timeout=str(target.get("timeout", "flat")),
        )  # fmt: skip
    raise TrainingDataError(f"unknown target kind {target['kind']!r}")


def build(
    feature_rows: Sequence[Mapping[str, Any]],
    bar_rows: Sequence[Mapping[str, Any]],
    *,
    target: Mapping[str, Any],
    timeframe: str,
    cut: int,
    model: str = "model",
    feature_set: str | None = None,
) -> Dataset:
    """The training set of ``feature_rows`` labelled from ``bar_rows``, with nothing from after ``cut``.

    Where a (symbol, ts) repeats, the last row counts (pass table rows first, newer ones after).
    """
    tf_ms = parse_ms(timeframe) or 0
    rows = [r for r in _last_per_key(feature_rows) if int(r["ts"]) + tf_ms <= cut]
    if not rows:
        raise TrainingDataError(f"model {model}: no feature rows in the training window (up to {_iso(cut)})")
    rows, version = _one_feature_set(rows, feature_set, model)
    parsed = [_values(r["values"]) for r in rows]
    names = tuple(sorted({k for v in parsed for k in v}))
    if not names:
        raise TrainingDataError(f"model {model}: the feature rows hold no values")
    X = np.array([[v.get(n) if isinstance(v.get(n), (int, float)) else np.nan for n in names] for v in parsed], dtype=np.float64)
    complete = np.isfinite(X).all(axis=1)
    dropped = {"incomplete": int((~complete).sum())}
    symbols = np.array([str(r["symbol"]) for r in rows], dtype=object)
    t = np.array([int(r["ts"]) for r in rows], dtype=np.int64)
    bars = _bars_by_symbol(bar_rows, cut)
    n = len(rows)
    y, ret, end, cost = np.zeros(n, dtype=np.int8), np.zeros(n), t.copy(), np.zeros(n)
    valid, has_bar = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for symbol in sorted(set(symbols)):
        idx = np.flatnonzero(symbols == symbol)
        if symbol not in bars:
            continue
        symbol_bars, spread = bars[symbol]
        labels = label(symbol_bars, t[idx], target, tf_ms, cut)
        y[idx], ret[idx], end[idx], valid[idx] = labels.y, labels.ret, labels.end, labels.valid
        pos = np.searchsorted(symbol_bars.ts, t[idx])
        found = (pos < len(symbol_bars.ts)) & (symbol_bars.ts[np.minimum(pos, len(symbol_bars.ts) - 1)] == t[idx])
        has_bar[idx] = found
        known = spread[np.isfinite(spread)]
        fallback = float(np.median(known)) if len(known) else 0.0
        s = np.where(found, spread[np.minimum(pos, len(spread) - 1)], np.nan)
        s = np.where(np.isfinite(s), s, fallback)
        cost[idx] = np.where(found, s / symbol_bars.close[np.minimum(pos, len(spread) - 1)], 0.0)
    dropped["without_bar"] = int((complete & ~has_bar).sum())
    dropped["label_incomplete"] = int((complete & has_bar & ~valid).sum())
    keep = complete & has_bar & valid
    if not keep.any():
        if (complete & has_bar).any():
            spans = {s: int(bars[s][0].ts_close[-1] - bars[s][0].ts[0]) for s in sorted(set(symbols[complete & has_bar]))}
            longest = max(spans.items(), key=lambda kv: kv[1])
            if (parse_ms(str(target["horizon"])) or 0) >= longest[1]:
                raise TrainingDataError(
                    f"model {model}: target horizon {target['horizon']} is longer than the data "
                    f"({longest[0]} {timeframe} bars span {_span(longest[1])} up to {_iso(cut)}): no sample has a complete label"
                )
            raise TrainingDataError(f"model {model}: no feature row's label window ({target['horizon']}) ends by {_iso(cut)}")
        reason = "every row is incomplete (warm-up)" if not complete.any() else "no feature row has its bar"
        raise TrainingDataError(f"model {model}: no usable sample in {n} feature rows: {reason}")
    return Dataset(
        X=X[keep], y=y[keep], start=t[keep], end=end[keep], ret=ret[keep], cost=cost[keep],
        symbol=symbols[keep], features=names, feature_set=version, dropped=dropped,
    )  # fmt: skip


def frame_rows(frame: Any, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a pandas DataFrame (or already a list of dicts) with ``columns``, as plain Python values."""
    if isinstance(frame, list):
        return frame
    if frame is None or len(frame) == 0:
        return []
    data = {c: frame[c].tolist() for c in columns if c in frame}
    n = len(frame)
    return [{c: data[c][i] if c in data else None for c in columns} for i in range(n)]
