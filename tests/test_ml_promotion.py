"""The promotion rule, both ways, and the record of each decision."""

from __future__ import annotations

import math

import pytest

from nodes.ml.promotion import Baseline, decide, log_line, record


def test_a_model_below_the_declared_minimum_is_rejected_and_above_it_promoted() -> None:
    rule = Baseline(metric="balanced_accuracy", min=0.52)
    low = decide({"balanced_accuracy": 0.515}, rule)
    assert not low.promote and low.reason == "balanced_accuracy 0.5150 < 0.52 (baseline min)"
    high = decide({"balanced_accuracy": 0.53}, rule)
    assert high.promote and high.reason == "balanced_accuracy 0.5300 >= 0.52"
    assert decide({"balanced_accuracy": 0.52}, rule).promote  # the minimum itself passes


def test_beating_the_promoted_model_follows_the_metric_direction() -> None:
    rule = Baseline(metric="balanced_accuracy", min=0.5, beat_promoted=True)
    assert decide({"balanced_accuracy": 0.55}, rule, None).reason.endswith("no model is promoted yet")
    worse = decide({"balanced_accuracy": 0.55}, rule, {"balanced_accuracy": 0.56}, "m:2")
    assert not worse.promote and worse.reason == "balanced_accuracy 0.5500 does not beat the promoted m:2 (0.5600)"
    tie = decide({"balanced_accuracy": 0.56}, rule, {"balanced_accuracy": 0.56}, "m:2")
    assert not tie.promote
    better = decide({"balanced_accuracy": 0.57}, rule, {"balanced_accuracy": 0.56}, "m:2")
    assert better.promote and "beats the promoted m:2 (0.5600)" in better.reason
    loss = Baseline(metric="log_loss", max=0.7, beat_promoted=True)
    assert decide({"log_loss": 0.65}, loss, {"log_loss": 0.66}, "m:1").promote  # lower is better
    assert not decide({"log_loss": 0.67}, loss, {"log_loss": 0.66}, "m:1").promote
    assert not decide({"log_loss": 0.71}, loss).promote
    margin = Baseline(metric="sharpe", beat_promoted=True, margin=0.5)
    assert not decide({"sharpe": 1.4}, margin, {"sharpe": 1.0}, "m:1").promote
    assert decide({"sharpe": 1.6}, margin, {"sharpe": 1.0}, "m:1").promote


def test_an_undefined_metric_is_never_promoted_and_an_incomparable_incumbent_does_not_block() -> None:
    rule = Baseline(metric="auc", min=0.5, beat_promoted=True)
    assert not decide({"auc": math.nan}, rule).promote
    assert not decide({"auc": None}, rule).promote
    assert not decide({}, rule).promote
    passing = decide({"auc": 0.6}, rule, {"auc": None}, "m:1")
    assert passing.promote and "the promoted m:1 has no auc to compare" in passing.reason
    with pytest.raises(ValueError, match="unknown metric 'precision'"):
        Baseline(metric="precision")


def test_each_decision_is_one_row_and_one_log_line() -> None:
    decision = decide({"balanced_accuracy": 0.49}, Baseline(min=0.52))
    row = record(decision, name="signal-1m", version=3, sha256="ab" * 32, run_id="signal-1m-x", ts=123, by="svc")
    assert row == {
        "ts": 123, "name": "signal-1m", "version": 3, "sha256": "ab" * 32, "run_id": "signal-1m-x", "decision": "rejected",
        "reason": "balanced_accuracy 0.4900 < 0.52 (baseline min)", "metric": "balanced_accuracy", "value": 0.49, "by": "svc",
    }  # fmt: skip
    assert log_line(decision, "signal-1m:3") == "model signal-1m:3 rejected: balanced_accuracy 0.4900 < 0.52 (baseline min)"


def test_with_no_bound_declared_a_model_must_beat_chance() -> None:
    rule = Baseline(metric="balanced_accuracy")
    coin = decide({"balanced_accuracy": 0.5}, rule)
    assert not coin.promote and coin.reason == "balanced_accuracy 0.5000 does not beat chance (0.5)"
    assert decide({"balanced_accuracy": 0.5003}, rule).reason == "balanced_accuracy 0.5003 > 0.5 (chance)"
    losing = decide({"sharpe": -0.2}, Baseline(metric="sharpe"))
    assert not losing.promote and losing.reason == "sharpe -0.2000 does not beat chance (0)"


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "brier"])
def test_a_metric_without_a_chance_level_needs_a_declared_bound(metric: str) -> None:
    with pytest.raises(ValueError, match=f"baseline on {metric} needs {'min' if metric == 'accuracy' else 'max'}:"):
        Baseline(metric=metric)
    assert Baseline(metric=metric, max=0.7) if metric != "accuracy" else Baseline(metric=metric, min=0.55)


def test_the_declaration_without_a_bound_is_a_lint_error_at_its_field() -> None:
    from pydantic import ValidationError

    from nodes.supervised_training.spec import BaselineParams

    with pytest.raises(ValidationError, match="baseline on log_loss needs max:"):
        BaselineParams.model_validate({"metric": "log_loss", "beat_promoted": True})
    assert BaselineParams.model_validate({"metric": "auc"}).min is None


@pytest.mark.parametrize(("baseline", "metrics"), [
    (Baseline("auc", max=0.95), {"auc": 0.30}),
    (Baseline("sharpe", max=4.0), {"sharpe": -2.0}),
    (Baseline("balanced_accuracy", max=0.9), {"balanced_accuracy": 0.35}),
])  # fmt: skip
def test_a_model_worse_than_chance_is_not_promoted_on_an_upper_bound_alone(baseline: Baseline, metrics: dict[str, float]) -> None:
    """A bound on the better side (a guard against leakage, say) is a ceiling: the floor is still chance."""
    assert not decide(metrics, baseline).promote


def test_a_lower_is_better_metric_with_only_a_min_is_no_baseline() -> None:
    with pytest.raises(ValueError):
        Baseline("log_loss", min=0.05)  # any log loss above 0.05, however bad, would pass
