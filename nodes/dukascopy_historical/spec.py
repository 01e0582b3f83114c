"""Declaration of the Dukascopy historical downloader (light: pydantic, framework and pure-Python tables)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port
from nodes.dukascopy_historical.hours import parse_utc_ms
from nodes.dukascopy_historical.instruments import DECIMAL_FACTORS
from nodes.dukascopy_historical.urls import DEFAULT_BASE_URL


class SimulatorParams(BaseModel):
    """The in-process datafeed started when ``simulate: true`` (seeded synthetic quotes)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    mean_interval_ms: int = Field(default=2000, ge=1, description="mean time between quotes of one symbol")


class DukascopyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(
        default=None,
        description="first UTC hour to fetch, ISO date or time (2019-02-04, 2019-02-04T07:00Z); default: `lookback` before end",
    )
    end: str | None = Field(
        default=None,
        description="end (exclusive) of the hours to fetch, ISO; default: now - 1h floored to the hour (the newest complete, published hour)",
    )
    lookback: PositiveDuration = Field(default="1d", description="span fetched when `start` is not given")
    symbols: list[str] | None = Field(default=None, description="instruments to fetch; default: the run's pairs")
    decimal_factors: dict[str, int] = Field(
        default_factory=dict, description="price = points / factor, per symbol; overrides and extends the built-in table"
    )
    concurrency: int = Field(default=8, ge=1, le=64, description="hour files downloaded in parallel")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="datafeed root (ignored with simulate: true)")
    transport: Literal["bi5"] = Field(default="bi5", description="how hours are fetched (the swap point for another API)")
    timeout: PositiveDuration = Field(default="30s", description="per request, before a retry")
    attempts: int = Field(default=5, ge=1, le=20, description="tries per file on 503/5xx/429/timeouts")
    retry_delay: PositiveDuration = Field(default="500ms", description="first back-off, doubled per retry (a Retry-After wins)")
    max_failures_in_a_row: int = Field(
        default=20, ge=1, description="a catch-up stops after this many hour files failed in a row (datafeed down or blocking us)"
    )
    simulate: bool = Field(default=False, description="serve synthetic .bi5 files from an in-process simulator (demo, tests)")
    simulator: SimulatorParams = Field(default_factory=SimulatorParams)
    run: Literal["once", "schedule"] = Field(default="once", description="once: fetch start..end and finish; schedule: catch up every `every`")
    every: PositiveDuration = Field(default="1h", description="catch-up period with run: schedule")
    recheck_empty: PositiveDuration = Field(
        default="1d", description="an empty hour newer than this (not published yet?) is fetched again on the next catch-up"
    )
    table: str | None = Field(
        default="historical_ticks",
        description="table the ticks port writes; done hours are checked against it on start (null: trust the progress file)",
    )
    progress_every: PositiveDuration = Field(default="10s", description="progress log interval")

    @field_validator("start", "end")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            parse_utc_ms(value)
        return value

    @field_validator("symbols")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("list at least one symbol, or leave it out for the run's pairs")
            value = [s.strip().upper() for s in value]
        return value

    @field_validator("decimal_factors")
    @classmethod
    def _factors(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k, v in value.items() if v <= 0]
        if bad:
            raise ValueError(f"factors must be positive: {', '.join(bad)}")
        return {k.upper(): v for k, v in value.items()}

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> DukascopyParams:
        if self.start is not None and self.end is not None and parse_utc_ms(self.start) >= parse_utc_ms(self.end):
            raise ValueError(f"start {self.start} must be before end {self.end}")
        unknown = [s for s in self.symbols or () if s not in DECIMAL_FACTORS and s not in self.decimal_factors]
        if unknown:
            raise ValueError(f"no Dukascopy decimal factor for {', '.join(unknown)}: add them under decimal_factors")
        return self


SPEC = NodeSpec(
    name="dukascopy_historical",
    factory="nodes.dukascopy_historical.node:DukascopyDownloader",
    description=(
        "Dukascopy hourly .bi5 tick files (LZMA, zero-based months, per-instrument price factors) downloaded in parallel, "
        "decoded with numpy and published as ticks; resumable (done hours are skipped), bad files and records dead-lettered."
    ),
    params=DukascopyParams,
    outputs={
        "ticks": Port(
            "tick.v1",
            "one tick per Dukascopy record (source dukascopy; bid_size/ask_size = Dukascopy volumes, millions of units)",
        )
    },
    role="batch",
)
