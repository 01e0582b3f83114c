"""The feature set as the topology declares it: groups, their parameters, names and version.

The set is the service's ``feature_set`` param. Every group is optional and has defaults;
``groups`` left out means the core set (every group with its defaults). The version is
``<name>-<8 hex>``, the start of the sha256 of the set's canonical JSON (every parameter with
its default filled in, the resolved cross-pair basket and :data:`IMPLEMENTATION`), so a change
of any parameter, or of how a value is computed, gives a new version that training records and
inference checks.

This module is imported by the node's spec (lint, docs): pydantic and the standard library only.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framework.durations import parse_ms
from framework.timeframes import parse_timeframe

IMPLEMENTATION = 1
"""Bump when a feature's computation changes without a parameter changing: it is part of the hash."""

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SESSION = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2}) ([A-Za-z_]+(?:/[A-Za-z_+-]+)*)$")


class FeatureSetError(ValueError):
    """A declared set that cannot be computed (unknown feature, timeframe or instrument)."""


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _num(value: float) -> str:
    """``2.0`` → ``2``, ``2.5`` → ``2p5``: a multiplier as it appears in a feature name."""
    text = f"{value:g}"
    return text.replace(".", "p").replace("-", "m")


def _positive(values: Sequence[int], what: str) -> list[int]:
    bad = [v for v in values if v < 1]
    if bad:
        raise ValueError(f"{what} must be positive integers, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} has repeated values: {list(values)}")
    return list(values)


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Returns(_Group):
    horizons: list[int] = Field(default=[1, 2, 3, 5, 10, 20, 60], description="log return over h bars: ret_<h>")
    bar_shape: bool = Field(default=True, description="ret_oc, range_hl, wick_up, wick_down, close_pos of the bar itself")

    @field_validator("horizons")
    @classmethod
    def _h(cls, v: list[int]) -> list[int]:
        return _positive(v, "horizons")

    def names(self) -> list[str]:
        out = [f"ret_{h}" for h in self.horizons]
        if self.bar_shape:
            out += ["ret_oc", "range_hl", "wick_up", "wick_down", "close_pos"]
        return out

    def warmup(self) -> int:
        return max(self.horizons, default=1)


class Volatility(_Group):
    windows: list[int] = Field(default=[10, 20, 60], description="realized volatility windows (bars)")
    estimators: list[Literal["cc", "pk", "gk"]] = Field(
        default=["cc", "pk", "gk"], description="cc: close-to-close, pk: Parkinson, gk: Garman-Klass"
    )
    ratio: tuple[int, int] | None = Field(default=(10, 60), description="rv_ratio_<a>_<b> = rv_cc_<a> / rv_cc_<b>")

    @field_validator("windows")
    @classmethod
    def _w(cls, v: list[int]) -> list[int]:
        return _positive(v, "windows")

    @model_validator(mode="after")
    def _ratio(self) -> Volatility:
        if self.ratio is not None and ("cc" not in self.estimators or any(w not in self.windows for w in self.ratio)):
            raise ValueError(f"ratio {list(self.ratio)} needs estimator cc and both windows in windows {self.windows}")
        return self

    def names(self) -> list[str]:
        out = [f"rv_{e}_{n}" for e in self.estimators for n in self.windows]
        if self.ratio is not None:
            out.append(f"rv_ratio_{self.ratio[0]}_{self.ratio[1]}")
        return out

    def warmup(self) -> int:
        return max(self.windows, default=1) + 1


