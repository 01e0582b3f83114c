"""The declaration of the backtesting engine: a source of historical bars, a status, results and a report.

Kept light (pydantic and framework imports only): the lint and the docs import every spec.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from framework.params import UtcTime, utc_ms
from framework.registry import NodeSpec, Port
from framework.timeframes import parse_timeframe
from nodes.backtest.status import check_run_id

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BacktesterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: UtcTime = Field(description="first bar replayed: bars that start at or after it (ISO-8601 UTC)")
    end: UtcTime = Field(description="bars that close at or before it (ISO-8601 UTC)")
    source: Literal["table", "synthetic", "file"] = Field(
        default="table",
        description="table: the bars of `table` (history downloaded or archived); synthetic: seeded bars made for the "
        "window (nodes/features/synthetic.py; no download needed); file: the bars (and external events) of `file`",
    )
    file: str | None = Field(
        default=None,
        description="the .npz read with source: file (nodes/backtest/tape.py write_file; relative to the data_dir): how a "
        "backtest runner hands a child run the bars of its own store",
    )
    artifacts: str | None = Field(
        default=None,
        description="a JSON list of artifacts stored (and tagged) before the first bar, relative to the data_dir: "
        "[{name, kind, metadata, file, tag, tag_metadata}] (a backtest runner's pinned models)",
    )
    status_file: str | None = Field(
        default=None, description="also append every status as a JSON line to this file (relative to the data_dir): a parent process follows the run"
    )
    table: str = Field(default="historical_aggregates", description="the bars read with source: table (declare it under reads)")
    timeframes: list[str] | None = Field(default=None, description="timeframes replayed; none: every timeframe of the topology")
    seed: int = Field(default=7, description="the synthetic bars' seed")
    run_id: str | None = Field(
        default=None, description="the run's id in subjects and results; none: bt-<first 12 hex of the config hash>"
    )
    progress_every: float = Field(default=0.1, gt=0, le=1, description="a backtest.progress status every this share of the bars")
    report: bool = Field(default=True, description="write the HTML report (<data_dir>/backtests/<run_id>/report.html)")
    curve_points: int = Field(default=2000, ge=10, description="at most this many points of the equity curve asked for the report")
    price_points: int = Field(default=4000, ge=10, description="at most this many points of the price line of each symbol in the report")
    report_timeout: float = Field(default=60.0, gt=0, description="seconds to wait for performance-monitoring's report")
    annotations: dict[str, str | int | float | None] = Field(
        default_factory=dict,
        description="recorded as they are in the results' details (a walk-forward fold: its windows and pinned model)",
    )

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            parse_timeframe(name)
        if value is not None and not value:
            raise ValueError("timeframes is empty: name at least one, or leave it out for all")
        return value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(f"{value!r} is not a table name")
        return value

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        return check_run_id(value)

    @field_validator("end")
    @classmethod
    def _window(cls, value: str, info: ValidationInfo) -> str:
        """On ``end``, not on the whole model: the error then names the field and where it was written."""
        start = info.data.get("start")
        if start is not None and utc_ms(value) <= utc_ms(start):
            raise ValueError(f"end {value} is not after start {start}: the window holds no bar")
        return value

    @model_validator(mode="after")
    def _file(self) -> BacktesterParams:
        if self.source == "file" and not self.file:
            raise ValueError("source: file needs `file` (the .npz of bars)")
        return self

    @property
    def start_ms(self) -> int:
        return utc_ms(self.start)

    @property
    def end_ms(self) -> int:
        return utc_ms(self.end)


SPEC = NodeSpec(
    name="backtester",
    factory="nodes.backtest.node:Backtester",
    description="Replays historical (or seeded synthetic) bars in event-time order through the live feature, inference, "
    "risk, execution and paper-broker nodes on the simulated clock; reports the run's status, its results and an offline "
    "HTML report from performance-monitoring's figures.",
    params=BacktesterParams,
    inputs={
        "fills": Port("order_event.v1", "filled orders: the models whose signals traded (from the signal ids)", required=False),
    },
    outputs={
        "bars": Port("bar.v1", "the replayed bars, on the subjects tick-aggregator publishes"),
        "status": Port("backtest_status.v1", "started, progress, completed, failed (with the metrics)"),
        "results": Port("any", "backtest_results: one row per metric, details with the config hash, params and model ids"),
        "performance": Port("performance_query.v1", "request/reply to performance-monitoring: its report at the end of the run", required=False),
        "external": Port("external_event.v1", "source: file: the file's calendar and FRED events, before the first bar", required=False),
    },
    role="source",
)
