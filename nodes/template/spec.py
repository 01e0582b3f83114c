"""The declaration of the template node: what the registry, the lint and the docs read.

Keep this module light (pydantic and framework imports only): lint and docs import every
spec, so heavy dependencies belong in ``node.py``, which loads only when the node runs.
Register the spec in ``pyproject.toml``::

    [project.entry-points."fxflow.nodes"]
    template = "nodes.template.spec:SPEC"
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port


class SpreadWatchParams(BaseModel):
    """Params are validated against this model before anything starts (lint FX102)."""

    model_config = ConfigDict(extra="forbid")

    max_spread_pips: dict[str, float] = Field(
        default_factory=lambda: {"default": 3.0},
        description="alert above this spread, per symbol; 'default' covers the others",
    )
    stats_every: PositiveDuration = Field(default="1m", description="interval of the tick_stats rows (event time)")
    cooldown: PositiveDuration = Field(default="5m", description="at most one wide-spread alert per symbol per cooldown")

    @field_validator("max_spread_pips")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if v <= 0]
        if bad:
            raise ValueError(f"limits must be positive: {', '.join(bad)}")
        return value


SPEC = NodeSpec(
    name="template",
    factory="nodes.template.node:SpreadWatch",
    description="Example plugin: watches quoted spreads, alerts on wide ones and writes per-interval tick statistics.",
    params=SpreadWatchParams,
    inputs={"ticks": Port("tick.v1", "quotes to watch")},
    outputs={
        "alerts": Port("alert.v1", "one alert when a spread exceeds its limit (then a cooldown)"),
        "stats": Port("tick_stats.v1", "quote count and spread statistics per symbol and interval"),
    },
    role="transform",
)