class Trend(_Group):
    sma: list[int] = Field(default=[10, 20, 50, 100, 200], description="sma_dist_<n> = close / SMA - 1, sma_slope_<n>")
    ema: list[int] = Field(default=[12, 26, 50], description="ema_dist_<n>, ema_slope_<n> (EMA: recursive)")
    slope_lag: int = Field(default=5, ge=1, description="bars over which slopes are taken: MA / MA[-lag] - 1")
    crosses: list[tuple[int, int]] = Field(default=[(20, 50), (50, 200)], description="sma_cross_<a>_<b> = SMA_a / SMA_b - 1")
    macd: tuple[int, int, int] | None = Field(default=(12, 26, 9), description="fast, slow, signal: macd, macd_signal, macd_hist over close")
    adx: int | None = Field(default=14, ge=2, description="adx_<n>, plus_di_<n>, minus_di_<n>, di_diff_<n> (/100)")
    aroon: int | None = Field(default=25, ge=2, description="aroon_up_<n>, aroon_down_<n>, aroon_osc_<n> (/100)")
    linreg: int | None = Field(default=20, ge=2, description="linreg_slope_<n>: slope of the regression line over close")

    @field_validator("sma", "ema")
    @classmethod
    def _p(cls, v: list[int]) -> list[int]:
        return _positive(v, "periods")

    @model_validator(mode="after")
    def _crosses(self) -> Trend:
        for a, b in self.crosses:
            if a not in self.sma or b not in self.sma:
                raise ValueError(f"crosses: ({a}, {b}) needs both periods in sma {self.sma}")
        return self

    def names(self) -> list[str]:
        out = [f"sma_dist_{n}" for n in self.sma] + [f"sma_slope_{n}" for n in self.sma]
        out += [f"ema_dist_{n}" for n in self.ema] + [f"ema_slope_{n}" for n in self.ema]
        out += [f"sma_cross_{a}_{b}" for a, b in self.crosses]
        if self.macd is not None:
            out += ["macd", "macd_signal", "macd_hist"]
        if self.adx is not None:
            out += [f"adx_{self.adx}", f"plus_di_{self.adx}", f"minus_di_{self.adx}", f"di_diff_{self.adx}"]
        if self.aroon is not None:
            out += [f"aroon_up_{self.aroon}", f"aroon_down_{self.aroon}", f"aroon_osc_{self.aroon}"]
        if self.linreg is not None:
            out.append(f"linreg_slope_{self.linreg}")
        return out

    def warmup(self) -> int:
        periods = [*self.sma, *self.ema, self.adx and 3 * self.adx, self.aroon, self.linreg]
        if self.macd is not None:
            periods.append(self.macd[1] + self.macd[2])
        return max([p for p in periods if p], default=1) + self.slope_lag

    def recursive(self) -> bool:
        return bool(self.ema) or self.macd is not None or self.adx is not None


class Momentum(_Group):
    rsi: list[int] = Field(default=[7, 14, 21], description="rsi_<n> (/100; Wilder smoothing: recursive)")
    stoch: tuple[int, int, int] | None = Field(default=(14, 3, 3), description="fastk, slowk, slowd periods: stoch_k, stoch_d (/100)")
    cci: int | None = Field(default=20, ge=2, description="cci_<n> (/100)")
    willr: int | None = Field(default=14, ge=2, description="willr_<n> (/100)")
    roc: list[int] = Field(default=[5, 10, 20], description="roc_<n> = close / close[-n] - 1 (TA-Lib ROCR - 1)")
    mom: list[int] = Field(default=[10], description="mom_<n> = (close - close[-n]) / close")
    ultosc: tuple[int, int, int] | None = Field(default=(7, 14, 28), description="ultosc (/100)")
    cmo: int | None = Field(default=14, ge=2, description="cmo_<n> (/100; recursive)")
    trix: int | None = Field(default=15, ge=2, description="trix_<n> (/100; triple EMA: recursive)")
    bop: bool = Field(default=True, description="balance of power (close - open) / (high - low)")

    @field_validator("rsi", "roc", "mom")
    @classmethod
    def _p(cls, v: list[int]) -> list[int]:
        return _positive(v, "periods")

    def names(self) -> list[str]:
        out = [f"rsi_{n}" for n in self.rsi]
        if self.stoch is not None:
            out += ["stoch_k", "stoch_d"]
        if self.cci is not None:
            out.append(f"cci_{self.cci}")
        if self.willr is not None:
            out.append(f"willr_{self.willr}")
        out += [f"roc_{n}" for n in self.roc] + [f"mom_{n}" for n in self.mom]
        if self.ultosc is not None:
            out.append("ultosc")
        if self.cmo is not None:
            out.append(f"cmo_{self.cmo}")
        if self.trix is not None:
            out.append(f"trix_{self.trix}")
        if self.bop:
            out.append("bop")
        return out

    def warmup(self) -> int:
        periods = [*self.rsi, self.cci, self.willr, *self.roc, *self.mom, self.cmo, self.trix and 3 * self.trix + 1]
        if self.stoch is not None:
            periods.append(sum(self.stoch))
        if self.ultosc is not None:
            periods.append(max(self.ultosc) + 1)
        return max([p for p in periods if p], default=1) + 1

    def recursive(self) -> bool:
        return bool(self.rsi) or self.cmo is not None or self.trix is not None


