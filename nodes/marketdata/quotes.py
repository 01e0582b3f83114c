"""The one quote check every tick source runs before publishing.

A quote that fails goes to the dead-letter with the reason this returns; the stream goes on.
"""

from __future__ import annotations

import math
from typing import Any


def quote_problem(
    bid: Any,
    ask: Any,
    ts: int | None = None,
    *,
    now_ms: int | None = None,
    max_age_ms: int | None = None,
    max_future_ms: int = 5_000,
) -> str | None:
    """Why a quote cannot be used, or None if it can.

    Checks: numeric, finite, positive, not crossed (``ask >= bid``; equal is a locked
    market and allowed), and when ``now_ms`` is given not older than ``max_age_ms`` nor
    more than ``max_future_ms`` ahead.
    """
    for name, value in (("bid", bid), ("ask", ask)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} is not a number: {value!r}"
        if not math.isfinite(value):
            return f"{name} is {value}"
        if value <= 0:
            return f"{name} is not positive: {value}"
    if ask < bid:
        return f"crossed quote: ask {ask} < bid {bid}"
    if ts is not None and now_ms is not None:
        if max_age_ms is not None and now_ms - ts > max_age_ms:
            return f"stale quote: {now_ms - ts} ms old (limit {max_age_ms} ms)"
        if ts - now_ms > max_future_ms:
            return f"quote from the future: {ts - now_ms} ms ahead of the clock"
    return None
