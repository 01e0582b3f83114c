"""The rule models (nodes/ml/rules.py): sma_cross against a pandas reference, its bytes, its params."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from nodes.ml.model import KINDS, ModelCard, ModelError, load_model, model_class
from nodes.ml.rules import ANY_FEATURE_SET, SmaCrossModel, SmaCrossParams, rule_card


def random_walk(n: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(1.1 * np.exp(np.cumsum(rng.normal(0, 0.002, n))))


def reference(close: pd.Series, fast: int, slow: int, band: float = 0.0, long_only: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """The distances of the close to its fast and slow SMA, and the crossover state pandas computes from the SMAs."""
    sma_fast, sma_slow = close.rolling(fast).mean(), close.rolling(slow).mean()
    frame = pd.DataFrame({"dist_fast": close / sma_fast - 1, "dist_slow": close / sma_slow - 1,
                          "sma_fast": sma_fast, "sma_slow": sma_slow}).iloc[slow - 1 :]  # fmt: skip
    price = close.iloc[slow - 1 :]
    gap = price / frame["sma_slow"] - price / frame["sma_fast"]  # band is in the distances' units; sign(gap) = sign(fast - slow)
    assert (np.sign(gap) == np.sign(frame["sma_fast"] - frame["sma_slow"])).all()
    side = np.where(gap > band, 1, np.where(gap < -band, -1, 0))
    if long_only:
        side = np.maximum(side, 0)
    return frame, side


def card(**params: object) -> ModelCard:
    return rule_card("sma_cross", {"fast": "dist_fast", "slow": "dist_slow", **params}, timeframe="1h")


def test_sma_cross_signals_equal_a_pandas_reference_on_a_random_walk() -> None:
    frame, expected = reference(random_walk(3_000, seed=11), fast=10, slow=50)
    model = SmaCrossModel(card())
    prediction = model.predict(frame[["dist_fast", "dist_slow"]].to_numpy())
    assert prediction.side.tolist() == expected.tolist()
    assert {-1, 1} <= set(expected.tolist())  # the walk crosses both ways
    assert int((np.diff(expected) != 0).sum()) > 10  # and often
    assert (prediction.confidence == 1.0).all()


@pytest.mark.parametrize("band", [0.0005, 0.002])
def test_sma_cross_band_and_long_only_follow_the_reference(band: float) -> None:
    frame, expected = reference(random_walk(2_000, seed=5), fast=5, slow=30, band=band, long_only=True)
    model = SmaCrossModel(card(band=band, long_only=True))
    side = model.predict(frame[["dist_fast", "dist_slow"]].to_numpy()).side
    assert side.tolist() == expected.tolist()
    assert 0 in expected and -1 not in expected


def test_sma_cross_on_levels_and_its_confidence_scale() -> None:
    frame, expected = reference(random_walk(1_000, seed=3), fast=8, slow=21)
    model = SmaCrossModel(rule_card("sma_cross", {"fast": "sma_fast", "slow": "sma_slow", "form": "level", "scale": 0.01}, timeframe="4h"))
    prediction = model.predict(frame[["sma_fast", "sma_slow"]].to_numpy())
    assert prediction.side.tolist() == expected.tolist()
    gap = np.abs(frame["sma_fast"] - frame["sma_slow"]).to_numpy()
    assert np.allclose(prediction.confidence, np.minimum(1.0, gap / 0.01))
    assert ((prediction.confidence >= 0) & (prediction.confidence <= 1)).all()


def test_a_rule_card_is_built_from_the_topology_and_its_bytes_are_its_params() -> None:
    c = rule_card("sma_cross", {"fast": "a", "slow": "b", "band": 0.1}, timeframe="1h", symbols=["EURUSD"])
    assert c.kind == "sma_cross" and c.features == ("a", "b") and c.feature_set == ANY_FEATURE_SET
    assert c.symbols == ("EURUSD",) and c.timeframe == "1h"
    model = SmaCrossModel(c)
    data = model.to_bytes()
    assert data == b'{"band":0.1,"fast":"a","form":"distance","long_only":false,"scale":null,"slow":"b"}'
    assert KINDS["sma_cross"] == "nodes.ml.rules:SmaCrossModel" and model_class("sma_cross") is SmaCrossModel
    again = load_model(data, ModelCard.from_metadata(c.to_metadata()))  # as inference loads a promoted artifact
    X = np.array([[0.0, 0.5], [0.5, 0.0], [0.0, 0.05]])
    assert again.predict(X).side.tolist() == model.predict(X).side.tolist() == [1, -1, 0]


def test_bad_rule_bytes_and_params_are_one_line_errors() -> None:
    with pytest.raises(ModelError, match="not JSON params"):
        SmaCrossModel.from_bytes(b"\x00garbage", card())
    with pytest.raises(ModelError, match="sma_cross params"):
        SmaCrossModel.from_bytes(b'{"fast": "a"}', card())
    with pytest.raises(ValidationError, match="same feature"):
        SmaCrossParams(fast="a", slow="a")
    with pytest.raises(ValidationError, match="fats"):
        SmaCrossParams.model_validate({"fats": "a", "slow": "b"})
    with pytest.raises(ValidationError, match="band"):
        SmaCrossParams(fast="a", slow="b", band=-1)