class Bands(_Group):
    natr: list[int] = Field(default=[7, 14, 28], description="natr_<n> = ATR / close (Wilder smoothing: recursive)")
    trange: bool = Field(default=True, description="trange_rel = true range / close")
    bbands: list[tuple[int, float]] = Field(default=[(20, 2.0), (50, 2.0)], description="Bollinger (n, k): bb_pctb_<n>_<k>, bb_width_<n>_<k>")
    keltner: tuple[int, float] | None = Field(default=(20, 2.0), description="Keltner (n, k) on EMA(close) and EMA(true range): kc_pos_<n>, kc_width_<n>")
    squeeze: bool = Field(default=True, description="squeeze_<n>: Bollinger (n, 2) width over Keltner width (needs keltner)")

    @field_validator("natr")
    @classmethod
    def _p(cls, v: list[int]) -> list[int]:
        return _positive(v, "periods")

    @model_validator(mode="after")
    def _squeeze(self) -> Bands:
        if self.squeeze and self.keltner is None:
            raise ValueError("squeeze needs keltner")
        return self

    def names(self) -> list[str]:
        out = [f"natr_{n}" for n in self.natr]
        if self.trange:
            out.append("trange_rel")
        for n, k in self.bbands:
            out += [f"bb_pctb_{n}_{_num(k)}", f"bb_width_{n}_{_num(k)}"]
        if self.keltner is not None:
            n = self.keltner[0]
            out += [f"kc_pos_{n}", f"kc_width_{n}"]
            if self.squeeze:
                out.append(f"squeeze_{n}")
        return out

    def warmup(self) -> int:
        periods = [*self.natr, *(n for n, _ in self.bbands), self.keltner and self.keltner[0]]
        return max([p for p in periods if p], default=1) + 1

    def recursive(self) -> bool:
        return bool(self.natr) or self.keltner is not None


class Activity(_Group):
    windows: list[int] = Field(default=[20, 60], description="z-score windows of tick counts and spreads")
    spread: bool = Field(default=True, description="spread_rel (bps of close), spread_z_<n>, spread_range, spread_known")

    @field_validator("windows")
    @classmethod
    def _w(cls, v: list[int]) -> list[int]:
        return _positive(v, "windows")

    def names(self) -> list[str]:
        out = [f"ticks_z_{n}" for n in self.windows]
        if self.spread:
            out += ["spread_rel", *(f"spread_z_{n}" for n in self.windows), "spread_range", "spread_known"]
        return out

    def warmup(self) -> int:
        return max(self.windows, default=1)


class CrossPair(_Group):
    basket: list[str] | None = Field(
        default=None, description="USD basket members; null: every instrument of the topology quoted against USD (metals excluded)"
    )
    gold: str = Field(default="XAUUSD", description="the gold instrument")
    horizons: list[int] = Field(default=[1, 5, 20], description="xs_usd_ret_<h>: USD basket log return over h bars")
    corr: list[int] = Field(default=[20, 60], description="xs_gold_corr_<n>, xs_usd_corr_<n>: rolling correlation of returns")

    @field_validator("horizons", "corr")
    @classmethod
    def _p(cls, v: list[int]) -> list[int]:
        return _positive(v, "periods")

    def names(self) -> list[str]:
        return [f"xs_usd_ret_{h}" for h in self.horizons] + [f"xs_gold_corr_{n}" for n in self.corr] + [f"xs_usd_corr_{n}" for n in self.corr]

    def warmup(self) -> int:
        return max([*self.horizons, *(n + 2 for n in self.corr)], default=1)


def _session_spec(text: str) -> tuple[int, int, str]:
    match = _SESSION.match(text)
    if not match:
        raise ValueError(f"session {text!r} is not 'HH:MM-HH:MM Zone/Name' (e.g. '08:00-17:00 Europe/London')")
    h1, m1, h2, m2, zone = match.groups()
    start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
    if not (0 <= start < end <= 24 * 60):
        raise ValueError(f"session {text!r}: start must be before end within one local day")
    return start, end, zone


