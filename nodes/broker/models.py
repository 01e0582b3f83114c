"""The paper broker's cost and fill models, as params: spread, slippage, commission, swap, partial fills.

Each is a small pydantic model (validated with the service's params, lint FX102) with the method
that applies it in exact ``Decimal``. Points are the instrument's quote step (10**-digits):
EURUSD 0.00001, USDJPY 0.001, XAUUSD 0.01.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.durations import parse_ms
from framework.params import Duration, PositiveDuration
from nodes.trading.instruments import Rules, dec

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _per_symbol(table: dict[str, float], symbol: str) -> Decimal:
    return dec(table.get(symbol, table.get("default", 0.0)))


class SpreadModel(_Model):
    source: Literal["quote", "fixed"] = Field(
        default="quote",
        description="quote: the tick's own bid/ask (a bar's spread_mean); fixed: ask = bid + points",
    )
    points: dict[str, float] = Field(
        default_factory=lambda: {"default": 0.0},
        description="the fixed spread in points per symbol ('default' for the others); also used for bars without a spread",
    )

    def ask(self, rules: Rules, bid: Decimal, quoted_ask: Decimal | None) -> Decimal:
        if self.source == "quote" and quoted_ask is not None:
            return quoted_ask
        return bid + _per_symbol(self.points, rules.symbol) * rules.tick


class SlippageModel(_Model):
    points: float = Field(default=0.0, ge=0, description="adverse slippage of every fill, in points")
    per_lot: float = Field(default=0.0, ge=0, description="further points per lot filled (market impact)")

    def price(self, rules: Rules, side: str, price: Decimal, lots: Decimal) -> Decimal:
        """The fill price after slippage: worse for the trader, on the instrument's tick."""
        points = dec(self.points) + dec(self.per_lot) * lots
        slip = rules.price(points * rules.tick)
        return price + slip if side == "buy" else price - slip


class CommissionModel(_Model):
    per_lot: float = Field(default=0.0, ge=0, description="account currency per lot, charged on every deal")
    per_million: float = Field(default=0.0, ge=0, description="account currency per million of notional (in the account currency)")

    def amount(self, lots: Decimal, notional: Decimal) -> Decimal:
        """Unbooked commission of a deal of ``lots`` worth ``notional`` in the account currency."""
        return dec(self.per_lot) * lots + dec(self.per_million) * notional / Decimal(1_000_000)


class SwapRates(_Model):
    long: float = Field(default=0.0, description="points per lot per night held long; negative is charged")
    short: float = Field(default=0.0, description="points per lot per night held short; negative is charged")


class SwapModel(_Model):
    rates: dict[str, SwapRates] = Field(default_factory=dict, description="per symbol; 'default' for the others")
    roll: str = Field(default="22:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="UTC time of the daily roll")
    triple: Literal["monday", "tuesday", "wednesday", "thursday", "friday"] = Field(
        default="wednesday", description="the trading day whose roll counts three nights (the weekend)"
    )

    @property
    def roll_ms(self) -> int:
        hours, minutes = self.roll.split(":")
        return (int(hours) * 60 + int(minutes)) * 60_000

    def nights(self, roll_ts: int) -> int:
        """Nights charged at the roll at ``roll_ts``: 1 for the end of a weekday, 3 for ``triple``, 0 at weekends.

        The roll ends the trading day in which its instant's previous millisecond falls, so a
        22:00 roll on Wednesday and a 00:00 roll on Thursday both end Wednesday."""
        day = WEEKDAYS[((roll_ts - 1) // 86_400_000 + 3) % 7]  # 1970-01-01 was a Thursday
        if day in ("saturday", "sunday"):
            return 0
        return 3 if day == self.triple else 1

    def rolls(self, after_ms: int, until_ms: int) -> list[int]:
        """Roll instants in ``(after_ms, until_ms]``."""
        day = 86_400_000
        first = (after_ms - self.roll_ms) // day * day + self.roll_ms + day
        return list(range(first, until_ms + 1, day)) if first <= until_ms else []

    def points(self, symbol: str, long: bool) -> Decimal:
        rates = self.rates.get(symbol) or self.rates.get("default")
        if rates is None:
            return Decimal(0)
        return dec(rates.long if long else rates.short)


class PartialFills(_Model):
    max_lots: float = Field(
        gt=0, description="at most this many lots fill on one price (down to the lot step, at least the minimum lot)"
    )
    rest: Literal["next", "cancel"] = Field(
        default="next",
        description="next: the rest fills on the next prices; cancel: the rest is cancelled at once, as MT5 answers an "
        "IOC order it could fill only in part (10010, done partially: the order ends cancelled, its filled part kept)",
    )


class PaperParams(_Model):
    fill_on: Literal["tick", "bar_open"] = Field(
        default="tick",
        description="tick: a market order fills at the bid/ask of the first tick after its time; "
        "bar_open: at the open of the first bar (of bar_timeframe) that starts at or after its time",
    )
    bar_timeframe: str = Field(default="1m", description="the bars that drive fills and marks with fill_on: bar_open")
    spread: SpreadModel = Field(default_factory=SpreadModel)
    slippage: SlippageModel = Field(default_factory=SlippageModel)
    commission: CommissionModel = Field(default_factory=CommissionModel)
    swap: SwapModel = Field(default_factory=SwapModel)
    partial_fills: PartialFills | None = Field(default=None, description="off unless set")
    max_quote_age: PositiveDuration = Field(
        default="10m", description="an order for a symbol with no price this recent is refused: market closed (10018)"
    )
    history: Duration = Field(default="30d", description="deals are kept this long (market time) for queries")

    @field_validator("bar_timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        from framework.timeframes import parse_timeframe

        parse_timeframe(value)
        return value

    @property
    def max_quote_age_ms(self) -> int:
        return parse_ms(self.max_quote_age) or 0

    @property
    def history_ms(self) -> int | None:
        return parse_ms(self.history)
