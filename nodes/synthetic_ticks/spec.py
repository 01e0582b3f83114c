"""Declaration of the synthetic tick source."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.durations import parse_ms
from framework.registry import NodeSpec, Port


class SyntheticTicksParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    start: str | None = Field(default=None, description="ISO-8601 UTC start; default: the clock's now")
    duration: str | None = Field(default="2h", description="event time to generate; null: until stopped")
    mean_interval_ms: int = Field(default=2000, ge=1, description="mean time between quotes of one symbol")

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_ms(value)
        return value


SPEC = NodeSpec(
    name="synthetic_ticks",
    factory="nodes.synthetic_ticks.node:SyntheticTicks",
    description="Seeded random-walk quotes with per-instrument prices and spreads; skips the FX weekend.",
    params=SyntheticTicksParams,
    outputs={"ticks": Port("tick.v1", "one quote per event")},
    role="source",
)