class Session(_Group):
    cyclical: bool = Field(default=True, description="hour_sin, hour_cos (minute of the UTC day), dow_sin, dow_cos of the bar start")
    sessions: dict[str, str] = Field(
        default={"tokyo": "09:00-18:00 Asia/Tokyo", "london": "08:00-17:00 Europe/London", "new_york": "08:00-17:00 America/New_York"},
        description="session_<name> = 1 when the bar starts within the local hours on a local weekday (DST from the zone)",
    )

    @field_validator("sessions")
    @classmethod
    def _s(cls, v: dict[str, str]) -> dict[str, str]:
        from zoneinfo import ZoneInfo

        for name, text in v.items():
            if not NAME.match(name):
                raise ValueError(f"session name {name!r}: lower-case letters, digits and _")
            zone = _session_spec(text)[2]
            try:
                ZoneInfo(zone)
            except Exception:
                raise ValueError(f"session {name}: unknown time zone {zone!r}") from None
        return v

    def names(self) -> list[str]:
        out = ["hour_sin", "hour_cos", "dow_sin", "dow_cos"] if self.cyclical else []
        return out + [f"session_{name}" for name in self.sessions]

    def warmup(self) -> int:
        return 1


def _duration_ms(value: str, what: str) -> int:
    ms = parse_ms(value)
    if ms is None or ms <= 0:
        raise ValueError(f"{what} must be a positive duration (e.g. 30m, 1d), got {value!r}")
    return ms


class Events(_Group):
    impact: Literal["low", "medium", "high"] = Field(default="high", description="least impact of the events counted")
    horizon: str = Field(
        default="1d",
        description="event_next = minutes to the next event / horizon, capped at 1; an event's schedule is taken as known "
        "this long before it (the weekly calendar is published days ahead)",
    )
    recency: str = Field(default="1d", description="event_last = time since the last event / recency, capped at 1; surprises older than this are 0")
    release_lag: str = Field(default="30m", description="an event's actual is used from event time + release_lag (the calendar poll interval)")
    surprise_cap: float = Field(default=5.0, gt=0, description="event_surprise = (actual - forecast) / max(|forecast|, |previous|), clipped to ±cap, signed for the pair")

    @field_validator("horizon", "recency", "release_lag")
    @classmethod
    def _d(cls, v: str) -> str:
        _duration_ms(v, "duration")
        return v

    def names(self) -> list[str]:
        return ["event_next", "event_last", "event_surprise"]

    def warmup(self) -> int:
        return 1


class MacroSeries(_Group):
    lag: str = Field(description="publication lag: an observation is used from its date + lag, never earlier")
    transform: Literal["level", "diff", "pct_change"] = Field(default="level", description="what is published: the value, or its change over `periods` observations")
    periods: int = Field(default=1, ge=1, description="observations back for diff / pct_change")

    @field_validator("lag")
    @classmethod
    def _lag(cls, v: str) -> str:
        ms = parse_ms(v)
        if ms is None or ms < 0:
            raise ValueError(f"lag must be a duration (e.g. 1d, 45d), got {v!r}")
        return v


_MACRO_DEFAULT: dict[str, dict[str, Any]] = {
    "DFF": {"lag": "5d"},
    "DGS2": {"lag": "5d"},
    "DGS10": {"lag": "5d"},
    "CPIAUCSL": {"lag": "47d", "transform": "pct_change", "periods": 12},
    "UNRATE": {"lag": "40d"},
}


class Macro(_Group):
    series: dict[str, MacroSeries] = Field(
        default_factory=lambda: {k: MacroSeries(**v) for k, v in _MACRO_DEFAULT.items()},
        description="FRED series id → {lag, transform, periods}: macro_<id> as of its release",
    )
    spreads: list[tuple[str, str]] = Field(default=[("DGS10", "DGS2")], description="macro_spread_<a>_<b> = a - b (as of release)")

    @field_validator("series")
    @classmethod
    def _ids(cls, v: dict[str, MacroSeries]) -> dict[str, MacroSeries]:
        bad = [k for k in v if not re.match(r"^[A-Z0-9_]{1,64}$", k)]
        if bad:
            raise ValueError(f"series ids are FRED ids (A-Z, 0-9, _): {bad}")
        return v

    @model_validator(mode="after")
    def _spreads(self) -> Macro:
        for a, b in self.spreads:
            for s in (a, b):
                if s not in self.series:
                    raise ValueError(f"spreads: {s!r} is not one of the series{_suggest(s, self.series)}")
        return self

    def names(self) -> list[str]:
        return [f"macro_{s.lower()}" for s in self.series] + [f"macro_spread_{a.lower()}_{b.lower()}" for a, b in self.spreads]

    def warmup(self) -> int:
        return 1


