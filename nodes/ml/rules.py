"""Rule models: a strategy without ML, declared as one YAML block of the inference service.

A rule is a :class:`~nodes.ml.model.Model` like a trained one (same ``predict``, same card,
same signals), but its parameters are the whole model: it needs no training, its card is built
from the topology (:func:`rule_card`) and ``to_bytes`` is its params as JSON, so a rule can also
be stored and promoted as an artifact of kind ``sma_cross``.

``sma_cross`` reads two feature columns its params name:

- ``form: distance`` (default): the distances of the close to a fast and a slow SMA, in the
  same units (``close / sma - 1`` or ``(close - sma) / close``, anything decreasing in the SMA
  for a given close). The fast SMA is above the slow one exactly when ``fast < slow``, so the
  gap is ``slow - fast``;
- ``form: level``: the two SMA values themselves; the gap is ``fast - slow``.

Gap above ``band``: buy; below ``-band``: sell (flat when ``long_only``); otherwise flat. The
side is the state of the crossover (long while the fast SMA is above), so each bar's signal is
the position the strategy wants; a cross is where the side changes. ``confidence`` is
``min(1, |gap| / scale)`` with a ``scale``, else 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from nodes.ml.model import Model, ModelCard, ModelError, Prediction
from nodes.ml.rule_params import ANY_FEATURE_SET, RULES, SmaCrossParams, rule_params

__all__ = ["ANY_FEATURE_SET", "RULES", "SmaCrossModel", "SmaCrossParams", "rule_card", "rule_params"]


def rule_card(
    kind: str,
    params: dict[str, Any],
    *,
    timeframe: str,
    symbols: Sequence[str] = (),
    feature_set: str | None = None,
    horizon: str | None = None,
) -> ModelCard:
    """The card of a rule declared in the topology (its features are the columns its params name)."""
    checked = rule_params(kind, params)
    assert isinstance(checked, SmaCrossParams)  # the one rule kind so far: a new kind names its columns here
    return ModelCard(
        kind=kind,
        feature_set=feature_set or ANY_FEATURE_SET,
        features=(checked.fast, checked.slow),
        timeframe=timeframe,
        symbols=tuple(symbols),
        horizon=horizon,
        params=checked.model_dump(),
    )


class SmaCrossModel(Model):
    kind = "sma_cross"

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        try:
            self.rule = SmaCrossParams.model_validate(card.params)
        except ValidationError as exc:
            raise ModelError(f"sma_cross params: {exc.errors()[0]['msg']} ({exc.errors()[0]['loc']})") from None
        if tuple(card.features) != (self.rule.fast, self.rule.slow):
            raise ModelError(f"sma_cross card features {list(card.features)} are not [fast, slow] = [{self.rule.fast!r}, {self.rule.slow!r}]")
        self._sign = -1.0 if self.rule.form == "distance" else 1.0

    def predict(self, X: np.ndarray, position: np.ndarray | None = None) -> Prediction:
        rule = self.rule
        gap = self._sign * (X[:, 0] - X[:, 1])
        side = np.where(gap > rule.band, 1, np.where(gap < -rule.band, -1, 0)).astype(np.int8)
        if rule.long_only:
            side[side < 0] = 0
        if rule.scale is None:
            confidence = np.ones(len(X))
        else:
            confidence = np.minimum(1.0, np.abs(gap) / rule.scale)
        return Prediction(side, confidence)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.rule.model_dump(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes, card: ModelCard) -> SmaCrossModel:
        try:
            params = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ModelError(f"sma_cross bytes are not JSON params: {exc}") from None
        if not isinstance(params, dict):
            raise ModelError(f"sma_cross bytes hold {type(params).__name__}, not a params object")
        features = [params.get("fast"), params.get("slow")]
        return cls(ModelCard.from_metadata({**card.to_metadata(), "features": features, "params": params}))
