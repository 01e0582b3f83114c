"""Durations written the way people write them in YAML: ``500ms``, ``30s``, ``5m``, ``3d``, ``7y``."""

from __future__ import annotations

import re

_UNITS_MS = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*$")
FOREVER = "forever"
_SPELLED = ("d", "h", "m", "s")


def parse_ms(text: str) -> int | None:
    """Milliseconds in ``text``; ``None`` for ``forever``. Raises ValueError with the accepted forms."""
    if text.strip().lower() == FOREVER:
        return None
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 30s, 5m, 1h, 3d, 2w, 7y or 'forever')")
    return int(float(match.group(1)) * _UNITS_MS[match.group(2)])


def parse_seconds(text: str | float | int) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    ms = parse_ms(text)
    if ms is None:
        raise ValueError("'forever' is not allowed here")
    return ms / 1000.0


def canonical(text: str) -> str:
    """The one spelling of the duration ``text`` means: its milliseconds in the largest of ``d``, ``h``, ``m``, ``s``
    that holds them whole, else ``ms`` (``60m``, ``3600s`` and ``1.0h`` are ``1h``; ``1w`` is ``7d``; ``Forever`` is ``forever``).

    Two texts have one canonical form exactly when :func:`parse_ms` reads them alike, so the configuration hash
    (:mod:`framework.confighash`) takes this and not the text."""
    ms = parse_ms(text)
    if ms is None:
        return FOREVER
    for unit in _SPELLED:
        if ms and ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"