_CONTEXT_DEFAULT = {"1m": ["15m", "1h"], "5m": ["1h", "4h"], "15m": ["1h", "4h"], "30m": ["4h"], "1h": ["4h"], "4h": [], "1d": []}
"""No 1d context by default: a higher timeframe's row needs ``history`` bars of its own before it is
defined (W = 512 daily bars is two years), and a row with any undefined feature is withheld, so a
1d context would hold back every 30m/1h/4h row of a history shorter than that."""


class Context(_Group):
    timeframes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in _CONTEXT_DEFAULT.items()},
        description="timeframe → its higher timeframes: htf<i>_<feature> is the i-th one's feature of its last bar closed strictly before this bar's close",
    )
    features: list[str] = Field(
        default=["ret_5", "rsi_14", "adx_14", "natr_14", "bb_pctb_20_2", "ema_dist_26"],
        description="kernel features taken from each higher timeframe",
    )

    @field_validator("timeframes")
    @classmethod
    def _tfs(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for tf, highers in v.items():
            low = parse_timeframe(tf).ms
            for h in highers:
                if parse_timeframe(h).ms <= low:
                    raise ValueError(f"context of {tf}: {h} is not a higher timeframe")
        return v

    def names(self, timeframe: str) -> list[str]:
        return [f"htf{i + 1}_{f}" for i in range(len(self.timeframes.get(timeframe, []))) for f in self.features]

    def warmup(self) -> int:
        return 1


KERNEL_GROUPS = ("returns", "volatility", "trend", "momentum", "bands", "activity", "crosspair")
"""Groups computed by the kernel over the bar window (TA-Lib, numpy), in this order."""
JOIN_GROUPS = ("session", "events", "macro", "context")
"""Groups joined on the bar's close, as of that time."""


class Groups(_Group):
    returns: Returns | None = None
    volatility: Volatility | None = None
    trend: Trend | None = None
    momentum: Momentum | None = None
    bands: Bands | None = None
    activity: Activity | None = None
    crosspair: CrossPair | None = None
    session: Session | None = None
    events: Events | None = None
    macro: Macro | None = None
    context: Context | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        known = list(cls.model_fields)
        for name in data:
            if name not in cls.model_fields:
                raise ValueError(f"unknown feature group {name!r}{_suggest(str(name), known)}; groups: {', '.join(known)}")
        # `group: {}` or `group: true` is the group with its defaults; `false` or null leaves it out
        return {k: ({} if v is True else None if v is False else v) for k, v in data.items()}

    @classmethod
    def core(cls) -> Groups:
        return cls(**{name: {} for name in cls.model_fields})

    def active(self) -> dict[str, _Group]:
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}


class FeatureSetParams(BaseModel):
    """``feature_set`` of the feature-engineering service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="core", description="the set's name, the version's prefix")
    history: int = Field(
        default=512, ge=1,
        description="W: bars before a block every row of it is computed from (at least the longest warm-up; enough for "
        "recursive indicators to converge: `fxrun check recursive` tells)",
    )  # fmt: skip
    block: int = Field(
        default=2048, ge=1,
        description="B: rows are computed in blocks of B bars anchored on time (floor(ts / (B * timeframe))); batch costs "
        "about (W + B) / B times the kernel alone, a streaming update computes at most W + B rows",
    )  # fmt: skip
    groups: Groups = Field(default_factory=Groups.core, description="feature groups and their parameters; left out: every group with its defaults")
    drop: list[str] = Field(default=[], description="feature names left out of the set")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v) or len(v) > 40:
            raise ValueError(f"{v!r}: lower-case letters, digits and _, starting with a letter")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSetParams:
        groups = self.groups.active()
        if not groups:
            raise ValueError("the feature set has no group")
        kernel = set(self.kernel_names())
        context = self.groups.context
        if context is not None:
            for f in context.features:
                if f not in kernel:
                    raise ValueError(f"groups.context.features: unknown feature {f!r}{_suggest(f, kernel)} (a kernel feature of this set)")
        every = set(self.kernel_names()) | set(self.join_names_all())
        for f in self.drop:
            if f not in every:
                raise ValueError(f"drop: unknown feature {f!r}{_suggest(f, every)}")
        if self.history < self.warmup():
            raise ValueError(f"history {self.history} is shorter than the longest warm-up of the set ({self.warmup()} bars)")
        return self

    def warmup(self) -> int:
        return max(g.warmup() for g in self.groups.active().values())

    def kernel_names(self) -> list[str]:
        """Every kernel feature, dropped ones included (the kernel computes them; context may use them)."""
        out: list[str] = []
        for name in KERNEL_GROUPS:
            group = getattr(self.groups, name)
            if group is not None:
                out += group.names()
        return out

    def join_names(self, timeframe: str) -> list[str]:
        out: list[str] = []
        for name in JOIN_GROUPS:
            group = getattr(self.groups, name)
            if group is not None:
                out += group.names(timeframe) if name == "context" else group.names()
        return out

    def join_names_all(self) -> list[str]:
        context = self.groups.context
        tfs = list(context.timeframes) if context is not None else []
        seen: dict[str, None] = {}
        for tf in [*tfs, "_"]:
            seen.update(dict.fromkeys(self.join_names(tf)))
        return list(seen)

    def names(self, timeframe: str) -> list[str]:
        """The published features of ``timeframe``'s rows, in order."""
        dropped = set(self.drop)
        return [n for n in (*self.kernel_names(), *self.join_names(timeframe)) if n not in dropped]

    def with_history(self, history: int) -> FeatureSetParams:
        return self.model_copy(update={"history": history})


