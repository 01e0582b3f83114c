"""Walk-forward metrics: how well a fold's predictions classify, and what trading them would have earned.

Classification metrics take the binary labels (1 up, 0 down) and the predicted probability of
up; they equal scikit-learn's (``accuracy_score`` and ``balanced_accuracy_score`` at 0.5,
``roc_auc_score``, ``log_loss``, ``brier_score_loss``; tested) without importing it. AUC is NaN
when a fold holds one class only.

Trading metrics take every test sample, dead-zone and timed-out ones included (scoring trades
only where the label turned out decisive would select on the future): each non-flat
prediction is one trade returning ``side * ret - cost``, ``cost`` the bar's mean spread as a
fraction of its price (crossing the spread once per round trip). ``sharpe`` is the mean over
the standard deviation of those returns, annualised by ``sqrt(periods_per_year)`` (one bet per
horizon, 252 trading days); ``hit_rate`` the share of trades that made money after costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from nodes.ml.levels import HIGHER_IS_BETTER  # noqa: F401  (re-exported: the metrics' directions)

TRADING_YEAR_MS = 252 * 86_400_000


def _binary(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError("labels and probabilities must be two 1-d arrays of one length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, p


def accuracy(y_true: np.ndarray, p: np.ndarray) -> float:
    y, p = _binary(y_true, p)
    return float(np.mean((p >= 0.5).astype(np.int64) == y)) if len(y) else math.nan


def balanced_accuracy(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    y, p = _binary(y_true, p)
    pred = (p >= 0.5).astype(np.int64)
    recalls = [float(np.mean(pred[y == c] == c)) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else math.nan


def auc(y_true: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class only."""
    y, p = _binary(y_true, p)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(len(p))
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, p: np.ndarray) -> float:
    y, p = _binary(y_true, p)
    if not len(y):
        return math.nan
    eps = np.finfo(p.dtype).eps
    q = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def brier(y_true: np.ndarray, p: np.ndarray) -> float:
    y, p = _binary(y_true, p)
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def classification(y_true: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": accuracy(y_true, p),
        "balanced_accuracy": balanced_accuracy(y_true, p),
        "auc": auc(y_true, p),
        "log_loss": log_loss(y_true, p),
        "brier": brier(y_true, p),
    }


def trading(side: np.ndarray, ret: np.ndarray, cost: np.ndarray, periods_per_year: float) -> dict[str, float]:
    """After-cost Sharpe, hit rate and number of trades of taking ``side`` (-1, 0, 1) on each sample."""
    side = np.asarray(side, dtype=np.float64)
    trades = side != 0
    n = int(trades.sum())
    if n == 0:
        return {"sharpe": 0.0, "hit_rate": math.nan, "trades": 0.0}
    r = side[trades] * np.asarray(ret, dtype=np.float64)[trades] - np.asarray(cost, dtype=np.float64)[trades]
    sd = float(np.std(r, ddof=1)) if n > 1 else 0.0
    sharpe = float(np.mean(r) / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0
    return {"sharpe": sharpe, "hit_rate": float(np.mean(r > 0)), "trades": float(n)}


def periods_per_year(horizon_ms: int) -> float:
    return TRADING_YEAR_MS / max(horizon_ms, 1)


def summary(folds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per metric, the mean over folds that define it (NaN where none does)."""
    out: dict[str, float] = {}
    for name in HIGHER_IS_BETTER:
        values = [f[name] for f in folds if name in f and not math.isnan(f[name])]
        if any(name in f for f in folds):
            out[name] = float(np.mean(values)) if values else math.nan
    return out


def finite_or_none(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """For JSON (cards, events): NaN becomes None."""
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in metrics.items()}
