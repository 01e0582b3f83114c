"""Shared helpers of the feature tests: instruments, a resolved feature set, a synthetic world, bar feeds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from framework.topology.model import Instrument
from nodes.features.bars import Bars
from nodes.features.engine import History, StreamingEngine
from nodes.features.featureset import FeatureSetParams, ResolvedFeatureSet
from nodes.features.synthetic import SyntheticWorld

TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]


def instruments(symbols: Sequence[str] = ("EURUSD", "USDJPY", "GBPUSD", "XAUUSD")) -> dict[str, Instrument]:
    return {s: Instrument(kind="metal" if s.startswith("XAU") else "fx", pip=0.01 if "JPY" in s or "XAU" in s else 0.0001, digits=3) for s in symbols}


def resolved(params: FeatureSetParams | None = None, symbols: Sequence[str] = ("EURUSD", "USDJPY", "XAUUSD"),
             timeframes: Sequence[str] = TIMEFRAMES, **extra: Any) -> ResolvedFeatureSet:  # fmt: skip
    return ResolvedFeatureSet(params or FeatureSetParams(), instruments(symbols), list(timeframes), extra=extra or None)


def small_params(**update: Any) -> FeatureSetParams:
    """The core groups with a short history and block (W = 64 still covers every warm-up of the
    groups below), so tests run on a few thousand bars."""
    doc: dict[str, Any] = {
        "history": 64,
        "block": 32,
        "groups": {
            "returns": {}, "volatility": {}, "trend": {"sma": [10, 20, 50], "crosses": [[20, 50]]}, "momentum": {}, "bands": {},
            "activity": {}, "crosspair": {}, "session": {}, "events": {}, "macro": {}, "context": {},
        },
    }  # fmt: skip
    doc.update(update)
    return FeatureSetParams.model_validate(doc)


def world(fs: ResolvedFeatureSet, symbols: Sequence[str], bars: int, seed: int = 7) -> SyntheticWorld:
    g = fs.params.groups
    return SyntheticWorld(symbols, fs.timeframes, bars, seed=seed, fred_series=list(g.macro.series) if g.macro else [], with_calendar=g.events is not None)


def bar_values(b: Bars, i: int) -> tuple[float, ...]:
    return (b.open[i], b.high[i], b.low[i], b.close[i], b.ticks[i], b.spread[i], b.spread_min[i], b.spread_max[i])


def feed(w: SyntheticWorld, full: History, after: int, seed: int = 3) -> Iterator[tuple[int, str, Any]]:
    """Everything that becomes known after ``after``, in the order it does: ``(time, "event", event)``
    or ``(time, "bar", (symbol, timeframe, index))``; bars closing at the same instant in random order."""
    rng = np.random.default_rng(seed)
    items: list[tuple[int, int, float, str, Any]] = []
    for known in w.calendar:
        if known.known_at > after:
            items.append((known.known_at, 0, 0.0, "event", known.event))
        elif known.actual_at is not None and known.actual_at > after:
            items.append((known.actual_at, 0, 0.0, "event", known.event))
    for known in w.fred:
        if known.known_at > after:
            items.append((known.known_at, 0, 0.0, "event", known.event))
    for (symbol, tf), b in full.bars.items():
        for i in np.flatnonzero(b.ts_close > after):
            items.append((int(b.ts_close[i]), 1, float(rng.random()), "bar", (symbol, tf, int(i))))
    items.sort(key=lambda x: (x[0], x[1], x[2]))
    for t, _, _, kind, payload in items:
        yield t, kind, payload


def stream(engine: StreamingEngine, w: SyntheticWorld, full: History, after: int, seed: int = 3) -> dict[tuple[str, str, int], np.ndarray]:
    """Feed ``engine`` what follows ``after``; the last values returned for each row."""
    got: dict[tuple[str, str, int], np.ndarray] = {}
    for t, kind, payload in feed(w, full, after, seed):
        if kind == "event":
            engine.add_event(payload, t)
            continue
        symbol, tf, i = payload
        b = full.bars[(symbol, tf)]
        for row in engine.on_bar(symbol, tf, int(b.ts[i]), int(b.ts_close[i]), bar_values(b, i)):
            got[(row.symbol, row.timeframe, row.ts)] = row.values
    return got
