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
import ctypes
import os
import tempfile
import threading
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
        if len(p) == 1:  # one message: the same numbers as below, without six array operations
            q = float(p[0])
            return Prediction(np.array([1 if q > t else -1 if q < 1.0 - t else 0], dtype=np.int8), np.array([max(q, 1.0 - q)]))
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

    def __init__(self, card: ModelCard, booster: Any) -> None:
        super().__init__(card, booster)
        self._dense: _DensePredict | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dense": None}  # C handles do not cross processes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``inplace_predict`` (no DMatrix per call), through :class:`_DensePredict`: the same probabilities."""
        dense = self._dense
        if dense is None:
            dense = self._dense = _DensePredict.of(self.booster)
        got = dense(X) if dense else None
        return np.asarray(self.booster.inplace_predict(X), dtype=np.float64) if got is None else got

    def n_features(self) -> int:
        return int(self.booster.num_features())


class _Proxy:
    """An XGBoost proxy DMatrix (the holder of an inplace prediction's input), freed with this object."""

    __slots__ = ("handle", "free")

    def __init__(self, create: Any, free: Any) -> None:
        self.handle = ctypes.c_void_p()
        self.free = None
        if create(ctypes.byref(self.handle)) == 0:
            self.free = free

    def __del__(self) -> None:
        if self.free is not None:
            self.free(self.handle)


class _DensePredict:
    """``Booster.inplace_predict`` of a C-contiguous float64 matrix: the same C function
    (``XGBoosterPredictFromDense``, XGBoost's C API) with the same configuration and input, so
    the same probabilities (tested), at a fifth of the cost for one row (about 30 us instead of
    150 for 110 features and 100 trees of depth 6). What it leaves out:

    - the Python wrapper's work per call: input type dispatch, JSON encoding of the same
      configuration, a class built per call to read the output (which also feeds the garbage
      collector);
    - the proxy DMatrix made per call when none is given, whose construction reads the cgroup CPU
      quota from /sys (two file opens and a regex per prediction): a proxy is kept per thread.

    ``of`` gives ``False`` when the library does not offer this (another XGBoost build): the model
    then calls ``inplace_predict``; so does an output that is not one value per row.
    """

    CONFIG = b'{"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, "missing": NaN, "strict_shape": false, "cache_id": 0}'
    """What ``inplace_predict`` sends by default (``predict_type="value"``, every tree, NaN missing)."""
    INPUT = b'{"data": [%d, false], "strides": null, "descr": [["", "<f8"]], "typestr": "<f8", "shape": [%d, %d], "version": 3}'
    """The array interface ``inplace_predict`` sends for a C-contiguous float64 matrix."""

    def __init__(self, booster: Any, lib: ctypes.CDLL, error: type[Exception]) -> None:
        self.booster = booster
        self.error = error
        self.run = lib.XGBoosterPredictFromDense
        self.run.restype = ctypes.c_int
        self.run.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        self.create, self.free = lib.XGProxyDMatrixCreate, lib.XGDMatrixFree
        self.last_error = lib.XGBGetLastError
        self.last_error.restype = ctypes.c_char_p
        self.local = threading.local()

    @classmethod
    def of(cls, booster: Any) -> _DensePredict | bool:
        try:
            import xgboost.core as core

            return cls(booster, ctypes.CDLL(core._LIB._name), core.XGBoostError)  # the library xgboost loaded: the same handle
        except Exception:
            return False

    def __call__(self, X: np.ndarray) -> np.ndarray | None:
        """Probabilities of ``X``'s rows, or None when only ``inplace_predict`` can tell."""
        n, m = X.shape
        if not n:
            return np.empty(0)
        X = np.ascontiguousarray(X, dtype=np.float64)
        local = self.local
        state = getattr(local, "state", None)
        if state is None:
            proxy = _Proxy(self.create, self.free)
            if proxy.free is None:
                return None
            shape, dims, out = ctypes.POINTER(ctypes.c_uint64)(), ctypes.c_uint64(), ctypes.POINTER(ctypes.c_float)()
            state = local.state = (proxy, shape, dims, out, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(out))
        proxy, shape, dims, out, shape_ref, dims_ref, out_ref = state
        handle = self.booster.handle
        if self.run(handle, self.INPUT % (X.ctypes.data, n, m), self.CONFIG, proxy.handle, shape_ref, dims_ref, out_ref):
            raise self.error(self.last_error().decode("utf-8", "replace"))
        if dims.value != 1 or shape[0] != n:
            return None
        if n == 1:
            return np.array([out[0]])
        got = np.empty(n, dtype=np.float32)
        ctypes.memmove(got.ctypes.data, out, 4 * n)
        return got.astype(np.float64)


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
