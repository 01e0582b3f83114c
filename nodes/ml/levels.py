"""Each metric a fold reports: which way is better, and its chance level (what a promotion baseline that declares no
floor compares against).

Kept apart from :mod:`nodes.ml.metrics` (numpy) so that the params models, which the lint loads, can check a baseline
declaration without importing any numeric library.
"""

from __future__ import annotations

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "balanced_accuracy": True,
    "auc": True,
    "log_loss": False,
    "brier": False,
    "sharpe": True,
    "hit_rate": True,
    "trades": True,
}
"""Every metric a fold reports, and which way is better (promotion compares with it)."""

CHANCE: dict[str, float] = {"balanced_accuracy": 0.5, "auc": 0.5, "hit_rate": 0.5, "sharpe": 0.0}
"""The score of predictions that know nothing, whatever the data: the floor of a baseline that declares none."""


def floor_of(metric: str, min_: float | None, max_: float | None) -> float | None:
    """The declared bound on the worse side of ``metric``: ``min`` when higher is better, ``max`` when lower is."""
    return min_ if HIGHER_IS_BETTER[metric] else max_


def bound_problem(metric: str, min_: float | None, max_: float | None) -> str | None:
    """Why a baseline on ``metric`` with these bounds is no baseline (None: it is one). A bound on the better side
    alone (``max`` of AUC, ``min`` of log loss) is a ceiling, not a floor."""
    if metric not in HIGHER_IS_BETTER:
        return f"unknown metric {metric!r}; known: {', '.join(HIGHER_IS_BETTER)}"
    if floor_of(metric, min_, max_) is None and metric not in CHANCE:
        side = "min" if HIGHER_IS_BETTER[metric] else "max"
        return (f"baseline on {metric} needs {side}: {metric} has no chance level that holds for every data set "
                f"(declare {side}, or compare {', '.join(CHANCE)}, which default to beating chance)")  # fmt: skip
    return None
