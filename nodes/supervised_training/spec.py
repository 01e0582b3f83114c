"""The declaration of the supervised training service: models declared in the topology, trained on ml_features.

One block per model::

    params:
      models:
        - name: signal-1m                     # the artifact name; inference loads signal-1m@promoted
          kind: lightgbm                      # xgboost | lightgbm | catboost
          timeframe: 1m
          symbols: [EURUSD, XAUUSD]           # none: every pair of the run
          target: {kind: direction, horizon: 15m, dead_zone: 0.0002}
          params: {n_estimators: 50, num_leaves: 15, learning_rate: 0.1}
          folds: {n: 4, embargo: 15m}
          seed: 7
          window: 30d                         # how much history (event time) one training takes
          min_rows: 500                       # per symbol, before the first training
          retrain_every: 1d                   # then again after this much new data
          baseline: {metric: balanced_accuracy, min: 0.5, beat_promoted: true}

Kept light (pydantic and framework imports only): the lint imports every spec.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framework.durations import parse_ms
from framework.params import Duration, PositiveDuration
from framework.registry import NodeSpec, Port
from framework.timeframes import parse_timeframe
from nodes.ml.levels import bound_problem

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
METRICS = ("accuracy", "balanced_accuracy", "auc", "log_loss", "brier", "sharpe", "hit_rate", "trades")


class TargetParams(BaseModel):
    """What a model learns to predict (nodes/ml/targets.py)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["direction", "triple_barrier"]
    horizon: PositiveDuration = Field(description="how far ahead of the bar's close the label looks")
    dead_zone: float = Field(default=0.0, ge=0.0, description="direction: a forward return within ±dead_zone (a fraction) is label 0")
    upper: float | None = Field(default=None, gt=0.0, description="triple barrier: upper barrier as a fraction of the entry price")
    lower: float | None = Field(default=None, gt=0.0, description="triple barrier: lower barrier as a fraction of the entry price")
    vol_window: int | None = Field(default=None, ge=2, description="triple barrier: bars of past volatility scaling the barriers")
    vol_multiple: float | None = Field(default=None, gt=0.0, description="triple barrier: barriers at this many volatilities over the horizon")
    timeout: Literal["flat", "sign"] = Field(default="flat", description="triple barrier: label at the vertical barrier")

    @model_validator(mode="after")
    def _consistent(self) -> TargetParams:
        fixed = self.upper is not None or self.lower is not None
        scaled = self.vol_window is not None or self.vol_multiple is not None
        if self.kind == "direction":
            if fixed or scaled or self.timeout != "flat":
                raise ValueError("a direction target takes horizon and dead_zone only")
            return self
        if self.dead_zone:
            raise ValueError("dead_zone is a direction target's; a triple barrier takes upper/lower or vol_window/vol_multiple")
        if fixed == scaled:
            raise ValueError("a triple barrier takes either upper and lower, or vol_window and vol_multiple")
        if fixed and (self.upper is None or self.lower is None):
            raise ValueError("a triple barrier needs both upper and lower")
        if scaled and (self.vol_window is None or self.vol_multiple is None):
            raise ValueError("volatility barriers need both vol_window and vol_multiple")
        return self


