"""Gradient-boosted trees (XGBoost, LightGBM, CatBoost) behind :class:`nodes.ml.model.Model`.

All three are binary classifiers of "up" against "down" (labels 1 and 0). ``predict`` turns
the probability of up into a side with the card's ``threshold`` (``params.threshold``, default
0.5): buy above it, sell below ``1 - threshold``, flat between; the confidence is the
probability of the side's direction (``max(p, 1 - p)``).

Training is reproducible: the seed and one thread are forced (``nthread`` / ``num_threads`` /
``thread_count``; LightGBM ``deterministic``), so the same rows and seed give the same bytes.
The topology's ``params`` go to the library as they are (``n_estimators`` is the number of
boosting rounds for all three). Bytes are each library's own format: XGBoost UBJSON, the
LightGBM model text, CatBoost ``cbm`` without its two run-specific metadata entries (a GUID and
the finish time), so equal models are equal bytes.
"""

from __future__ import annotations

import abc
import os
import tempfile
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from nodes.ml.model import Model, ModelCard, ModelError, Prediction

DEFAULT_ROUNDS = 100


def _split(params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    rest = dict(params)
    rounds = int(rest.pop("n_estimators", DEFAULT_ROUNDS))
    if rounds < 1:
        raise ModelError(f"n_estimators must be at least 1, not {rounds}")
    return rounds, rest


class TreeModel(Model):
    """A fitted booster and its card; subclasses wrap one library."""

    library: ClassVar[str]

    def __init__(self, card: ModelCard, booster: Any) -> None:
        super().__init__(card)
        self.booster = booster

    @property
    def threshold(self) -> float:
        return float(self.card.params.get("threshold", 0.5))

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, card: ModelCard) -> TreeModel:
        """Train on ``X`` (float64, finite) and ``y`` (0 down, 1 up) with ``card.params['model']`` and ``card.seed``."""
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ModelError(f"{cls.kind}: the training rows hold one class only ({len(y)} rows)")
        try:
            booster = cls._fit(np.ascontiguousarray(X, dtype=np.float64), y.astype(np.int64), dict(card.params.get("model", {})), card)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{cls.kind} training failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
        return cls(card, booster)

    @classmethod
    @abc.abstractmethod
    def _fit(cls, X: np.ndarray, y: np.ndarray, params: dict[str, Any], card: ModelCard) -> Any: ...

    @abc.abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of up, one per row."""

    def predict(self, X: np.ndarray, position: np.ndarray | None = None) -> Prediction:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.card.features):
            raise ModelError(f"{self.kind}: rows of {X.shape[-1] if X.ndim else 0} values, the model takes {len(self.card.features)}")
        p = self.predict_proba(X)
        t = self.threshold
        side = np.where(p > t, 1, np.where(p < 1.0 - t, -1, 0)).astype(np.int8)
        return Prediction(side, np.maximum(p, 1.0 - p))

    @classmethod
    def from_bytes(cls, data: bytes, card: ModelCard) -> Model:
        try:
            booster = cls._load(bytes(data))
        except Exception as exc:
            raise ModelError(f"{cls.kind} model of {card.run_id or 'unknown run'} cannot be read: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
        model = cls(card, booster)
        if model.n_features() != len(card.features):
            raise ModelError(f"{cls.kind} model takes {model.n_features()} features, its card lists {len(card.features)}")
        return model

    @classmethod
    @abc.abstractmethod
    def _load(cls, data: bytes) -> Any: ...

    @abc.abstractmethod
    def n_features(self) -> int: ...


class XGBoostModel(TreeModel):
    kind = "xgboost"

    @classmethod
    def _fit(cls, X: np.ndarray, y: np.ndarray, params: dict[str, Any], card: ModelCard) -> Any:
        import xgboost as xgb

        rounds, rest = _split(params)
        settings = {"objective": "binary:logistic", "tree_method": "hist", **rest, "seed": card.seed, "nthread": 1}
        data = xgb.DMatrix(X, label=y, feature_names=list(card.features))
        return xgb.train(settings, data, num_boost_round=rounds)

    @classmethod
    def _load(cls, data: bytes) -> Any:
        import xgboost as xgb

        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(bytearray(data))
        return booster

    def to_bytes(self) -> bytes:
        return bytes(self.booster.save_raw("ubj"))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``inplace_predict``: no DMatrix (and its thread pool) per call; the same probabilities."""
        return np.asarray(self.booster.inplace_predict(X), dtype=np.float64)

    def n_features(self) -> int:
        return int(self.booster.num_features())


class LightGBMModel(TreeModel):
    kind = "lightgbm"

    @classmethod
    def _fit(cls, X: np.ndarray, y: np.ndarray, params: dict[str, Any], card: ModelCard) -> Any:
        import lightgbm as lgb

        rounds, rest = _split(params)
        settings = {"objective": "binary", "verbose": -1, **rest, "seed": card.seed, "num_threads": 1, "deterministic": True, "force_row_wise": True}
        return lgb.train(settings, lgb.Dataset(X, label=y, feature_name=list(card.features), free_raw_data=True), num_boost_round=rounds)

    @classmethod
    def _load(cls, data: bytes) -> Any:
        import lightgbm as lgb

        return lgb.Booster(model_str=data.decode("utf-8"))

    def to_bytes(self) -> bytes:
        return self.booster.model_to_string().encode("utf-8")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(X, num_threads=1), dtype=np.float64)

    def n_features(self) -> int:
        return int(self.booster.num_feature())


class CatBoostModel(TreeModel):
    kind = "catboost"
    RUN_SPECIFIC = ("model_guid", "train_finish_time")

    @classmethod
    def _fit(cls, X: np.ndarray, y: np.ndarray, params: dict[str, Any], card: ModelCard) -> Any:
        from catboost import CatBoostClassifier

        rounds, rest = _split(params)
        model = CatBoostClassifier(
            iterations=rounds, verbose=False, **rest, random_seed=card.seed, thread_count=1, allow_writing_files=False
        )
        model.fit(X, y)
        metadata = model.get_metadata()
        for key in cls.RUN_SPECIFIC:
            if key in metadata:
                del metadata[key]
        return model

    @classmethod
    def _load(cls, data: bytes) -> Any:
        from catboost import CatBoostClassifier

        model = CatBoostClassifier(thread_count=1)
        model.load_model(blob=data)
        return model

    def to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory(prefix="fxflow-catboost-") as folder:
            path = os.path.join(folder, "model.cbm")
            self.booster.save_model(path, format="cbm")
            with open(path, "rb") as f:
                return f.read()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict_proba(X, thread_count=1)[:, 1], dtype=np.float64)

    def n_features(self) -> int:
        return len(self.booster.feature_names_)


TREE_KINDS: dict[str, type[TreeModel]] = {cls.kind: cls for cls in (XGBoostModel, LightGBMModel, CatBoostModel)}
