"""FRED series as of their release, never as of their observation date.

The collector stores an observation's date as ``ts`` (FRED's ``realtime_start`` is the date of the
latest vintage, not of the first release, so it is not used); a value becomes usable at that date +
the publication lag declared per series (``DFF: 5d`` covers a Friday rate published after a
holiday Monday; ``CPIAUCSL: 47d`` a monthly figure published mid next month), or
when it arrived if that was later (streaming). A row closing at C uses, per series, the last
observation usable strictly before C; before the first one the feature is undefined and the
row waits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from framework.durations import parse_ms
from nodes.features.featureset import Macro

TYPE = "fred_indicators"


class MacroData:
    def __init__(self, params: Macro) -> None:
        self.p = params
        self.lags = {s: parse_ms(spec.lag) or 0 for s, spec in params.series.items()}
        self._obs: dict[str, dict[int, tuple[float, int | None]]] = {s: {} for s in params.series}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}

    def add(self, event: Mapping[str, Any], arrived_ms: int | None = None) -> bool:
        series = event.get("series")
        if event.get("type") != TYPE or series not in self._obs or not isinstance(event.get("ts"), int):
            return False
        value = event.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        obs = self._obs[series]
        ts = int(event["ts"])
        old = obs.get(ts)
        known = arrived_ms if old is None else old[1] if old[0] == float(value) else arrived_ms
        if old != (float(value), known):
            obs[ts] = (float(value), known)
            self._arrays.pop(series, None)
        return True

    def extend(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.add(event)

    def count(self, series: str) -> int:
        return len(self._obs.get(series, ()))

    def _for(self, series: str) -> tuple[np.ndarray, np.ndarray, bool]:
        got = self._arrays.get(series)
        if got is not None:
            return got
        spec = self.p.series[series]
        items = sorted(self._obs[series].items())
        obs_ts = np.array([t for t, _ in items], dtype=np.int64)
        values = np.array([v for _, (v, _) in items], dtype=np.float64)
        usable = obs_ts + self.lags[series]
        arrived = np.array([a if a is not None else -1 for _, (_, a) in items], dtype=np.int64)
        usable = np.maximum(usable, arrived)
        k = spec.periods
        if spec.transform == "level":
            out = values
        else:
            out = np.full(len(values), np.nan)
            if k < len(values):
                out[k:] = values[k:] - values[:-k] if spec.transform == "diff" else values[k:] / values[:-k] - 1.0
        got = (usable, out, bool(np.all(usable[1:] >= usable[:-1])))
        self._arrays[series] = got
        return got

    def value_at(self, series: str, at: np.ndarray) -> np.ndarray:
        usable, values, ordered = self._for(series)
        result = np.full(len(at), np.nan)
        if not len(usable):
            return result
        if ordered:
            j = np.searchsorted(usable, at, side="left") - 1
        else:  # a late arrival made an older observation usable after a newer one: the newest usable wins
            j = np.array([np.flatnonzero(usable < c).max(initial=-1) for c in at], dtype=np.int64)
        ok = j >= 0
        result[ok] = values[j[ok]]
        return result

    def compute(self, at: np.ndarray, out: dict[str, np.ndarray]) -> None:
        cache = {s: self.value_at(s, at) for s in self.p.series}
        for s in self.p.series:
            out[f"macro_{s.lower()}"] = cache[s]
        for a, b in self.p.spreads:
            out[f"macro_spread_{a.lower()}_{b.lower()}"] = cache[a] - cache[b]