class FoldParams(BaseModel):
    """Purged walk-forward evaluation (nodes/ml/folds.py)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=4, ge=1, le=50, description="test folds")
    embargo: Duration | None = Field(default=None, description="gap kept free of training labels around each test fold (none: the target horizon)")
    min_train: int = Field(default=100, ge=1, description="fewest training samples a fold may have after purging")
    min_test: int = Field(default=20, ge=1, description="fewest samples a test fold may have")
    max_train: int | None = Field(default=None, ge=1, description="rolling window: at most this many training samples per fold")


class BaselineParams(BaseModel):
    """What a model must beat to be promoted (nodes/ml/promotion.py)."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal[METRICS] = Field(default="balanced_accuracy", description="the walk-forward metric compared")  # type: ignore[valid-type]
    min: float | None = Field(default=None, description="the metric must be at least this (the floor where higher is better; with none the metric's chance level must be beaten, and accuracy needs one)")
    max: float | None = Field(default=None, description="the metric must be at most this (the floor of log_loss and brier, which need one)")
    beat_promoted: bool = Field(default=True, description="and better than the promoted model's")
    margin: float = Field(default=0.0, ge=0.0, description="by more than this")

    @model_validator(mode="after")
    def _bounded(self) -> BaselineParams:
        problem = bound_problem(self.metric, self.min, self.max)
        if problem is not None:
            raise ValueError(problem)
        return self


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="artifact name (letters, digits, - and _)")
    kind: Literal["xgboost", "lightgbm", "catboost"]
    timeframe: str
    symbols: list[str] | None = Field(default=None, description="none: every pair of the run")
    target: TargetParams
    params: dict[str, Any] = Field(default_factory=dict, description="the library's parameters (n_estimators: boosting rounds)")
    threshold: float = Field(default=0.5, ge=0.5, lt=1.0, description="buy above this probability of up, sell below 1 - threshold")
    folds: FoldParams = Field(default_factory=FoldParams)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    window: PositiveDuration = Field(default="30d", description="the history one training takes, up to the newest complete row")
    min_rows: int = Field(default=500, ge=1, description="feature rows per symbol before the first training")
    retrain_every: PositiveDuration = Field(default="1d", description="train again once the data has moved on this much (event time)")
    feature_set: str | None = Field(default=None, description="train on this feature-set version only (none: the window must hold one)")
    baseline: BaselineParams = Field(default_factory=BaselineParams)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r}: a model name is 1-64 letters, digits, - or _ (it is an artifact name and part of run ids)")
        return value

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        parse_timeframe(value)
        return value

    @field_validator("params")
    @classmethod
    def _no_forced(cls, value: dict[str, Any]) -> dict[str, Any]:
        forced = sorted(set(value) & {"seed", "random_seed", "random_state", "nthread", "n_jobs", "num_threads", "thread_count"})
        if forced:
            raise ValueError(f"{', '.join(forced)}: set by the service (seed from `seed`, one thread) so training is reproducible")
        return value

    @model_validator(mode="after")
    def _horizon(self) -> ModelParams:
        tf = parse_timeframe(self.timeframe).ms
        if (parse_ms(self.target.horizon) or 0) < tf:
            raise ValueError(f"target horizon {self.target.horizon} is shorter than one {self.timeframe} bar")
        return self


class SupervisedTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelParams] = Field(default_factory=list, description="the models to train")
    progress_bar: bool = Field(default=True, description="a progress bar on stderr while training (only on a terminal)")
    check_every: PositiveDuration = Field(default="1m", description="how often a due training starts when no feature row arrives (history found at start)")
    hold_live: PositiveDuration = Field(
        default="1h",
        description="on a wall clock, how long received rows are also kept in memory (until the tables surely hold them); "
        "on simulated time the whole window is kept, so a run never depends on when a table writer flushed",
    )

    @field_validator("models")
    @classmethod
    def _unique(cls, value: list[ModelParams]) -> list[ModelParams]:
        names = [m.name for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"model names must be unique: {', '.join(twice)}")
        return value


SPEC = NodeSpec(
    name="supervised_training",
    factory="nodes.supervised_training.node:SupervisedTraining",
    description="Trains the declared tree models on ml_features (purged walk-forward), stores them as artifacts and promotes the ones that beat their baseline.",
    params=SupervisedTrainingParams,
    inputs={
        "features": Port("features.v1", "feature vectors as they are computed: they move the training window on"),
        "bars": Port("bar.v1", "bars of the models' timeframes: labels and trading costs", required=False),
    },
    outputs={
        "status": Port("training_status.v1", "training.{started,progress,completed,failed}.{run_id}"),
        "checkpoints": Port("any", "one model_checkpoints row per stored model"),
        "metrics": Port("any", "per-fold metrics (training_metrics; step 0 is the walk-forward mean)"),
        "promotions": Port("any", "every promotion decision and its reason (model_promotions)"),
    },
    role="batch",
    extras=("ml",),
)
