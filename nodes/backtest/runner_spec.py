"""The declaration of the backtest runner: backtesting-engine's service mode (topology=live and demo).

Kept light (pydantic and framework imports only): the lint and the docs import every spec.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.params import Duration, PositiveDuration
from framework.registry import NodeSpec, Port
from framework.timeframes import parse_timeframe

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OnPromotion(BaseModel):
    """A backtest of every model a training service promotes, over the newest stored bars."""

    model_config = ConfigDict(extra="forbid")

    lookback: PositiveDuration = Field(default="2h", description="the window: this much event time up to the newest bar held or stored")
    models: list[str] | None = Field(default=None, description="only these model names (none: every promoted model)")

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("models is empty: name at least one, or leave it out for every promoted model")
        return value


class Retention(BaseModel):
    """Which finished runs' directories (``<data_dir>/services/<service>/runs/<run_id>``) stay on disk; a running or
    queued run's is never removed. Their results stay in backtest_results and backtest_runs."""

    model_config = ConfigDict(extra="forbid")

    keep: int | None = Field(
        default=20, ge=1,
        description="the newest this many finished runs are kept (none: no limit by count); the same request again reruns one removed",
    )  # fmt: skip
    max_age: PositiveDuration | None = Field(
        default="30d", description="a finished run whose directory has not changed for this long (wall time) is removed (none: no limit by age)"
    )


class BacktestRunnerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrent: int = Field(default=1, ge=1, description="child runs at a time (each a process of its own); the others queue")
    max_queued: int = Field(default=8, ge=0, description="requests waiting for a free slot; one more is refused (busy)")
    timeout: PositiveDuration = Field(default="30m", description="a child run taking longer (wall time) is killed: backtest.failed")
    tables: list[str] = Field(
        default_factory=lambda: ["historical_aggregates"],
        description="bar tables read for a run (declare them under reads); a bar in several: the first table's (bars held from `bars` win over all)",
    )
    external_tables: list[str] = Field(
        default_factory=lambda: ["external_economic_calendar", "external_fred_indicators"],
        description="calendar and FRED tables whose rows up to the window's end go to the child (its features use them from their release)",
    )
    timeframes: list[str] = Field(
        default_factory=lambda: ["1m"],
        description="timeframes every run replays, besides the request's models' (the paper broker fills on 1m bars)",
    )
    hold: Duration = Field(
        default="1d",
        description="bars received on `bars` are held this long (event time, per stream): a run never depends on when a table writer "
        "flushed (on simulated time, the same tape every run); a window longer than this reads older bars from the tables",
    )
    child: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="params of the child's services over topology=backtest, each value replacing the profile's leaf by leaf: "
        "{feature-engineering-service: {feature_set: ...}} (a promoted model needs the feature set it was trained on)",
    )
    overrides: list[str] = Field(default_factory=list, description="Hydra overrides of every child run (key=value), before the request's own")
    on_promotion: OnPromotion | None = Field(
        default=None, description="backtest each newly promoted model (from training.completed); none: only on request"
    )
    status_every: PositiveDuration = Field(default="2s", description="how often a running child's progress is read and published (wall clock)")
    retention: Retention = Field(
        default_factory=Retention, description="finished runs' directories beyond either limit are removed, at start and after each run"
    )

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, value: list[str]) -> list[str]:
        for name in value:
            parse_timeframe(name)
        return value

    @field_validator("tables", "external_tables")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _TABLE.match(name)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a table name")
        return value

    @field_validator("child")
    @classmethod
    def _services(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if "backtesting-engine" in value:
            raise ValueError("the child's backtesting-engine params are the runner's to set (window, file, run id); use the request")
        return value


SPEC = NodeSpec(
    name="backtest_runner",
    factory="nodes.backtest.runner:BacktestRunner",
    description="Runs backtests on request while the system runs: each a `fxrun topology=backtest` child process on the bars "
    "of this run's store (handed over as a file), its statuses republished and its results written here.",
    params=BacktestRunnerParams,
    inputs={
        "requests": Port("backtest_request.v1", "request/reply: a backtest to run; the reply says accepted (its run id) or refused (why)", required=False),
        "trainings": Port("training_status.v1", "training.completed: a model just promoted is backtested (params.on_promotion)", required=False),
        "bars": Port("bar.v1", "bars as they close, held (params.hold) so a run does not depend on table flushes", required=False),
    },
    outputs={
        "status": Port("backtest_status.v1", "started, progress (the child's), completed (with the metrics) or failed (with the reason)"),
        "results": Port("any", "backtest_results: one row per metric of a completed run, details with the config hash, params and request"),
        "performance": Port("performance_query.v1", "request/reply to performance-monitoring: the account over a completed run's window "
                            "(details.account), to set the backtest beside what the account did", required=False),
    },
    role="batch",
)
