"""Declaration of the tick aggregator (ticks → OHLCV bars for every timeframe)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.params import Duration, PositiveDuration
from framework.registry import NodeSpec, Port


class TickAggregatorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeframes: list[str] | None = Field(default=None, description="bar timeframes; default: the topology's")
    daily_roll: str = Field(
        default="00:00 UTC",
        description="when daily and weekly bars roll, HH:MM and an IANA zone (FX convention: '17:00 America/New_York')",
    )
    lateness: Duration = Field(default="2s", description="how long a bucket waits for out-of-order ticks after it ends")
    revision_horizon: Duration = Field(
        default="1h",
        description="a tick for a bar already published is revised in (the bar is published again with the next revision "
        "number) when it is at most this far behind the newest tick or the clock; older ones are dead-lettered; 0s: never",
    )
    fill_empty: bool = Field(default=False, description="publish flat zero-volume bars for intervals without ticks")
    close_every: PositiveDuration = Field(default="1s", description="how often the clock closes buckets of quiet symbols")
    source: str = Field(default="aggregator", description="the bars' source field")

    @field_validator("daily_roll")
    @classmethod
    def _roll(cls, value: str) -> str:
        from nodes.marketdata.timeframes import DailyRoll

        DailyRoll.parse(value)
        return value

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, value: list[str] | None) -> list[str] | None:
        from nodes.marketdata.timeframes import Timeframe

        for name in value or []:
            Timeframe.parse(name)
        return value


SPEC = NodeSpec(
    name="tick_aggregator",
    factory="nodes.tick_aggregator.node:TickAggregator",
    description="Ticks to OHLCV bars (bid OHLC, tick count, spread statistics) for every timeframe, published as each bar closes.",
    params=TickAggregatorParams,
    inputs={"ticks": Port("tick.v1", "quotes, in any order within the lateness window; later ones revise their bars")},
    outputs={"bars": Port("bar.v1", "one bar per symbol, timeframe and closed bucket, and its revisions (revision > 0)")},
    role="transform",
)
