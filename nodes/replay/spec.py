"""Declaration of the replay source (recorded ticks from ClickHouse, Parquet or CSV, at N× speed)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from framework.params import PositiveDuration, UtcTime
from framework.registry import NodeSpec, Port


class ReplayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["table", "parquet", "csv"] = Field(default="table", description="where the recorded ticks are")
    table: str = Field(default="historical_ticks", description="table to read (source: table; list it under the service's reads)")
    path: str | None = Field(default=None, description="file or directory (source: parquet or csv); columns symbol, ts, bid, ask")
    start: UtcTime | None = Field(default=None, description="ISO-8601 UTC, inclusive; default: the first recorded tick")
    end: UtcTime | None = Field(default=None, description="ISO-8601 UTC, exclusive; default: the last recorded tick")
    speed: float = Field(
        default=0.0, ge=0, description="N× real time on the wall clock; 0 = as fast as the pipeline takes it (simulated clock: always)"
    )
    chunk: PositiveDuration = Field(default="6h", description="event time read per query")
    tick_source: str | None = Field(default=None, description="overrides the ticks' source field (default: as recorded, or 'replay')")

    @model_validator(mode="after")
    def _path_for_files(self) -> ReplayParams:
        if self.source in ("parquet", "csv") and not self.path:
            raise ValueError(f"source: {self.source} needs a path")
        return self


SPEC = NodeSpec(
    name="replay",
    factory="nodes.replay.node:Replay",
    description="Replays recorded ticks (ClickHouse table, Parquet or CSV) in time order on the node's clock, at N× speed.",
    params=ReplayParams,
    outputs={"ticks": Port("tick.v1", "the recorded quotes, in time order")},
    role="source",
)
