"""The declared feature set: its names, its version hash, and the one-line errors of a set that cannot be computed."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from framework.testing import load
from nodes.feature_engineering.spec import FeatureEngineeringParams
from nodes.features.featureset import FeatureSetError, FeatureSetParams, Groups, ResolvedFeatureSet
from tests.test_features_support import TIMEFRAMES, instruments, resolved

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def test_the_declared_core_set_has_about_110_scale_free_features_per_timeframe(tmp_path) -> None:
    loaded = load(tmp_path, profile="live")
    params = FeatureEngineeringParams.model_validate(loaded.topology.services["feature-engineering-service"].params)
    fs = ResolvedFeatureSet(params.feature_set, loaded.topology.instruments, loaded.topology.timeframes)
    assert params.feature_set == FeatureSetParams(), "services.yaml spells out the defaults of the core set"
    counts = {tf: len(fs.names(tf)) for tf in loaded.topology.timeframes}
    assert all(100 <= n <= 125 for n in counts.values()), counts
    assert counts["1m"] == 119 and counts["1d"] == 107  # 1d has no higher timeframe in the topology
    for tf in loaded.topology.timeframes:
        names = fs.names(tf)
        assert len(set(names)) == len(names) and all(NAME.match(n) for n in names)
        assert not any(n in ("close", "open", "high", "low", "sma_20", "ema_12") for n in names)  # no raw prices
    assert [m for m, _ in fs.basket] == ["AUDUSD", "EURUSD", "GBPUSD", "NZDUSD", "USDCAD", "USDCHF", "USDJPY"]
    assert re.fullmatch(r"core-[0-9a-f]{8}", fs.version)


@pytest.mark.parametrize(
    "change",
    [
        {"history": 513},
        {"block": 512},
        {"groups": {**Groups.core().model_dump(), "trend": {"sma": [10, 20, 50, 100, 201], "crosses": [[20, 50]]}}},
        {"groups": {**Groups.core().model_dump(), "macro": {"series": {"DFF": {"lag": "6d"}}, "spreads": []}}},
        {"groups": {**Groups.core().model_dump(), "events": None}},
        {"drop": ["bop"]},
        {"name": "other"},
    ],
)
def test_the_version_changes_when_any_parameter_changes(change: dict) -> None:
    base = resolved(FeatureSetParams())
    other = resolved(FeatureSetParams.model_validate({**FeatureSetParams().model_dump(), **change}))
    assert other.version != base.version
    assert resolved(FeatureSetParams()).version == base.version  # and only then


def test_the_version_follows_the_resolved_basket_and_context() -> None:
    base = resolved(FeatureSetParams(), symbols=["EURUSD", "USDJPY", "XAUUSD"])
    assert resolved(FeatureSetParams(), symbols=["EURUSD", "GBPUSD", "XAUUSD"]).version != base.version
    assert ResolvedFeatureSet(FeatureSetParams(), instruments(["EURUSD", "USDJPY", "XAUUSD"]), TIMEFRAMES).version == base.version


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"groups": {"tend": {}}}, "unknown feature group 'tend' (did you mean trend?)"),
        ({"drop": ["rsi_99"]}, "drop: unknown feature 'rsi_99'"),
        ({"groups": {"trend": {}, "context": {"features": ["rsi_14"]}}}, "groups.context.features: unknown feature 'rsi_14'"),
        ({"groups": {"trend": {"sma": [0]}}}, "periods must be positive integers"),
        ({"history": 10}, "history 10 is shorter than the longest warm-up of the set"),
        ({"groups": {"session": {"sessions": {"london": "08:00-17:00 Europe/Londn"}}}}, "unknown time zone 'Europe/Londn'"),
        ({"groups": {"macro": {"series": {"DFF": {"lag": "soon"}}}}}, "DFF"),
    ],
)
def test_a_set_that_cannot_be_computed_is_refused_when_the_topology_loads(doc: dict, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        FeatureEngineeringParams.model_validate({"feature_set": doc})
    assert message in str(caught.value)


def test_resolving_against_the_topology_names_the_field() -> None:
    with pytest.raises(FeatureSetError, match=r"groups.crosspair.gold: 'XAGUSD' is not an instrument of the topology"):
        resolved(FeatureSetParams.model_validate({"groups": {"crosspair": {"gold": "XAGUSD"}}}))
    with pytest.raises(FeatureSetError, match=r"groups.context.timeframes.1m: 15m is not one of the service's timeframes"):
        resolved(FeatureSetParams(), timeframes=["1m", "1h"])
    with pytest.raises(FeatureSetError, match=r"groups.crosspair.basket: 'EURUSX' is not an instrument"):
        resolved(FeatureSetParams.model_validate({"groups": {"crosspair": {"basket": ["EURUSX"]}}}))
