"""Fold metrics equal scikit-learn's on the same inputs; trading metrics on a hand-made case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from nodes.ml import metrics as M


@st.composite
def scored(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 200))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    # coarse probabilities make ties (AUC's hard case) and exact 0/1 (log loss clipping) common
    p = np.array(draw(st.lists(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0.0, 1.0)), min_size=n, max_size=n)))
    return y, p


@settings(max_examples=120, deadline=None)
@given(scored())
def test_classification_metrics_equal_scikit_learn(case: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = case
    pred = (p >= 0.5).astype(int)
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    if len(np.unique(y)) == 2:
        assert M.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
        assert M.auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
        assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-9, abs=1e-12)
    else:
        assert math.isnan(M.auc(y, p))  # scikit-learn refuses: one class only
    assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)


def test_balanced_accuracy_with_one_class_equals_scikit_learn_ignoring_absent_classes() -> None:
    y = np.array([1, 1, 1, 1])
    p = np.array([0.9, 0.2, 0.7, 0.6])
    with pytest.warns(UserWarning):
        expected = skm.balanced_accuracy_score(y, (p >= 0.5).astype(int))
    assert M.balanced_accuracy(y, p) == pytest.approx(expected)


def test_trading_returns_after_costs_and_hit_rate() -> None:
    side = np.array([1, -1, 0, 1, -1])
    ret = np.array([0.002, -0.001, 0.05, -0.001, 0.0005])
    cost = np.full(5, 0.0002)
    out = M.trading(side, ret, cost, periods_per_year=100.0)
    trades = np.array([0.002 - 0.0002, 0.001 - 0.0002, -0.001 - 0.0002, -0.0005 - 0.0002])  # the flat one does not trade
    assert out["trades"] == 4
    assert out["hit_rate"] == pytest.approx(0.5)
    assert out["sharpe"] == pytest.approx(trades.mean() / trades.std(ddof=1) * 10.0)
    nothing = M.trading(np.zeros(3), np.ones(3), np.zeros(3), 100.0)
    assert nothing["trades"] == 0 and nothing["sharpe"] == 0.0 and math.isnan(nothing["hit_rate"])


def test_summary_is_the_mean_over_folds_that_define_a_metric() -> None:
    folds = [{"auc": 0.6, "sharpe": 1.0}, {"auc": math.nan, "sharpe": 3.0}]
    assert M.summary(folds) == {"auc": 0.6, "sharpe": 2.0}
    assert M.finite_or_none({"auc": math.nan, "brier": 0.2}) == {"auc": None, "brier": 0.2}
