"""Declaration of the feature-engineering service: bars in, feature vectors out (``features.v1``).

The feature set is a param (``feature_set``, :mod:`nodes.features.featureset`): a group or a
feature the library does not know is refused when the topology loads, with the file and line
(lint FX102). Light on purpose: pydantic and the feature set's declaration only (no TA-Lib).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.params import Duration
from framework.registry import NodeSpec, Port
from framework.timeframes import parse_timeframe
from nodes.features.featureset import FeatureSetParams

TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class FeatureEngineeringParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature_set: FeatureSetParams = Field(default_factory=FeatureSetParams, description="the declared feature set: groups, their parameters, W and B")
    timeframes: list[str] | None = Field(default=None, description="timeframes to compute; default: the topology's")
    backfill: bool = Field(default=True, description="at start, compute and write the rows ml_features lacks for the stored bars")
    backfill_lookback: Duration | None = Field(default=None, description="backfill only bars this recent (from the newest stored one); null: all")
    bars_table: str | None = Field(
        default="historical_aggregates", pattern=TABLE_NAME,
        description="stored bars read at start (history and warm-up); null: none, the rows warm up on the stream (a backtest: its bars arrive as bars.*)",
    )  # fmt: skip
    calendar_table: str | None = Field(default="external_economic_calendar", pattern=TABLE_NAME, description="economic calendar read at start")
    fred_table: str | None = Field(default="external_fred_indicators", pattern=TABLE_NAME, description="FRED observations read at start")
    features_table: str = Field(default="ml_features", pattern=TABLE_NAME, description="where existing rows are looked up before a backfill")
    publish_chunk: int = Field(default=5000, ge=1, description="rows per publish_many call of a backfill")

    @field_validator("timeframes")
    @classmethod
    def _tfs(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            parse_timeframe(name)
        return value


SPEC = NodeSpec(
    name="feature_engineering",
    factory="nodes.feature_engineering.node:FeatureEngineering",
    description="About 110 ML features per closed bar: one causal kernel (TA-Lib, numpy) over anchored windows for batch and "
    "streaming, joined as of the bar's close with higher timeframes, the economic calendar, FRED (as of release) and other pairs.",
    params=FeatureEngineeringParams,
    inputs={
        "bars": Port("bar.v1", "closed bars of every (symbol, timeframe); a revision recomputes the rows from it on"),
        "external": Port("external_event.v1", "economic calendar events and FRED observations as they arrive", required=False),
    },
    outputs={
        "features": Port("features.v1", "one row per closed bar once the set is defined (and recomputed rows after a revision)"),
        "history": Port("features.v1", "rows computed at start from stored bars (the backfill): tables only, no model acts on a past bar"),
    },
    role="transform",
    extras=("data",),
)
