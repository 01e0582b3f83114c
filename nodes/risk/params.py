"""The risk limits: the ``risk_gate`` node's params, validated when the topology loads (lint FX102).

Money limits are in the account currency (``account.currency`` of the topology); shares are
fractions (0.01 = 1 %). Kept light (pydantic and framework imports only): the spec imports it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framework.params import PositiveDuration

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_TIMEFRAME = re.compile(r"^[1-9][0-9]*(m|h|d|w)$")
IMPACTS = ("low", "medium", "high")


def _per_symbol(value: dict[str, float], what: str) -> dict[str, float]:
    bad = [k for k, v in value.items() if not v > 0]
    if bad:
        raise ValueError(f"{what} must be positive: {', '.join(bad)}")
    if "default" not in value:
        raise ValueError(f"{what} needs a 'default' entry (the limit of every symbol not named)")
    return value


class RiskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # sizing
    risk_per_trade: float = Field(default=0.01, gt=0, le=0.2, description="share of equity lost if the stop is hit")
    fixed_lots: float | None = Field(default=None, gt=0, description="a fixed size instead of risk-based sizing (reference backtests)")
    atr_period: int = Field(default=14, ge=1, le=500, description="ATR periods (TA-Lib's ATR: Wilder smoothing)")
    atr_timeframe: str | None = Field(default=None, description="bars the ATR is computed on; none: the signal's timeframe")
    stop_atr: float | None = Field(default=2.0, gt=0, description="stop-loss distance in ATRs; none: no stop (fixed_lots only)")
    take_profit_atr: float | None = Field(default=3.0, gt=0, description="take-profit distance in ATRs; none: no take profit")
    min_stop_pips: dict[str, float] = Field(
        default_factory=lambda: {"default": 10.0, "XAUUSD": 300.0},
        description="the narrowest stop (the ATR of a quiet minute is a fraction of a pip); the take profit keeps its ratio",
    )
    atr_warmup: int = Field(default=100, ge=0, description="bars per symbol and timeframe read from historical_aggregates at start (0: none)")
    pyramiding: bool = Field(default=False, description="a signal on the side already held adds to it (else: rejected)")
    min_confidence: float = Field(default=0.0, ge=0, le=1, description="signals less confident than this open nothing")
    # exposure
    max_symbol_exposure: dict[str, float] = Field(
        default_factory=lambda: {"default": 1_000_000.0}, description="notional per symbol, account currency; 'default' and per symbol"
    )
    max_currency_exposure: float = Field(default=2_000_000.0, gt=0, description="net exposure per currency (account currency)")
    max_open_positions: int = Field(default=6, ge=1, description="symbols with an open or pending position")
    max_leverage: float = Field(default=10.0, gt=0, description="gross notional over equity")
    # losses
    max_daily_loss: float = Field(default=0.03, gt=0, lt=1, description="fall of equity since the day started, as a share of it")
    max_drawdown: float = Field(default=0.10, gt=0, lt=1, description="fall of equity from its peak, as a share of the peak")
    on_daily_loss: Literal["reducing", "halted"] = Field(default="reducing", description="state a daily-loss breach sets (until the next day)")
    on_drawdown: Literal["reducing", "halted"] = Field(default="halted", description="state a drawdown breach sets (until `fxrun risk resume`)")
    day_start: str = Field(default="00:00", description="UTC time the trading day starts (daily loss resets)")
    # market
    max_spread_pips: dict[str, float] = Field(
        default_factory=lambda: {"default": 3.0, "XAUUSD": 60.0}, description="widest quote a position opens on; 'default' and per symbol"
    )
    allow_unknown_spread: bool = Field(default=False, description="open on a price from a bar that has no spread (bar-only backtests)")
    max_quote_age: PositiveDuration = Field(default="2m", description="a price older than this is stale: nothing opens on it")
    quote_history: PositiveDuration = Field(
        default="5m",
        description="recent quotes kept per symbol: a signal is judged on the prices of its own time, which live delivery may "
        "have overtaken by the time it arrives (a signal older than this finds no price and opens nothing)",
    )
    calendar_impacts: list[Literal["low", "medium", "high"]] = Field(default_factory=lambda: ["high"], description="releases that block")
    calendar_before: PositiveDuration = Field(default="15m", description="no new positions this long before a release of the pair's currencies")
    calendar_after: PositiveDuration = Field(default="15m", description="... nor this long after it")
    # signals
    default_ttl: PositiveDuration = Field(default="1m", description="time to live of a signal that carries no ttl_ms")
    max_clock_skew: PositiveDuration = Field(default="5s", description="a signal stamped further in the future is refused")
    throttle_orders: int = Field(default=10, ge=1, description="approvals allowed per throttle_window (then rejected)")
    throttle_window: PositiveDuration = Field(default="1m")
    dedup_window: PositiveDuration = Field(default="7d", description="how long signal ids are remembered (one decision per id)")
    # state
    pending_timeout: PositiveDuration = Field(
        default="10m",
        description="an approval with no order event or fill for this long (event time) stops counting as pending exposure "
        "(alerted): one that never became an order, or an order stuck open, must not block new positions forever",
    )
    reconcile: Literal["broker", "none"] = Field(
        default="broker",
        description="broker: ask the broker's state (broker.query) before the first decision; none: start flat at account.balance",
    )
    reconcile_retry: PositiveDuration = Field(default="5s", description="how often an unanswered reconciliation is asked again")
    reconcile_timeout: PositiveDuration = Field(default="2s")
    state_file: bool = Field(
        default=True, description="keep the trading state of record and the verb's mailbox in the service's data directory"
    )
    alert_cooldown: PositiveDuration = Field(default="5m", description="at most one alert per type and symbol this often")

    @field_validator("max_symbol_exposure")
    @classmethod
    def _exposure(cls, value: dict[str, float]) -> dict[str, float]:
        return _per_symbol(value, "max_symbol_exposure")

    @field_validator("min_stop_pips")
    @classmethod
    def _min_stop(cls, value: dict[str, float]) -> dict[str, float]:
        return _per_symbol(value, "min_stop_pips")

    @field_validator("max_spread_pips")
    @classmethod
    def _spread(cls, value: dict[str, float]) -> dict[str, float]:
        return _per_symbol(value, "max_spread_pips")

    @field_validator("day_start")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a UTC time of day (HH:MM, e.g. 00:00 or 22:00)")
        return value

    @field_validator("atr_timeframe")
    @classmethod
    def _timeframe(cls, value: str | None) -> str | None:
        if value is not None and not _TIMEFRAME.match(value):
            raise ValueError(f"{value!r} is not a timeframe (a count and m, h, d or w: 1h, 4h, 1d)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RiskParams:
        if not self.calendar_impacts:
            raise ValueError("calendar_impacts is empty: list the impacts that block (e.g. [high])")
        if self.stop_atr is None and self.fixed_lots is None:
            raise ValueError("stop_atr is none: risk-based sizing needs a stop distance (or give fixed_lots)")
        return self

    def day_start_ms(self) -> int:
        hours, minutes = self.day_start.split(":")
        return (int(hours) * 60 + int(minutes)) * 60_000

    def symbol_limit(self, table: dict[str, float], symbol: str) -> float:
        return table.get(symbol, table["default"])
