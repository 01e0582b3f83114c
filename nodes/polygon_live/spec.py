"""Declaration of the Polygon/Massive live forex collector (light: pydantic and framework only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from framework.durations import parse_ms
from framework.params import PositiveDuration, UtcTime
from framework.registry import NodeSpec, Port


def _duration(value: str | None, *, allow_none: bool = True) -> str | None:
    if value is None:
        if not allow_none:
            raise ValueError("a duration is required")
        return None
    ms = parse_ms(value)
    if ms is None or ms <= 0:
        raise ValueError(f"{value!r} must be a positive, finite duration")
    return value


class SimulationParams(BaseModel):
    """The in-process simulator used when ``simulate: true`` (demo, tests, no API key)."""

    model_config = ConfigDict(extra="forbid")

    start: UtcTime | None = Field(
        default=None,
        description="ISO-8601 UTC start of the synthetic feed; required on a simulated clock, default now on the wall clock",
    )
    duration: PositiveDuration | None = Field(default="2h", description="feed length; null: endless")
    seed: int = 7
    mean_interval_ms: int = Field(default=2000, ge=1, description="mean time between quotes of one symbol (busy hours are faster)")
    pace: Literal["auto", "fast", "realtime"] = Field(
        default="auto",
        description="fast: as fast as the collector reads (the quotes' times drive a simulated clock); "
        "realtime: each quote when its time comes, stamped live; auto: fast on a simulated clock, realtime otherwise",
    )
    events_per_frame: int = Field(default=10, ge=1, description="at most this many events per WebSocket frame")



class PolygonLiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key_env: str = Field(default="POLYGON_API_KEY", min_length=1, description="environment variable holding the API key")
    url: str = Field(default="wss://socket.polygon.io/forex", description="forex WebSocket (wss://socket.massive.com/forex works too)")
    simulate: bool = Field(default=False, description="serve synthetic quotes from an in-process simulator; any key works")
    simulation: SimulationParams = Field(default_factory=SimulationParams)
    max_quote_age: str | None = Field(default="60s", description="quotes older than this on the node's clock are dead-lettered; null: no limit")
    backoff_initial: str = Field(default="1s", description="first reconnect delay (doubles per failed attempt)")
    backoff_max: str = Field(default="60s", validate_default=True, description="longest reconnect delay")
    backoff_jitter: float = Field(default=0.5, ge=0.0, le=1.0, description="each delay is shortened by a random fraction up to this")
    max_reconnects: int | None = Field(
        default=None, ge=0, description="give up after this many reconnect attempts in a row without data; null: never"
    )
    heartbeat: str | None = Field(default="30s", description="WebSocket ping interval; a missing pong ends the connection; null: off")
    connect_timeout: str = Field(default="10s", description="limit for the TCP/TLS connect and for each handshake answer")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @field_validator("max_quote_age", "heartbeat")
    @classmethod
    def _optional_duration(cls, value: str | None) -> str | None:
        return _duration(value)

    @field_validator("backoff_initial", "backoff_max", "connect_timeout")
    @classmethod
    def _required_duration(cls, value: str) -> str:
        _duration(value, allow_none=False)
        return value

    @field_validator("backoff_max")
    @classmethod
    def _backoff_order(cls, value: str, info: ValidationInfo) -> str:
        initial = info.data.get("backoff_initial")
        if initial is not None and (parse_ms(initial) or 0) > (parse_ms(value) or 0):
            raise ValueError(f"shorter than backoff_initial ({initial})")
        return value


SPEC = NodeSpec(
    name="polygon_live",
    factory="nodes.polygon_live.node:PolygonLiveCollector",
    description="Polygon/Massive forex WebSocket quotes (channel C), normalised to tick.v1 and validated; "
    "reconnects with back-off and publishes a data_gap.v1 per pair after each reconnect.",
    params=PolygonLiveParams,
    outputs={
        "ticks": Port("tick.v1", "one validated quote per event (source polygon, increasing seq)"),
        "gaps": Port("data_gap.v1", "per pair, the stretch a reconnect left without quotes"),
    },
    role="source",
)
