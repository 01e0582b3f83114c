"""One Polygon aggregate (``{"o","h","l","c","v","t",…}``) → one bar.v1 message, or the reason it cannot be."""

from __future__ import annotations

import math
from typing import Any

from nodes.marketdata.timeframes import Buckets

SOURCE = "polygon"
REQUIRED = ("o", "h", "l", "c", "v", "t")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def problem_of(raw: Any, buckets: Buckets) -> str | None:
    """Why ``raw`` is not a usable aggregate of ``buckets``' timeframe, or None."""
    if not isinstance(raw, dict):
        return f"aggregate is a {type(raw).__name__}, not an object"
    missing = [k for k in REQUIRED if k not in raw or raw[k] is None]
    if missing:
        return f"aggregate lacks {', '.join(missing)}"
    bad = [k for k in REQUIRED if not _number(raw[k])]
    if bad:
        return "not a finite number: " + ", ".join(f"{k}={raw[k]!r}" for k in bad)
    o, h, l, c, v, t = (raw[k] for k in REQUIRED)
    if min(o, h, l, c) <= 0:
        return f"non-positive price: o={o} h={h} l={l} c={c}"
    if h < l:
        return f"high {h} < low {l}"
    if not (l <= o <= h and l <= c <= h):
        return f"open/close outside the high-low range: o={o} h={h} l={l} c={c}"
    if v < 0:
        return f"negative volume {v}"
    if t != int(t) or t < 0:
        return f"bad timestamp t={t!r}"
    n = raw.get("n")
    if n is not None and (not _number(n) or n < 0):
        return f"bad transaction count n={n!r}"
    start = buckets.start(int(t))
    if start != t:
        return f"t={int(t)} is not the start of a {buckets.timeframe.name} bucket (that starts at {start})"
    return None


def to_bar(raw: dict[str, Any], symbol: str, buckets: Buckets) -> dict[str, Any]:
    """The bar.v1 message of an aggregate that passed :func:`problem_of`."""
    ts = int(raw["t"])
    n = raw.get("n")
    return {
        "symbol": symbol,
        "timeframe": buckets.timeframe.name,
        "ts": ts,
        "ts_close": buckets.end(ts),
        "open": float(raw["o"]),
        "high": float(raw["h"]),
        "low": float(raw["l"]),
        "close": float(raw["c"]),
        "volume": float(raw["v"]),
        "tick_count": round(n if n is not None else raw["v"]),
        "spread_mean": None,
        "spread_min": None,
        "spread_max": None,
        "source": SOURCE,
        "complete": True,
    }