def basket_members(crosspair: CrossPair, instruments: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(symbol, sign) of the USD basket, sorted: +1 when USD is the base (USDJPY), -1 when the quote (EURUSD)."""
    if crosspair.basket is not None:
        unknown = [s for s in crosspair.basket if s not in instruments]
        if unknown:
            raise FeatureSetError(f"groups.crosspair.basket: {unknown[0]!r} is not an instrument of the topology{_suggest(unknown[0], instruments)}")
        chosen = list(crosspair.basket)
    else:
        chosen = [s for s, inst in instruments.items() if getattr(inst, "kind", "fx") != "metal"]
    out = []
    for symbol in sorted(chosen):
        if symbol[:3] == "USD":
            out.append((symbol, 1))
        elif symbol[3:6] == "USD":
            out.append((symbol, -1))
        elif crosspair.basket is not None:
            raise FeatureSetError(f"groups.crosspair.basket: {symbol} has no USD side")
    return out


class ResolvedFeatureSet:
    """A declared set resolved against the topology (timeframes, instruments): names per timeframe and the version."""

    def __init__(
        self, params: FeatureSetParams, instruments: Mapping[str, Any], timeframes: Sequence[str], extra: Mapping[str, Any] | None = None
    ) -> None:
        self.params = params
        self.extra = dict(extra or {})
        """Extra kernel features, name → function of the window's bars (the checks' planted canaries)."""
        self.timeframes = list(timeframes)
        self.instruments = dict(instruments)
        g = params.groups
        self.basket: list[tuple[str, int]] = []
        self.gold: str | None = None
        if g.crosspair is not None:
            self.basket = basket_members(g.crosspair, instruments)
            if g.crosspair.gold not in instruments:
                raise FeatureSetError(f"groups.crosspair.gold: {g.crosspair.gold!r} is not an instrument of the topology{_suggest(g.crosspair.gold, instruments)}")
            self.gold = g.crosspair.gold
        self.context: dict[str, list[str]] = {}
        if g.context is not None:
            for tf in self.timeframes:
                highers = g.context.timeframes.get(tf, [])
                missing = [h for h in highers if h not in self.timeframes]
                if missing:
                    raise FeatureSetError(
                        f"groups.context.timeframes.{tf}: {missing[0]} is not one of the service's timeframes ({', '.join(self.timeframes)})"
                    )
                self.context[tf] = list(highers)
        self.kernel_names = params.kernel_names() + list(self.extra)
        self.kernel_index = {n: i for i, n in enumerate(self.kernel_names)}
        self.version = f"{params.name}-{self.digest()}"

    def canonical(self) -> dict[str, Any]:
        doc = self.params.model_dump(mode="json")
        doc["implementation"] = IMPLEMENTATION
        doc["resolved"] = {"basket": [list(m) for m in self.basket], "gold": self.gold, "context": self.context}
        if self.extra:
            doc["extra"] = sorted(self.extra)
        return doc

    def digest(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def names(self, timeframe: str) -> list[str]:
        """The published features of ``timeframe``'s rows: the kernel's (extras included) first, then the joined ones."""
        dropped = set(self.params.drop)
        return [n for n in (*self.kernel_names, *self.params.join_names(timeframe)) if n not in dropped]

    @property
    def history(self) -> int:
        return self.params.history

    @property
    def block(self) -> int:
        return self.params.block
