"""What runs in the worker process: building the training set, one fold, the final fit.

Each step is a module-level function of picklable arguments (``ctx.background(...,
process=True)``), so the node keeps serving between steps and publishes progress at every fold
boundary. :func:`train` chains the same steps in one call (tests, benchmarks).

Folds train on decisive samples only (labels -1/1) and test every sample of their block: the
classification metrics score the decisive ones, the trading metrics all of them, dead-zone and
timed-out samples included, since which samples turn out decisive is known only afterwards.
The model that is stored is then fitted on the whole window (every decisive sample up to the
cut), with the same parameters and seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from framework.durations import parse_ms
from nodes.ml import metrics as M
from nodes.ml.dataset import BAR_COLUMNS, FEATURE_COLUMNS, Dataset, build, frame_rows
from nodes.ml.folds import Fold, purged_walk_forward
from nodes.ml.model import ModelCard
from nodes.ml.trees import TREE_KINDS


@dataclass(frozen=True)
class Job:
    """One training run of one declared model, over ``[window_start, cut)``."""

    name: str
    kind: str
    timeframe: str
    symbols: tuple[str, ...]
    target: dict[str, Any]
    model_params: dict[str, Any]
    threshold: float
    folds: dict[str, Any]
    seed: int
    window_start: int
    cut: int
    """The end of the training window (ms): the close of the newest bar whose features are used."""
    feature_set: str | None = None
    run_id: str = ""

    @property
    def horizon_ms(self) -> int:
        return parse_ms(str(self.target["horizon"])) or 0

    @property
    def embargo_ms(self) -> int:
        embargo = self.folds.get("embargo")
        return self.horizon_ms if embargo is None else (parse_ms(str(embargo)) or 0)

    def card(self, dataset: Dataset, metrics: Mapping[str, Any] | None = None) -> ModelCard:
        return ModelCard(
            kind=self.kind,
            feature_set=dataset.feature_set,
            features=dataset.features,
            timeframe=self.timeframe,
            symbols=self.symbols,
            horizon=str(self.target["horizon"]),
            train_start_ms=int(dataset.start.min()),
            train_end_ms=self.cut,
            seed=self.seed,
            run_id=self.run_id,
            params={"model": dict(self.model_params), "threshold": self.threshold, "target": dict(self.target), "folds": dict(self.folds)},
            metrics=dict(metrics or {}),
        )


def run_id(name: str, window_start: int, cut: int, seed: int, declaration: Mapping[str, Any]) -> str:
    """``<name>-<cut as yyyymmddThhmm>-<8 hex>``: the same model, data window and seed give the same id."""
    import datetime as dt

    digest = hashlib.sha256(orjson.dumps([name, window_start, cut, seed, declaration], option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
    stamp = dt.datetime.fromtimestamp(cut / 1000, dt.timezone.utc).strftime("%Y%m%dT%H%M")
    return f"{name}-{stamp}-{digest}"


@dataclass(frozen=True)
class Prepared:
    dataset: Dataset
    folds: list[Fold]


@dataclass(frozen=True)
class FoldResult:
    index: int
    metrics: dict[str, float]
    train_samples: int
    test_samples: int
    test_start: int
    test_end: int


@dataclass(frozen=True)
class Final:
    data: bytes
    card: dict[str, Any]
    samples: int
    dropped: dict[str, int] = field(default_factory=dict)


def prepare(job: Job, feature_rows: Sequence[Mapping[str, Any]], bar_rows: Sequence[Mapping[str, Any]]) -> Prepared:
    """The training set and its folds; ``TrainingDataError`` / ``FoldError`` say why there is none."""
    dataset = build(feature_rows, bar_rows, target=job.target, timeframe=job.timeframe, cut=job.cut, model=job.name, feature_set=job.feature_set)
    folds = purged_walk_forward(
        dataset.start, dataset.end, int(job.folds.get("n", 4)), job.embargo_ms,
        min_train=int(job.folds.get("min_train", 100)), min_test=int(job.folds.get("min_test", 20)),
        max_train=job.folds.get("max_train"), trainable=dataset.decisive,
    )  # fmt: skip
    return Prepared(dataset, folds)


def prepare_parts(job: Job, feature_parts: Sequence[Any], bar_parts: Sequence[Any]) -> Prepared:
    """:func:`prepare` of rows given as parts (a table's query frame, a list of rows), made into rows here, in the
    worker: for a year of bars that is ~0.4 s of Python the node's event loop would otherwise spend before the run."""
    features = [row for part in feature_parts for row in frame_rows(part, FEATURE_COLUMNS)]
    bars = [row for part in bar_parts for row in frame_rows(part, BAR_COLUMNS)]
    return prepare(job, features, bars)


def fit_fold(job: Job, dataset: Dataset, fold: Fold) -> FoldResult:
    """Train on the fold's training samples, score its test samples."""
    model_cls = TREE_KINDS[job.kind]
    X_train, y_train = dataset.binary(fold.train)
    model = model_cls.fit(X_train, y_train, job.card(dataset))
    X_test, y_test = dataset.binary(fold.test)
    scores = M.classification(y_test, model.predict_proba(X_test)) if len(y_test) else {}
    side = model.predict(dataset.X[fold.test]).side
    scores |= M.trading(side, dataset.ret[fold.test], dataset.cost[fold.test], M.periods_per_year(job.horizon_ms))
    return FoldResult(fold.index, scores, len(y_train), len(fold.test), fold.test_start, fold.test_end)


def fit_final(job: Job, dataset: Dataset, summary: Mapping[str, float]) -> Final:
    """The model on the whole window, as bytes, and its card (with the walk-forward ``summary``)."""
    card = job.card(dataset, M.finite_or_none(summary))
    X, y = dataset.binary(np.arange(len(dataset)))
    model = TREE_KINDS[job.kind].fit(X, y, card)
    return Final(model.to_bytes(), card.to_metadata(), len(y), dict(dataset.dropped))


def train(job: Job, feature_rows: Sequence[Mapping[str, Any]], bar_rows: Sequence[Mapping[str, Any]]) -> tuple[Final, list[FoldResult]]:
    """Every step in this process, in order."""
    prepared = prepare(job, feature_rows, bar_rows)
    results = [fit_fold(job, prepared.dataset, fold) for fold in prepared.folds]
    return fit_final(job, prepared.dataset, M.summary([r.metrics for r in results])), results
