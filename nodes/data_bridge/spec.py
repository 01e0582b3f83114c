"""Declaration of the data bridge (real-time streams → ClickHouse archives, with dedup and gap filling)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from framework.params import Duration, PositiveDuration
from framework.registry import NodeSpec, Port


class DataBridgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dedup_table: str = Field(default="dedup_keys", description="key-value table holding the dedup keys (its retention is their TTL)")
    batch_size: int = Field(default=2000, ge=1, description="messages claimed and written per batch")
    flush_every: PositiveDuration = Field(default="200ms", description="longest a message waits for its batch")
    replay_on_gap_marker: bool = Field(default=True, description="replay the span of each gap marker (gaps.>) from Kafka")
    catch_up: Duration | None = Field(
        default="6h", description="on start, replay the archive from the last archived tick (at most this far back); null: off"
    )
    catch_up_margin: Duration = Field(
        default="1m",
        description="the catch-up also replays this long before the last archived tick (ticks that were still on their way, "
        "late from a reconnect buffer, when the bridge stopped)",
    )
    replay_margin: Duration = Field(default="1s", description="extra time replayed on both sides of a gap")


SPEC = NodeSpec(
    name="data_bridge",
    factory="nodes.data_bridge.node:DataBridge",
    description="Archives ticks, bars and external data into ClickHouse exactly once (dedup), filling real-time gaps from Kafka.",
    params=DataBridgeParams,
    inputs={
        "ticks": Port("tick.v1", "real-time ticks (NATS); the runtime refills sequence gaps from the Kafka archive"),
        "bars": Port("bar.v1", "closed bars"),
        "external": Port("external_event.v1", "external data points", required=False),
        "gaps": Port("data_gap.v1", "gap markers from collectors", required=False),
    },
    outputs={
        "archived_ticks": Port("tick.v1", "each tick once"),
        "archived_bars": Port("bar.v1", "each bar once"),
        "archived_calendar": Port("external_event.v1", "economic calendar events", required=False),
        "archived_fred": Port("external_event.v1", "FRED observations", required=False),
        "archived_commodities": Port("external_event.v1", "commodity prices", required=False),
    },
    role="transform",
)
