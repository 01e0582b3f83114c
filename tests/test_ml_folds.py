"""Purged walk-forward folds: no training label window touches a test fold or its embargo, whatever the samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.ml.folds import FoldError, purged_walk_forward

MINUTE = 60_000


@st.composite
def samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int, np.ndarray]:
    """Several symbols on a shared minute grid with gaps; label windows of varying length (early barrier hits)."""
    n_times = draw(st.integers(8, 120))
    steps = draw(st.lists(st.integers(1, 30), min_size=n_times, max_size=n_times))
    times = 1_793_577_600_000 + np.cumsum(np.array(steps, dtype=np.int64)) * MINUTE
    symbols = draw(st.integers(1, 3))
    start = np.repeat(times, symbols)
    horizon = draw(st.integers(1, 60)) * MINUTE
    early = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=len(start), max_size=len(start))))
    end = start + MINUTE + (early * horizon).astype(np.int64)
    trainable = np.array(draw(st.lists(st.booleans(), min_size=len(start), max_size=len(start))))
    n_folds = draw(st.integers(1, 6))
    embargo = draw(st.integers(0, 90)) * MINUTE
    return start, end, n_folds, embargo, trainable


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples())
def test_no_training_label_window_overlaps_a_test_fold_or_its_embargo(case: tuple) -> None:
    start, end, n_folds, embargo, trainable = case
    try:
        folds = purged_walk_forward(start, end, n_folds, embargo, trainable=trainable)
    except FoldError as exc:
        assert "fold" in str(exc) or "distinct times" in str(exc)
        return
    assert [f.index for f in folds] == list(range(1, n_folds + 1))
    tested: set[int] = set()
    for fold in folds:
        assert len(fold.test) and len(fold.train)
        assert trainable[fold.train].all()
        a, b = fold.test_start, fold.test_end
        assert a == start[fold.test].min() and b == end[fold.test].max()
        forbidden_lo, forbidden_hi = a - embargo, b + embargo
        # closed intervals: touching the forbidden zone counts as overlap
        assert np.all((end[fold.train] < forbidden_lo) | (start[fold.train] > forbidden_hi))
        assert start[fold.train].max() < a  # walk-forward: only the past trains
        assert not tested & set(fold.test.tolist())
        tested |= set(fold.test.tolist())
        # a fold never splits a time: every sample at a tested time is tested
        assert set(np.flatnonzero(np.isin(start, start[fold.test])).tolist()) == set(fold.test.tolist())
    later = [f.test_start for f in folds]
    assert later == sorted(later)


def test_a_training_label_reaching_into_the_test_fold_is_purged() -> None:
    start = np.arange(10, dtype=np.int64) * MINUTE
    end = start + 3 * MINUTE  # each label ends three minutes after its bar
    (fold,) = purged_walk_forward(start, end, 1, 0)
    assert fold.test.tolist() == [5, 6, 7, 8, 9]
    assert fold.train.tolist() == [0, 1]  # samples 2-4 have labels ending at or after minute 5
    with pytest.raises(FoldError, match="fold 1 trains on 0"):  # the embargo pushes both out
        purged_walk_forward(start, end, 1, 2 * MINUTE)
    (fold,) = purged_walk_forward(start, end, 1, MINUTE)
    assert fold.train.tolist() == [0]


def test_too_few_samples_for_the_folds_is_a_clear_error() -> None:
    start = np.arange(40, dtype=np.int64) * MINUTE
    with pytest.raises(FoldError, match=r"40 samples are too few for 4 folds: fold 1 trains on \d+ \(needs 100"):
        purged_walk_forward(start, start + MINUTE, 4, 0, min_train=100)
    with pytest.raises(FoldError, match="cannot make 5 walk-forward folds"):
        purged_walk_forward(start[:4], start[:4] + MINUTE, 5, 0)


def test_rolling_window_keeps_the_latest_training_samples() -> None:
    start = np.arange(100, dtype=np.int64) * MINUTE
    folds = purged_walk_forward(start, start + MINUTE, 3, 0, max_train=10)
    for fold in folds:
        assert len(fold.train) == 10
        assert fold.train.max() == np.flatnonzero(start + MINUTE < fold.test_start).max()
