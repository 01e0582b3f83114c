"""A trained model, as training stores it and inference loads it.

A model is a predictor over feature vectors in a fixed column order, plus a :class:`ModelCard`
that says what it was trained on. Training writes ``to_bytes()`` into the artifact store
(``ctx.artifacts.put(name, data, kind=card.kind, metadata=card.to_metadata())``); inference
loads the promoted version (``<name>@promoted``) back with :func:`load_model`, and refuses it
when the card's ``feature_set`` is not the version of the features it receives.

Every kind (the tree libraries, the rule strategies, the RL agents) implements :class:`Model`
in its own module, imported only when that kind is loaded, so inference of an XGBoost model
never imports torch. :data:`KINDS` names them.
"""

from __future__ import annotations

import abc
import functools
import importlib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from framework.errors import FxflowError

SIDES = ("sell", "flat", "buy")
"""A prediction's side as a signal names it; ``side`` arrays hold -1, 0, 1 (index + 1 here)."""

KINDS: dict[str, str] = {
    "xgboost": "nodes.ml.trees:XGBoostModel",
    "lightgbm": "nodes.ml.trees:LightGBMModel",
    "catboost": "nodes.ml.trees:CatBoostModel",
    "sma_cross": "nodes.ml.rules:SmaCrossModel",
    "ppo": "nodes.ml.agents:AgentModel",
    "a2c": "nodes.ml.agents:AgentModel",
    "sac": "nodes.ml.agents:AgentModel",
}
"""Model kind → ``module:class`` implementing :class:`Model` (imported on first use)."""


class ModelError(FxflowError):
    """A model cannot be loaded or used (unknown kind, corrupt bytes, wrong card)."""


class FeatureSetMismatch(ModelError):
    """The model was trained on another version of the feature set than the one it is given."""


class FeatureShapeError(ModelError, ValueError):
    """A feature vector lacks a feature the model needs, or holds a value that is not a finite number."""


@dataclass(frozen=True)
class ModelCard:
    """What a model was trained on; stored as the artifact's metadata (JSON)."""

    kind: str
    feature_set: str
    """Version of the feature set the training rows were computed with (``features.v1``'s ``feature_set``)."""
    features: tuple[str, ...]
    """The input columns, in the order ``predict`` takes them."""
    timeframe: str
    symbols: tuple[str, ...]
    horizon: str | None = None
    """How far ahead a prediction holds: the signal's time-to-live (``None``: one bar of ``timeframe``)."""
    train_start_ms: int = 0
    train_end_ms: int = 0
    seed: int = 0
    run_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    uses_position: bool = False
    """True for agents whose observation also holds the current position (RL)."""

    def to_metadata(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["features"] = list(self.features)
        doc["symbols"] = list(self.symbols)
        return doc

    @classmethod
    def from_metadata(cls, doc: Mapping[str, Any]) -> ModelCard:
        known = {f for f in cls.__dataclass_fields__}
        missing = [f for f in ("kind", "feature_set", "features", "timeframe", "symbols") if f not in doc]
        if missing:
            raise ModelError(f"model card lacks {', '.join(missing)}")
        values = {k: v for k, v in doc.items() if k in known}
        values["features"] = tuple(values["features"])
        values["symbols"] = tuple(values["symbols"])
        return cls(**values)


@dataclass(frozen=True)
class Prediction:
    """One row per input row: ``side`` in {-1, 0, 1}, ``confidence`` in [0, 1]."""

    side: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.side)


class Model(abc.ABC):
    """A predictor over rows of ``card.features``; deterministic: the same rows give the same prediction."""

    kind: ClassVar[str]

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @abc.abstractmethod
    def predict(self, X: np.ndarray, position: np.ndarray | None = None) -> Prediction:
        """Predict for ``X`` (n rows × ``len(card.features)``, float64, finite). ``position``
        (n values in [-1, 1]) is the current position, for models with ``card.uses_position``."""

    @abc.abstractmethod
    def to_bytes(self) -> bytes:
        """The model as bytes for the artifact store (the library's own format, never pickle of ours)."""

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls, data: bytes, card: ModelCard) -> Model:
        """Rebuild what :meth:`to_bytes` wrote; raise :class:`ModelError` on bytes it cannot read."""


def model_class(kind: str) -> type[Model]:
    target = KINDS.get(kind)
    if target is None:
        raise ModelError(f"unknown model kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ModelError(f"model kind {kind!r} needs {exc.name or module}: pip install -e '.[ml]'") from None
    return cls


def load_model(data: bytes, card: ModelCard) -> Model:
    """The model ``data`` holds, of ``card.kind``."""
    return model_class(card.kind).from_bytes(data, card)


def check_feature_set(card: ModelCard, feature_set: str) -> None:
    if card.feature_set != feature_set:
        raise FeatureSetMismatch(
            f"model {card.run_id or card.kind!r} was trained on feature set {card.feature_set!r}, "
            f"the features are {feature_set!r}"
        )


_NOT_NUMBERS = frozenset({str, bytes, bool})


def feature_matrix(rows: Sequence[Mapping[str, Any]], features: Sequence[str]) -> np.ndarray:
    """Rows of ``features.v1`` ``values`` as an n × len(features) float64 matrix in the model's order.

    Raises :class:`FeatureShapeError` naming the first missing feature or the first value that
    is null, NaN or infinite: a model never sees one.
    """
    X = np.empty((len(rows), len(features)), dtype=np.float64)
    take = _getter(tuple(features))
    for i, values in enumerate(rows):
        try:
            row = take(values)
        except KeyError as exc:
            raise FeatureShapeError(f"feature vector lacks {exc.args[0]!r} ({len(values)} values, the model takes {len(features)})") from None
        try:
            if _NOT_NUMBERS.isdisjoint(map(type, row)):  # numpy would take "1.5" and True as numbers
                X[i] = row
                continue
        except (TypeError, ValueError):  # a list, a dict, ...
            pass
        bad = next(f for f, v in zip(features, row) if v is not None and (type(v) in _NOT_NUMBERS or not isinstance(v, (int, float))))
        raise FeatureShapeError(f"feature {bad!r} is {values[bad]!r}, not a number") from None
    if not np.isfinite(X).all():
        i, j = map(int, np.argwhere(~np.isfinite(X))[0])
        raise FeatureShapeError(f"feature {features[j]!r} is {rows[i][features[j]]!r} in row {i}: not a finite number")
    return X


@functools.lru_cache(maxsize=256)
def _getter(features: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function taking ``features``' values of a mapping, in order, as a tuple (KeyError names the first missing)."""
    if len(features) == 1:
        name = features[0]
        return lambda values: (values[name],)
    return operator.itemgetter(*features)
