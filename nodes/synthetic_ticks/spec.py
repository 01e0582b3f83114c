"""Declaration of the synthetic tick source."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from framework.params import Duration, UtcTime
from framework.registry import NodeSpec, Port


class SyntheticTicksParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    start: UtcTime | None = Field(default=None, description="ISO-8601 UTC start; default: the clock's now")
    duration: Duration | None = Field(default="2h", description="event time to generate; null: until stopped")
    mean_interval_ms: int = Field(default=2000, ge=1, description="mean time between quotes of one symbol")


SPEC = NodeSpec(
    name="synthetic_ticks",
    factory="nodes.synthetic_ticks.node:SyntheticTicks",
    description="Seeded random-walk quotes with per-instrument prices and spreads; skips the FX weekend.",
    params=SyntheticTicksParams,
    outputs={"ticks": Port("tick.v1", "one quote per event")},
    role="source",
)
