"""Declaration of the Polygon historical downloader (batch): finds missing bars, downloads them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framework.durations import parse_ms
from framework.registry import NodeSpec, Port

_TIMEFRAME = re.compile(r"^[1-9][0-9]*(s|m|h|d|w)$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _positive_duration(value: str) -> str:
    ms = parse_ms(value)
    if ms is None or ms <= 0:
        raise ValueError("must be a positive duration such as 2s, 5m, 1h, 30d")
    return value


def _timeframes(value: list[str]) -> list[str]:
    bad = [tf for tf in value if not _TIMEFRAME.match(tf)]
    if bad:
        raise ValueError(f"not timeframes: {', '.join(map(repr, bad))} (use e.g. 1m, 5m, 1h, 4h, 1d)")
    return value


class RetrySettings(BaseModel):
    """Back-off of failed requests (429, 5xx, timeouts). Polygon sends no Retry-After and
    counts requests per minute, so the waits must add up to about a minute."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(default=6, ge=1, le=20, description="tries per request, the first included")
    base_delay: str = Field(default="2s", description="first wait; doubles at each retry (with jitter)")
    max_delay: str = Field(default="60s", description="longest single wait")

    @field_validator("base_delay", "max_delay")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _positive_duration(value)


class SimulatorSettings(BaseModel):
    """The in-process Polygon simulator that ``simulate: true`` starts (demo, tests)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    mean_interval_ms: int = Field(default=2000, ge=1, description="mean time between synthetic quotes of one symbol")
    page_size: int = Field(default=50_000, ge=1, le=50_000, description="bars per response before next_url")


class ScheduleEntry(BaseModel):
    """One recurring scan: which timeframes, how often, how far back."""

    model_config = ConfigDict(extra="forbid")

    every: str = Field(description="period, aligned to multiples of it since the epoch (1d: 00:00 UTC)")
    timeframes: Literal["all", "intraday", "daily"] | list[str] = Field(
        default="all", description="'intraday' (shorter than a day), 'daily' (1d, 1w), 'all', or a list"
    )
    lookback: str | None = Field(default=None, description="window scanned back from now; null: the service's lookback")
    offset: str = Field(default="0s", description="shift of the run times from the aligned period")

    @field_validator("every")
    @classmethod
    def _every(cls, value: str) -> str:
        return _positive_duration(value)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str | None) -> str | None:
        return None if value is None else _positive_duration(value)

    @field_validator("offset")
    @classmethod
    def _offset(cls, value: str) -> str:
        if parse_ms(value) is None:
            raise ValueError("must be a duration")
        return value

    @field_validator("timeframes")
    @classmethod
    def _tfs(cls, value: str | list[str]) -> str | list[str]:
        return value if isinstance(value, str) else _timeframes(value)


def _default_schedule() -> list[ScheduleEntry]:
    return [
        ScheduleEntry(every="1h", timeframes="intraday", lookback="2d"),
        ScheduleEntry(every="1d", timeframes="daily", lookback="10d"),
        ScheduleEntry(every="1w", timeframes="all", lookback=None),
    ]


class PolygonHistoricalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key_env: str = Field(default="POLYGON_API_KEY", description="environment variable holding the API key")
    base_url: str = Field(default="https://api.polygon.io", description="REST root (https://api.massive.com works too)")
    simulate: bool = Field(default=False, description="serve the API from the in-process simulator (any key works)")
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    timeframes: list[str] | None = Field(default=None, description="timeframes to keep complete; null: all of the topology's")
    lookback: str = Field(default="30d", description="how far back a full scan looks")
    end: str | None = Field(
        default=None, description="ISO-8601 UTC end of the scanned window; null: the clock's now (set it on a simulated clock)"
    )
    run: Literal["once", "schedule"] = Field(default="schedule", description="one full scan then finish, or scan on `schedule`")
    schedule: list[ScheduleEntry] = Field(
        default_factory=_default_schedule,
        description="hourly intraday, daily 1d, weekly full re-scan; due entries run together, the longest lookback wins",
    )
    settle: str = Field(
        default="2m",
        description="scheduled scans start this long after their period; a bucket closed less long ago is never remembered as empty",
    )
    gap_table: str = Field(default="historical_aggregates", description="table whose bars count as present (in `reads`)")
    requests_per_minute: float | None = Field(default=None, gt=0, description="client-side limit (free tier: 5); null: none")
    limit: int = Field(default=50_000, ge=1, le=50_000, description="Polygon `limit`: base aggregates per request")
    concurrency: int = Field(default=4, ge=1, le=64, description="pair × timeframe scans in flight")
    timeout: str = Field(default="30s", description="per HTTP request")
    retry: RetrySettings = Field(default_factory=RetrySettings)

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not _ENV.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http://)")
        return value.rstrip("/")

    @field_validator("lookback", "settle", "timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        return _positive_duration(value)

    @field_validator("timeframes")
    @classmethod
    def _tfs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list downloads nothing; leave it out for all timeframes")
        return value if value is None else _timeframes(value)

    @field_validator("end")
    @classmethod
    def _end(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO-8601 time such as 2026-11-02T00:00:00Z") from None
        return value

    @model_validator(mode="after")
    def _schedule(self) -> PolygonHistoricalParams:
        if self.run == "schedule" and not self.schedule:
            raise ValueError("run: schedule needs at least one schedule entry")
        if self.run == "schedule" and self.end is not None:
            raise ValueError("end fixes the window, which only makes sense with run: once")
        return self


SPEC = NodeSpec(
    name="polygon_historical",
    factory="nodes.polygon_historical.node:PolygonHistoricalDownloader",
    description=(
        "Polygon REST aggregates backfill: finds the completed bars missing from the gap table "
        "(FX weekend excluded) and downloads only those, once or on an hourly/daily/weekly schedule."
    ),
    params=PolygonHistoricalParams,
    outputs={"bars": Port("bar.v1", "downloaded bars of completed buckets (source polygon, spreads null)")},
    role="batch",
)
