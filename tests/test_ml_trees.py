"""XGBoost, LightGBM and CatBoost behind one interface: train -> bytes -> load predicts the same; same data and seed, same bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nodes.ml.model import ModelCard, ModelError, load_model
from nodes.supervised_training import worker
from nodes.supervised_training.synthetic import bars_and_features

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("xgboost", "lightgbm", "catboost")
T0 = 1_793_577_600_000
M = 60_000
PARAMS = {  # subsampling: so the seed matters
    "xgboost": {"n_estimators": 15, "max_depth": 3, "subsample": 0.7},
    "lightgbm": {"n_estimators": 15, "num_leaves": 7, "bagging_fraction": 0.7, "bagging_freq": 1},
    "catboost": {"n_estimators": 15, "depth": 3},
}


def job(kind: str, seed: int = 5) -> worker.Job:
    return worker.Job(
        name=f"t-{kind}", kind=kind, timeframe="1m", symbols=("EURUSD", "XAUUSD"),
        target={"kind": "direction", "horizon": "2m", "dead_zone": 0.0}, model_params=PARAMS[kind], threshold=0.55,
        folds={"n": 2, "embargo": None, "min_train": 50, "min_test": 20}, seed=seed,
        window_start=T0, cut=T0 + 300 * M, run_id=f"t-{kind}-{seed}",
    )  # fmt: skip


def data() -> tuple[list, list]:
    return bars_and_features(["EURUSD", "XAUUSD"], start_ms=T0, n=300, momentum=0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_train_store_load_gives_identical_predictions(kind: str) -> None:
    bars, rows = data()
    final, folds = worker.train(job(kind), rows, bars)
    assert len(folds) == 2 and all("balanced_accuracy" in f.metrics for f in folds)
    card = ModelCard.from_metadata(final.card)
    assert card.kind == kind and card.feature_set == "synthetic-v1" and card.features == ("r1", "r3", "r6", "vol10")
    assert card.train_end_ms == T0 + 300 * M and card.seed == 5 and card.horizon == "2m"
    assert set(card.metrics) >= {"accuracy", "balanced_accuracy", "auc", "log_loss", "brier", "sharpe", "hit_rate"}
    prepared = worker.prepare(job(kind), rows, bars)
    X = prepared.dataset.X
    trained = worker.TREE_KINDS[kind].fit(*prepared.dataset.binary(np.arange(len(prepared.dataset))), card)
    assert trained.to_bytes() == final.data
    loaded = load_model(final.data, card)
    assert type(loaded).__name__ == type(trained).__name__
    assert np.array_equal(loaded.predict_proba(X), trained.predict_proba(X))
    before, after = trained.predict(X), loaded.predict(X)
    assert np.array_equal(before.side, after.side) and np.array_equal(before.confidence, after.confidence)
    assert set(np.unique(after.side)) <= {-1, 0, 1} and np.all((after.confidence >= 0.5) & (after.confidence <= 1))
    p = loaded.predict_proba(X)
    assert np.array_equal(after.side == 1, p > 0.55) and np.array_equal(after.side == -1, p < 0.45)


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_bytes_or_a_card_of_another_shape_are_refused(kind: str) -> None:
    bars, rows = data()
    final, _ = worker.train(job(kind), rows, bars)
    card = ModelCard.from_metadata(final.card)
    with pytest.raises(ModelError, match=f"{kind} model of t-{kind}-5 cannot be read"):
        load_model(b"\x00not a model" * 10, card)
    with pytest.raises(ModelError, match="takes 4 features, its card lists 3"):
        load_model(final.data, ModelCard.from_metadata({**final.card, "features": ["r1", "r3", "r6"]}))


SCRIPT = """
import hashlib, sys
sys.path.insert(0, {root!r})
from tests.test_ml_trees import data, job
from nodes.supervised_training import worker
bars, rows = data()
for kind in {kinds!r}:
    final, _ = worker.train(job(kind), rows, bars)
    print(kind, hashlib.sha256(final.data).hexdigest())
"""


def test_same_data_and_seed_give_the_same_bytes_in_another_process_and_another_seed_does_not() -> None:
    bars, rows = data()
    here = {kind: hashlib.sha256(worker.train(job(kind), rows, bars)[0].data).hexdigest() for kind in KINDS}
    env = dict(os.environ, PYTHONHASHSEED="4242")
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT), kinds=KINDS)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    there = dict(line.split() for line in out.stdout.splitlines())
    assert there == here
    for kind in KINDS:
        other = hashlib.sha256(worker.train(job(kind, seed=6), rows, bars)[0].data).hexdigest()
        assert other != here[kind]
