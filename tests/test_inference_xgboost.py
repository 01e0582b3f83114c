"""An XGBoost model predicts through XGBoost's C API (no per-call Python wrapper, a proxy DMatrix kept
per thread) exactly what ``Booster.inplace_predict`` gives: one row or many, fresh from training or
loaded from its bytes, from several threads at once, after a round trip through pickle."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from nodes.ml.model import ModelCard, load_model
from nodes.ml.trees import XGBoostModel

pytest.importorskip("xgboost")


def trained(threshold: float = 0.5) -> tuple[np.ndarray, list[XGBoostModel]]:
    rng = np.random.default_rng(5)
    X = rng.normal(0.0, 0.01, size=(600, 40))
    y = (X[:, 0] + X[:, 3] + rng.normal(0, 0.01, len(X)) > 0).astype(int)
    card = ModelCard(kind="xgboost", feature_set="fs-1", features=tuple(f"f{i:02d}" for i in range(40)), timeframe="1h",
                     symbols=("EURUSD",), seed=1, params={"model": {"n_estimators": 30, "max_depth": 5}, "threshold": threshold})  # fmt: skip
    fresh = XGBoostModel.fit(X[:400], y[:400], card)
    loaded = load_model(fresh.to_bytes(), card)
    assert isinstance(loaded, XGBoostModel)
    return X[400:], [fresh, loaded]


def inplace(model: XGBoostModel, X: np.ndarray) -> np.ndarray:
    return np.asarray(model.booster.inplace_predict(X), dtype=np.float64)


def test_probabilities_are_inplace_predicts_without_calling_it(monkeypatch: pytest.MonkeyPatch) -> None:
    X, models = trained()
    for model in models:
        expected = inplace(model, X)
        assert len(np.unique(expected)) > 50

        def refused(*args: object, **kwargs: object) -> None:
            raise AssertionError("inplace_predict called")

        monkeypatch.setattr(model.booster, "inplace_predict", refused)
        assert np.array_equal(model.predict_proba(X), expected)
        assert np.array_equal(np.concatenate([model.predict_proba(X[i : i + 1]) for i in range(len(X))]), expected)
        assert np.array_equal(model.predict_proba(np.asfortranarray(X)), expected)
        assert np.array_equal(model.predict_proba(X[::2]), expected[::2])
        assert model.predict_proba(X[:0]).shape == (0,)


def test_one_row_gets_the_side_and_confidence_the_rows_together_get() -> None:
    X, models = trained(threshold=0.55)
    for model in models:
        together = model.predict(X)
        assert set(together.side.tolist()) == {-1, 0, 1}
        for i in range(len(X)):
            one = model.predict(X[i : i + 1])
            assert one.side.dtype == together.side.dtype and one.confidence.dtype == together.confidence.dtype
            assert (one.side[0], one.confidence[0]) == (together.side[i], together.confidence[i])


def test_threads_predicting_at_once_get_the_same_probabilities() -> None:
    X, models = trained()
    model = models[1]
    expected = inplace(model, X)
    got: list[list[np.ndarray]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        for _ in range(20):
            got[k].append(np.concatenate([model.predict_proba(X[i : i + 1]) for i in range(0, len(X), 3)]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(p, expected[::3]) for runs in got for p in runs)


def test_a_model_that_predicted_goes_through_pickle_and_predicts_the_same() -> None:
    X, models = trained()
    for model in models:
        before = model.predict_proba(X)
        again = pickle.loads(pickle.dumps(model))
        assert np.array_equal(again.predict_proba(X), before)
