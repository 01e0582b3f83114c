"""Symbol spellings of the feeds, normalised to the topology's (``EURUSD``)."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[/\-_ .]")


def normalize(raw: str) -> str:
    """``EUR/USD``, ``eur-usd``, ``C:EURUSD``, ``C.EUR/USD`` → ``EURUSD``."""
    text = raw.strip().upper()
    for prefix in ("C:", "C.", "CA.", "CAS."):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return _SEPARATORS.sub("", text)


def slashed(symbol: str) -> str:
    """``EURUSD`` → ``EUR/USD`` (Polygon WebSocket subscriptions); six-letter symbols only."""
    if len(symbol) != 6:
        raise ValueError(f"cannot split {symbol!r} into base/quote currencies")
    return f"{symbol[:3]}/{symbol[3:]}"


def polygon_ticker(symbol: str) -> str:
    """``EURUSD`` → ``C:EURUSD`` (Polygon REST)."""
    return f"C:{symbol}"
