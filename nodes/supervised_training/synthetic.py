"""Seeded synthetic bars and features with something to learn, for tests and benchmarks.

Each symbol's one-bar log returns follow an AR(1) process (``momentum`` times the previous
return plus noise), so the sign of the next return is weakly predictable from the last ones;
the features (``r1``, ``r3``, ``r6``, ``vol10``) use closes up to their own bar only. The first
rows are a warm-up whose values are null, as a feature service publishes none or nulls there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from framework.timeframes import parse_timeframe


def bars_and_features(
    symbols: Sequence[str],
    *,
    start_ms: int,
    n: int,
    timeframe: str = "1m",
    seed: int = 1,
    momentum: float = 0.3,
    feature_set: str = "synthetic-v1",
    warmup: int = 10,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` bars per symbol from ``start_ms`` (bar.v1 rows) and one features.v1 row per bar."""
    tf = parse_timeframe(timeframe).ms
    bars: list[dict[str, Any]] = []
    features: list[dict[str, Any]] = []
    for s, symbol in enumerate(symbols):
        rng = np.random.default_rng([seed, s])
        noise = rng.normal(0.0, 0.0004, n)
        r = np.zeros(n)
        for i in range(1, n):
            r[i] = momentum * r[i - 1] + noise[i]
        base = 2000.0 if symbol.startswith("XAU") else 1.1
        close = base * np.exp(np.cumsum(r))
        open_ = np.concatenate([[close[0]], close[:-1]])
        wiggle = np.abs(rng.normal(0.0, 0.0002, n)) * close
        high = np.maximum(open_, close) + wiggle
        low = np.minimum(open_, close) - wiggle
        spread = close * 0.00005
        for i in range(n):
            ts = start_ms + i * tf
            bars.append({
                "symbol": symbol, "timeframe": timeframe, "ts": ts, "ts_close": ts + tf,
                "open": round(float(open_[i]), 6), "high": round(float(high[i]), 6), "low": round(float(low[i]), 6),
                "close": round(float(close[i]), 6), "volume": 10.0, "tick_count": 10,
                "spread_mean": round(float(spread[i]), 8), "spread_min": round(float(spread[i]), 8),
                "spread_max": round(float(spread[i]), 8), "source": "synthetic",
            })  # fmt: skip
            ready = i >= max(warmup, 10)
            values = {
                "r1": float(np.log(close[i] / close[i - 1])) if ready else None,
                "r3": float(np.log(close[i] / close[i - 3])) if ready else None,
                "r6": float(np.log(close[i] / close[i - 6])) if ready else None,
                "vol10": float(np.std(np.diff(np.log(close[i - 10 : i + 1])))) if ready else None,
            }
            features.append({"symbol": symbol, "timeframe": timeframe, "ts": ts, "feature_set": feature_set, "values": values})
    order = sorted(range(len(features)), key=lambda k: (features[k]["ts"], features[k]["symbol"]))
    return [bars[k] for k in order], [features[k] for k in order]
